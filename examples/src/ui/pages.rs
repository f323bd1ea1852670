//! The admin page's HTML (maud: every value escaped unless marked otherwise, and nothing is).

use std::collections::{BTreeMap, HashMap};

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::chart::{self, Part, Series};
use super::{Range, segment};

/// Which part of the page a view belongs to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nav {
    Models,
    Usage,
    Gpus,
    Calculator,
    Keys,
    None,
}

fn layout(title: &str, nav: Nav, csrf: Option<&str>, body: &Markup) -> Markup {
    let link = |href: &str, name: &str, this: Nav| {
        html! { a href=(href) aria-current=[(nav == this).then_some("page")] { (name) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cortex" }
                link rel="stylesheet" href="/ui/static/app.css";
                script src="/ui/static/app.js" defer {}
            }
            body data-csrf=[csrf] {
                header.top {
                    a.brand href="/ui/models" { "cortex" }
                    @if csrf.is_some() {
                        nav {
                            (link("/ui/models", "Models", Nav::Models))
                            (link("/ui/usage", "Usage", Nav::Usage))
                            (link("/ui/gpus", "GPUs", Nav::Gpus))
                            (link("/ui/calculator", "Calculator", Nav::Calculator))
                            (link("/ui/keys", "Keys", Nav::Keys))
                        }
                        form.logout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=[csrf];
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A short page that says one thing.
pub(crate) fn message(title: &str, text: &str) -> Markup {
    layout(
        title,
        Nav::None,
        None,
        &html! { h1 { (title) } p { (text) } p { a href="/ui/models" { "Back to the admin page" } } },
    )
}

/// The page when the server has no admin key.
pub(crate) fn admin_off() -> Markup {
    message(
        "The admin page is off",
        "Set server.admin_key in the configuration (cortex keys new --admin) to use it.",
    )
}

/// The login form; `error` after a wrong key.
pub(crate) fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        Nav::None,
        None,
        &html! {
            h1 { "Log in" }
            @if let Some(e) = error { p.said.bad role="alert" { (e) } }
            form.login method="post" action="/ui/login" {
                label for="key" { "Admin key" }
                input #key type="password" name="key" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
            p.hint { "The key whose digest is server.admin_key. It is kept by the server for a 12-hour session, never by the page." }
        },
    )
}

/// What a button did, for a browser without the page's script.
pub(crate) fn acted(what: &str, ok: bool, said: &str) -> Markup {
    layout(
        what,
        Nav::Models,
        None,
        &html! {
            h1 { (what) }
            p.said.good[ok].bad[!ok] role="status" { (said) }
            p { a href="/ui/models" { "Back to the models" } }
        },
    )
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("")
}

/// A model's state in words: `starting (1 of 2 ready)`, `idle (on demand)`.
fn state_label(model: &Value) -> String {
    let state = str_of(model, "state");
    let replicas = model["replicas"].as_array().map_or(&[][..], Vec::as_slice);
    match state {
        "starting" => {
            let ready = replicas.iter().filter(|r| r["registered"] == true).count();
            let wanted = model["replicas_wanted"]
                .as_u64()
                .unwrap_or(replicas.len() as u64);
            format!("starting ({ready} of {wanted} ready)")
        }
        "stopped" if model["on_demand"] == true => "idle (on demand)".to_owned(),
        other => other.to_owned(),
    }
}

/// A replica's health in words.
fn health_label(replica: &Value) -> String {
    let health = &replica["health"];
    match health["status"].as_str() {
        Some("ready") => "ready".to_owned(),
        Some("loading") => match health["detail"].as_str() {
            Some(d) => format!("loading: {d}"),
            None => "loading the model".to_owned(),
        },
        Some("down") => format!("not answering: {}", str_of(health, "reason")),
        _ if replica["instance"].is_null() => "launching".to_owned(),
        _ => "waiting for its first probe".to_owned(),
    }
}

/// One model: state, reason, replicas, buttons. `id="model-ID"`, its state in
/// `[data-role=state]`.
pub(crate) fn model_section(model: &Value, csrf: &str) -> Markup {
    let id = str_of(model, "id");
    let state = str_of(model, "state");
    let running = matches!(state, "starting" | "running" | "unhealthy");
    let replicas = model["replicas"].as_array().map_or(&[][..], Vec::as_slice);
    let action = |verb: &str| format!("/ui/models/{}/{verb}", segment(id));
    html! {
        section.model id={"model-" (id)} data-model=(id) data-state=(state) {
            div.head {
                h2 { a href={"/ui/models/" (segment(id))} { (id) } }
                span.served { (str_of(model, "served_name")) " · " (str_of(model, "engine")) }
                span.badge data-state=(state) data-role="state" { (state_label(model)) }
            }
            @if let Some(reason) = model["reason"].as_str() {
                p.reason data-role="reason" { (reason) }
            }
            @if let Some(tail) = model["log_tail"].as_array().filter(|t| !t.is_empty()) {
                details open {
                    summary { "Its last log lines" }
                    pre.tail { @for l in tail { (l.as_str().unwrap_or("")) "\n" } }
                }
            }
            @if !replicas.is_empty() {
                div.scroll {
                    table.replicas {
                        thead { tr { th { "replica" } th { "endpoint" } th { "health" } th { "in the registry" } th { "restarts" } } }
                        tbody {
                            @for r in replicas {
                                tr {
                                    td { (r["index"]) }
                                    td { code { (r["endpoint"]["base_url"].as_str().unwrap_or("—")) } }
                                    td { (health_label(r)) }
                                    td { @if r["registered"] == true { "yes" } @else { "no" } }
                                    td { (r["restarts"].as_u64().unwrap_or(0)) }
                                }
                            }
                        }
                    }
                }
            }
            div.actions {
                form method="post" action=(action("start")) data-async {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" disabled[running || state == "stopping"] { "Start" }
                }
                form method="post" action=(action("stop")) data-async {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" disabled[!running] { "Stop" }
                }
                a href={"/ui/models/" (segment(id))} { "Logs" }
            }
        }
    }
}

/// Every model, as `/ui/events` sends it.
pub(crate) fn models_list(models: &Value, csrf: &str) -> Markup {
    let data = models["data"].as_array().map_or(&[][..], Vec::as_slice);
    html! {
        @for m in data { (model_section(m, csrf)) }
        @if data.is_empty() { p { "No models are configured." } }
    }
}

/// `/ui/models`.
pub(crate) fn models_page(models: &Value, csrf: &str) -> Markup {
    layout(
        "Models",
        Nav::Models,
        Some(csrf),
        &html! {
            div.title {
                h1 { "Models" }
                form method="post" action="/ui/reload" data-async {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" title="Read the configuration file again and apply it, as SIGHUP does" { "Reload the configuration" }
                }
            }
            p.said #said role="status" hidden {}
            div #models data-live="/ui/events" { (models_list(models, csrf)) }
        },
    )
}

/// `/ui/models/ID`: the model and its live logs.
pub(crate) fn model_page(model: &Value, logs: &Value, csrf: &str) -> Markup {
    let id = str_of(model, "id");
    let replicas = logs["replicas"].as_array().map_or(&[][..], Vec::as_slice);
    let several = replicas.len() > 1;
    layout(
        id,
        Nav::Models,
        Some(csrf),
        &html! {
            h1 { (id) }
            p.said #said role="status" hidden {}
            div #models data-live={"/ui/events?model=" (segment(id))} { (model_section(model, csrf)) }
            h2 { "Logs" }
            p.hint #logs-state { "The last 200 lines; new lines appear as the engine writes them." }
            pre #logs data-follow={"/ui/models/" (segment(id)) "/logs/events"} {
                @for r in replicas {
                    @for l in r["lines"].as_array().map_or(&[][..], Vec::as_slice) {
                        @if several { "[" (r["index"]) "] " }
                        (l.as_str().unwrap_or("")) "\n"
                    }
                }
            }
        },
    )
}

/// What the usage page shows.
#[derive(Debug)]
pub(crate) struct UsageView<'a> {
    pub(crate) range: &'static str,
    pub(crate) model: Option<&'a str>,
    pub(crate) key: Option<&'a str>,
    /// Every bucket start, in order.
    pub(crate) labels: Vec<String>,
    /// The admin API's rows per bucket (or totals since the start, with `note`).
    pub(crate) rows: &'a Value,
    /// The admin API's totals over the range.
    pub(crate) totals: &'a Value,
    /// Why there are no buckets (the memory store).
    pub(crate) note: Option<&'a str>,
    /// The session's CSRF token, for the page's forms.
    pub(crate) csrf: &'a str,
}

/// Series per `by` (`model` or `key`) of `what` (`requests`, `total_tokens`) over `labels`.
fn series(rows: &[Value], labels: &[String], by: &str, what: &str) -> Vec<Series> {
    let at: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in rows {
        let Some(&b) = row["from"].as_str().and_then(|f| at.get(f)) else {
            continue;
        };
        let name = row[by].as_str().unwrap_or("(none)").to_owned();
        let values = out.entry(name).or_insert_with(|| vec![0; labels.len()]);
        values[b] += row[what].as_u64().unwrap_or(0);
    }
    out.into_iter()
        .map(|(name, values)| Series { name, values })
        .collect()
}

/// Short labels for the x axis: the time of day, with the day for ranges past a day.
fn short_labels(labels: &[String], range: &str) -> Vec<String> {
    labels
        .iter()
        .map(|l| {
            if range == "7d" {
                l.get(5..13).unwrap_or(l).replace('T', " ")
            } else {
                l.get(11..16).unwrap_or(l).to_owned()
            }
        })
        .collect()
}

/// `/ui/usage`.
pub(crate) fn usage_page(view: &UsageView<'_>) -> Markup {
    let rows = view.rows["data"].as_array().map_or(&[][..], Vec::as_slice);
    let totals = view.totals["data"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let short = short_labels(&view.labels, view.range);
    let relabel = |mut s: Vec<Series>| {
        // The chart's buckets by their short label; the data by the long one.
        for x in &mut s {
            x.values.truncate(short.len());
        }
        s
    };
    let requests = relabel(series(rows, &view.labels, "model", "requests"));
    let tokens = relabel(series(rows, &view.labels, "key", "total_tokens"));
    let query = |range: &str| {
        let mut q = format!("range={range}");
        for (name, v) in [("model", view.model), ("key", view.key)] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                q.push('&');
                q.push_str(name);
                q.push('=');
                q.push_str(&segment(v));
            }
        }
        q
    };
    layout(
        "Usage",
        Nav::Usage,
        Some(view.csrf),
        &html! {
            h1 { "Usage" }
            form.filters method="get" action="/ui/usage" {
                label { "Range "
                    select name="range" {
                        @for r in Range::ALL {
                            option value=(r.name) selected[r.name == view.range] { "last " (r.name) }
                        }
                    }
                }
                label { "Model " input type="text" name="model" value=[view.model] placeholder="all"; }
                label { "Key " input type="text" name="key" value=[view.key] placeholder="all"; }
                button type="submit" { "Show" }
                a.button href={"/ui/usage.csv?" (query(view.range))} download { "Export CSV" }
            }
            @if let Some(note) = view.note {
                p.said.bad { (note) " Shown: the totals since the server started." }
            } @else {
                h2 { "Requests per model" }
                (chart::stacked_bars("requests-chart", "requests", &short, &requests))
                h2 { "Tokens per key" }
                (chart::stacked_bars("tokens-chart", "tokens", &short, &tokens))
            }
            h2 { "Totals" }
            div.scroll {
                table #usage-totals {
                    thead { tr { th { "key" } th { "model" } th.num { "requests" } th.num { "prompt tokens" } th.num { "completion tokens" } th.num { "total tokens" } th.num { "failed" } th.num { "client gone" } } }
                    tbody {
                        @for t in totals {
                            tr data-key=[t["key"].as_str()] data-model=[t["model"].as_str()] data-requests=(t["requests"]) {
                                td { (t["key"].as_str().unwrap_or("(no key)")) }
                                td { (t["model"].as_str().unwrap_or("(not routed)")) }
                                td.num { (t["requests"]) }
                                td.num { (t["prompt_tokens"]) }
                                td.num { (t["completion_tokens"]) }
                                td.num { (t["total_tokens"]) }
                                td.num { (t["failed"]) }
                                td.num { (t["client_disconnected"]) }
                            }
                        }
                        @if totals.is_empty() { tr { td colspan="8" { "Nothing recorded in this range." } } }
                    }
                }
            }
        },
    )
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// `/ui/gpus`: each GPU's memory, what each running model takes by the estimate, what is free.
pub(crate) fn gpus_page(
    gpus: &[cortex_gguf::Gpu],
    source: &str,
    needs: &HashMap<cortex_core::ModelId, (u64, Vec<u64>)>,
    models: &Value,
    csrf: &str,
) -> Markup {
    let data = models["data"].as_array().map_or(&[][..], Vec::as_slice);
    let running = |m: &Value| matches!(str_of(m, "state"), "starting" | "running" | "unhealthy");
    let need = |m: &Value| {
        cortex_core::ModelId::new(str_of(m, "id"))
            .ok()
            .and_then(|id| needs.get(&id).cloned())
    };
    layout(
        "GPUs",
        Nav::Gpus,
        Some(csrf),
        &html! {
            h1 { "GPU memory" }
            p.hint { "From " (source) ". Each bar is one GPU: a coloured part per running model, as the estimator predicts llama-server or vLLM will allocate; grey is free." }
            @if gpus.is_empty() {
                p.said { "No GPUs: none is configured ([[gpu]] tables) and none was found. Models run on the host; their estimates are below." }
            }
            @for (i, g) in gpus.iter().enumerate() {
                @let parts: Vec<Part> = data.iter().filter(|m| running(m)).filter_map(|m| {
                    let bytes = need(m)?.1.get(i).copied().unwrap_or(0);
                    (bytes > 0).then(|| Part { name: str_of(m, "id").to_owned(), bytes })
                }).collect();
                @let used: u64 = parts.iter().map(|p| p.bytes).sum();
                section.gpu data-gpu=(i) {
                    h2 { "GPU " (g.index) ": " (g.name) }
                    (chart::memory_bar(&format!("gpu-{i}"), g.total_bytes, &parts))
                    p.legend {
                        @for (j, p) in parts.iter().enumerate() {
                            span.legend { i.swatch data-colour=(j % 8) {} (p.name) ": " (mib(p.bytes)) }
                        }
                        span.legend { i.swatch.free {} "free by the estimate: " (mib(g.total_bytes.saturating_sub(used))) " of " (mib(g.total_bytes)) }
                        @if let Some(free) = g.free_bytes { span.legend { "free now, as reported: " (mib(free)) } }
                    }
                }
            }
            h2 { "Every model's estimate" }
            div.scroll {
                table #estimates {
                    thead { tr { th { "model" } th { "state" } th.num { "host" } @for g in gpus { th.num { "GPU " (g.index) } } } }
                    tbody {
                        @for m in data {
                            tr data-model=(str_of(m, "id")) {
                                td { (str_of(m, "id")) }
                                td { (state_label(m)) }
                                @match need(m) {
                                    Some((host, per_gpu)) => {
                                        td.num data-bytes=(host) { (mib(host)) }
                                        @for i in 0..gpus.len() { td.num { (mib(per_gpu.get(i).copied().unwrap_or(0))) } }
                                    }
                                    None => { td colspan=(gpus.len() + 1) { "no estimate (not a GGUF the estimator reads)" } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The calculator's settings, from its form.
#[derive(Debug, Clone, Default)]
pub(crate) struct CalculatorSettings {
    pub(crate) ctx_size: String,
    pub(crate) gpu_layers: String,
    pub(crate) parallel: String,
    pub(crate) cache_type: String,
    pub(crate) flash_attn: String,
    pub(crate) extra: String,
}

impl CalculatorSettings {
    /// The settings of a query string (empty: llama-server's defaults).
    pub(crate) fn from_query(query: &[(String, String)]) -> Self {
        let get = |name| super::field(query, name).unwrap_or("").trim().to_owned();
        Self {
            ctx_size: get("ctx_size"),
            gpu_layers: get("gpu_layers"),
            parallel: get("parallel"),
            cache_type: get("cache_type"),
            flash_attn: get("flash_attn"),
            extra: get("extra"),
        }
    }

    /// The llama-server command line for `file` with these settings (`-m` first).
    ///
    /// # Errors
    ///
    /// A number that is not one, or extra flags that cannot be split or name another model.
    pub(crate) fn args(&self, file: &str) -> Result<Vec<String>, String> {
        let mut args = vec!["-m".to_owned(), file.to_owned()];
        for (flag, value, name) in [
            ("-c", &self.ctx_size, "context size"),
            ("-ngl", &self.gpu_layers, "GPU layers"),
            ("-np", &self.parallel, "parallel sequences"),
        ] {
            if value.is_empty() {
                continue;
            }
            if value.parse::<u64>().is_err()
                && !(flag == "-ngl" && matches!(value.as_str(), "all" | "auto"))
            {
                return Err(format!("{name}: `{value}` is not a whole number"));
            }
            args.extend([flag.to_owned(), value.clone()]);
        }
        if !self.cache_type.is_empty() {
            args.extend([
                "-ctk".to_owned(),
                self.cache_type.clone(),
                "-ctv".to_owned(),
                self.cache_type.clone(),
            ]);
        }
        if !self.flash_attn.is_empty() {
            args.extend(["-fa".to_owned(), self.flash_attn.clone()]);
        }
        if !self.extra.is_empty() {
            let extra = shlex::split(&self.extra).ok_or_else(|| {
                format!(
                    "more flags: `{}` cannot be split as a shell would",
                    self.extra
                )
            })?;
            if let Some(m) = extra.iter().find(|a| {
                matches!(
                    a.as_str(),
                    "-m" | "--model" | "-mu" | "--model-url" | "-hf" | "--hf-repo"
                )
            }) {
                return Err(format!(
                    "more flags: `{m}` names another model; choose the file above"
                ));
            }
            args.extend(extra);
        }
        Ok(args)
    }
}

/// `/ui/calculator`.
pub(crate) fn calculator_page(
    files: &[String],
    dir_errors: &[String],
    chosen: Option<&str>,
    settings: &CalculatorSettings,
    gpus: &[cortex_gguf::Gpu],
    result: Option<Result<(Vec<String>, Value), String>>,
    csrf: &str,
) -> Markup {
    let select = |name: &str, value: &str, options: &[(&str, &str)]| {
        html! {
            select name=(name) {
                @for (v, label) in options { option value=(v) selected[*v == value] { (label) } }
            }
        }
    };
    layout(
        "Calculator",
        Nav::Calculator,
        Some(csrf),
        &html! {
            h1 { "Memory calculator" }
            p.hint { "What llama-server b11434 will allocate on each device for a model file and settings, on "
                @if gpus.is_empty() { "this machine's host memory (no GPUs configured)" }
                @else { @for (i, g) in gpus.iter().enumerate() { @if i > 0 { ", " } (g.name) " (" (mib(g.total_bytes)) ")" } }
                ": the numbers of " code { "cortex gguf estimate" } "." }
            @for e in dir_errors { p.said.bad { (e) } }
            form.calculator method="get" action="/ui/calculator" {
                label { "Model file "
                    select name="file" required {
                        option value="" { "choose a GGUF file" }
                        @for f in files { option value=(f) selected[Some(f.as_str()) == chosen] { (f) } }
                    }
                }
                label { "Context size (-c) " input type="text" inputmode="numeric" name="ctx_size" value=(settings.ctx_size) placeholder="the model's"; }
                label { "GPU layers (-ngl) " input type="text" name="gpu_layers" value=(settings.gpu_layers) placeholder="auto"; }
                label { "Parallel sequences (-np) " input type="text" inputmode="numeric" name="parallel" value=(settings.parallel) placeholder="auto"; }
                label { "KV cache type " (select("cache_type", &settings.cache_type, &[("", "f16 (default)"), ("q8_0", "q8_0"), ("q4_0", "q4_0"), ("f32", "f32")])) }
                label { "Flash attention " (select("flash_attn", &settings.flash_attn, &[("", "auto (default)"), ("on", "on"), ("off", "off")])) }
                label.wide { "More llama-server flags " input type="text" name="extra" value=(settings.extra) placeholder="-b 1024 -ub 256"; }
                button type="submit" { "Estimate" }
            }
            @if files.is_empty() { p.said { "No GGUF files in the model directories (server.model_dirs, or the configured models' directories)." } }
            @match result {
                None => {}
                Some(Err(e)) => { p.said.bad #estimate-error role="alert" { (e) } }
                Some(Ok((args, doc))) => { (estimate(&args, &doc, gpus)) }
            }
        },
    )
}

/// An estimate document (`cortex.estimate/1`) as tables.
fn estimate(args: &[String], doc: &Value, gpus: &[cortex_gguf::Gpu]) -> Markup {
    let devices = doc["devices"].as_array().map_or(&[][..], Vec::as_slice);
    let ladder = doc["suggestions"].as_array().map_or(&[][..], Vec::as_slice);
    let gpu_flags: Vec<String> = gpus
        .iter()
        .map(|g| {
            let free = g
                .free_bytes
                .map(|f| format!(":{}", f >> 20))
                .unwrap_or_default();
            format!("--gpu '{}:{}{free}' ", g.name, g.total_bytes >> 20)
        })
        .collect();
    let gpu_flags = gpu_flags.concat();
    let fits = doc["fits"] == true;
    let b = |v: &Value| mib(v.as_u64().unwrap_or(0));
    html! {
        section #estimate data-total=(doc["total"]) data-fits=(fits) {
            h2 { "Estimate" }
            p.said.good[fits].bad[!fits] { @if fits { "It fits." } @else { "It does not fit." } " In all: " (b(&doc["total"])) "." }
            p.hint { "The same numbers: " code { "cortex gguf estimate --json " (gpu_flags) (shlex::try_join(args.iter().map(String::as_str)).unwrap_or_default()) } }
            div.scroll {
                table #devices {
                    thead { tr { th { "device" } th.num { "weights" } th.num { "KV cache" } th.num { "output" } th.num { "compute" } th.num { "total" } th.num { "free" } th { "fits" } } }
                    tbody {
                        @for d in devices {
                            tr data-device=(str_of(d, "device")) data-total=(d["total"]) {
                                td { (str_of(d, "device")) @if let Some(n) = d["name"].as_str() { " (" (n) ")" } }
                                td.num { (b(&d["weights"])) }
                                td.num { (mib(d["kv_full"].as_u64().unwrap_or(0) + d["kv_swa"].as_u64().unwrap_or(0) + d["recurrent"].as_u64().unwrap_or(0))) }
                                td.num { (b(&d["output"])) }
                                td.num { (b(&d["compute"])) }
                                td.num { (b(&d["total"])) }
                                td.num { @if d["free_bytes"].is_null() { "—" } @else { (b(&d["free_bytes"])) } }
                                td { @if d["fits"] == true { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
            @if !ladder.is_empty() {
                h2 { "Changes that would make it fit" }
                ol #ladder {
                    @for s in ladder {
                        li data-fits=(s["fits"] == true) {
                            code { (s["flags"].as_array().map(|f| f.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")).unwrap_or_default()) }
                            " — " (str_of(s, "reason"))
                            @if let Some(t) = s["gpu_totals"].as_array() { " (GPUs: " (t.iter().map(|v| mib(v.as_u64().unwrap_or(0))).collect::<Vec<_>>().join(", ")) ")" }
                            @if s["fits"] == true { " fits" }
                        }
                    }
                }
            }
            @if let Some(notes) = doc["notes"].as_array().filter(|n| !n.is_empty()) {
                h2 { "Notes" }
                ul { @for n in notes { li { (n.as_str().unwrap_or("")) } } }
            }
        }
    }
}

/// `/ui/keys`; `said` what the last action did, `created` a new key to show this once.
pub(crate) fn keys_page(
    keys: &Value,
    models: &[String],
    csrf: &str,
    said: Option<&(bool, String)>,
    created: Option<(&str, &str)>,
) -> Markup {
    let data = keys["data"].as_array().map_or(&[][..], Vec::as_slice);
    layout(
        "Keys",
        Nav::Keys,
        Some(csrf),
        &html! {
            h1 { "Client keys" }
            @if let Some((ok, text)) = said { p.said.good[*ok].bad[!*ok] role="status" { (text) } }
            @if let Some((id, key)) = created {
                div.created {
                    p { "The key of " code { (id) } ", shown this once (only its digest is kept):" }
                    code #new-key { (key) }
                }
            }
            div.scroll {
                table #keys {
                    thead { tr { th { "id" } th { "models" } th { "requests a minute" } th { "kept in" } th {} } }
                    tbody {
                        @for k in data {
                            @let id = str_of(k, "id");
                            tr data-key=(id) {
                                td { code { (id) } }
                                td { @match k["models"].as_array() { Some(m) => { (m.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) } None => { "all" } } }
                                td { @if let Some(n) = k["requests_per_minute"].as_u64() { (n) } @else { "no limit" } }
                                td { (str_of(k, "source")) @if let Some(by) = k["created_by"].as_str() { " (by " (by) ")" } }
                                td {
                                    form method="post" action={"/ui/keys/" (segment(id)) "/revoke"} data-confirm={"Revoke " (id) "? Requests with it are refused at once."} {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "New key" }
            form.newkey method="post" action="/ui/keys" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Id " input type="text" name="id" required pattern="[A-Za-z0-9._-]+" placeholder="team-a"; }
                fieldset {
                    legend { "Models it may use (none ticked: all)" }
                    @for m in models { label.check { input type="checkbox" name="models" value=(m); " " (m) } }
                }
                button type="submit" { "Create" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_failed_model_shows_its_reason_and_log_tail_escaped() {
        let model = json!({
            "id": "gemma", "served_name": "gemma-3-270m", "engine": "llamacpp", "state": "failed",
            "reason": "exited with code 1 before it was ready",
            "log_tail": ["error: <model> not found", "exiting"], "replicas": [],
        });
        let html = model_section(&model, "tok").into_string();
        assert!(
            html.contains("exited with code 1 before it was ready"),
            "{html}"
        );
        assert!(
            html.contains("error: &lt;model&gt; not found\nexiting\n"),
            "{html}"
        );
        assert!(html.contains(r#"data-state="failed""#));
        // Start is offered, Stop is not.
        assert!(
            html.contains(r#"<button type="submit">Start</button>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<button type="submit" disabled>Stop</button>"#),
            "{html}"
        );
    }

    #[test]
    fn states_in_words() {
        let starting = json!({"state": "starting", "replicas_wanted": 2, "replicas": [
            {"index": 0, "registered": true, "instance": "proc-1", "health": {"status": "ready"}},
            {"index": 1, "registered": false, "instance": "proc-2", "health": {"status": "loading"}},
        ]});
        assert_eq!(state_label(&starting), "starting (1 of 2 ready)");
        assert_eq!(health_label(&starting["replicas"][1]), "loading the model");
        let idle = json!({"state": "stopped", "on_demand": true, "replicas": []});
        assert_eq!(state_label(&idle), "idle (on demand)");
        let launching = json!({"index": 0, "instance": null, "health": null});
        assert_eq!(health_label(&launching), "launching");
    }

    #[test]
    fn the_calculator_builds_the_command_line_and_refuses_another_model() {
        let s = CalculatorSettings {
            ctx_size: "8192".into(),
            gpu_layers: "all".into(),
            cache_type: "q8_0".into(),
            extra: "-b 1024 --no-mmap".into(),
            ..CalculatorSettings::default()
        };
        assert_eq!(
            s.args("/m/a.gguf").unwrap(),
            [
                "-m",
                "/m/a.gguf",
                "-c",
                "8192",
                "-ngl",
                "all",
                "-ctk",
                "q8_0",
                "-ctv",
                "q8_0",
                "-b",
                "1024",
                "--no-mmap"
            ]
        );
        let other = CalculatorSettings {
            extra: "-m /etc/passwd".into(),
            ..CalculatorSettings::default()
        };
        assert!(
            other
                .args("/m/a.gguf")
                .unwrap_err()
                .contains("another model")
        );
        let bad = CalculatorSettings {
            ctx_size: "lots".into(),
            ..CalculatorSettings::default()
        };
        assert!(bad.args("/m/a.gguf").unwrap_err().contains("context size"));
    }
}
