// The admin page's script: live models and logs over Server-Sent Events, buttons that post
// without leaving the page. Plain JavaScript, no framework; the pages read without it.
"use strict";

(function () {
  // The models section, replaced whole by what the server renders at each change.
  function live(container) {
    const source = new EventSource(container.dataset.live);
    source.addEventListener("models", (e) => {
      container.innerHTML = e.data;
      wire(container);
    });
    source.onerror = () => container.classList.add("stale");
    source.onopen = () => container.classList.remove("stale");
  }

  // A model's log lines: the tail, then each line as it is written.
  function follow(pre) {
    const most = 2000;
    const source = new EventSource(pre.dataset.follow);
    const atBottom = () => pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const show = (text, replace) => {
      const stick = atBottom();
      if (replace) pre.textContent = "";
      pre.append(document.createTextNode(text + "\n"));
      while (pre.childNodes.length > most) pre.removeChild(pre.firstChild);
      if (stick) pre.scrollTop = pre.scrollHeight;
    };
    source.addEventListener("tail", (e) => show(e.data, true));
    source.addEventListener("line", (e) => show(e.data, false));
    const state = document.getElementById("logs-state");
    source.onopen = () => state && (state.textContent = "Live: new lines appear as the engine writes them.");
    source.onerror = () => state && (state.textContent = "Reconnecting to the log stream…");
  }

  function say(text, ok) {
    const said = document.getElementById("said");
    if (!said) return;
    said.hidden = false;
    said.textContent = text;
    said.classList.toggle("good", ok);
    said.classList.toggle("bad", !ok);
  }

  // Forms marked data-async post through fetch; the event stream shows what changed.
  function wire(root) {
    root.querySelectorAll("form[data-async]").forEach((form) => {
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const button = form.querySelector("button");
        if (button) button.disabled = true;
        const label = (button && button.textContent) || "Done";
        try {
          const answer = await fetch(form.action, {
            method: "POST",
            headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
            body: new URLSearchParams(new FormData(form)),
            credentials: "same-origin",
          });
          const body = await answer.json().catch(() => ({}));
          if (answer.ok) say(label + ": " + (body.state || "done") + ".", true);
          else say((body.error && body.error.message) || answer.statusText, false);
        } catch (err) {
          say(String(err), false);
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("pre[data-follow]").forEach(follow);
    document.querySelectorAll("form[data-confirm]").forEach((form) => {
      form.addEventListener("submit", (e) => {
        if (!window.confirm(form.dataset.confirm)) e.preventDefault();
      });
    });
    wire(document);
  });
})();
