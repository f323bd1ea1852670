"""The OpenAI Python SDK against the gateway: what a user's unmodified code sees.

Prints one JSON object with what each call returned, for the Rust test to check against the
gateway's usage records. Arguments: base URL, API key, model.
"""
import json
import sys

import openai

base_url, key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
out = {"sdk_version": openai.__version__}
messages = [{"role": "user", "content": "Name three colours."}]


def usage(u):
    return None if u is None else [u.prompt_tokens, u.completion_tokens, u.total_tokens]


r = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
out["chat"] = {"usage": usage(r.usage), "content": r.choices[0].message.content}

chunks = list(client.chat.completions.create(
    model=model, messages=messages, max_tokens=8, temperature=0, stream=True))
out["chat_stream"] = {
    "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "chunks": len(chunks),
    "usage_chunks": sum(1 for c in chunks if getattr(c, "usage", None) is not None),
    "empty_choices": sum(1 for c in chunks if not c.choices),
}

chunks = list(client.chat.completions.create(
    model=model, messages=messages, max_tokens=8, temperature=0, stream=True,
    stream_options={"include_usage": True}))
out["chat_stream_usage"] = {
    "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "usage": usage(chunks[-1].usage),
}

r = client.completions.create(model=model, prompt="The sky is", max_tokens=6, temperature=0)
out["completion"] = {"usage": usage(r.usage), "text": r.choices[0].text}

chunks = list(client.completions.create(
    model=model, prompt="The sky is", max_tokens=6, temperature=0, stream=True))
out["completion_stream"] = {"text": "".join(c.choices[0].text for c in chunks if c.choices)}

out["models"] = [m.id for m in client.models.list()]


def error_of(call):
    try:
        call()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        return {"exception": type(e).__name__, "status": e.status_code, "code": body.get("code"),
                "message": body.get("message")}
    except openai.APIError as e:
        return {"exception": type(e).__name__, "message": str(e)}
    return None


bad_key = openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0)
out["errors"] = {
    "bad_key": error_of(lambda: bad_key.chat.completions.create(model=model, messages=messages)),
    "unknown_model": error_of(
        lambda: client.chat.completions.create(model="gpt-9", messages=messages)),
    "too_long": error_of(lambda: client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "word " * 5000}], max_tokens=4)),
}
print(json.dumps(out))
