"""Chat completions through `cortex serve` with the unmodified OpenAI Python SDK, against vLLM.

Arguments: base URL (ending in /v1), API key, model. Prints one JSON object: the SDK version; a
streamed chat with `include_usage` (its chunks, the usage chunk's counts, whether every content
chunk came before it); a streamed chat without it (whether any chunk carried usage); a
non-streamed chat's usage. `ignore_eos` (a vLLM sampling parameter the SDK passes through
`extra_body`) makes the random-weight model produce exactly `max_tokens` tokens.
"""
import json
import sys

import openai

base_url, key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
messages = [{"role": "user", "content": "Name three colours."}]
extra = {"ignore_eos": True}

chunks = 0
usage = None
content_after_usage = False
for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=extra):
    chunks += 1
    if chunk.usage is not None:
        usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens,
                 chunk.usage.total_tokens]
    elif usage is not None:
        content_after_usage = True

plain_chunks = 0
plain_usage_seen = False
for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, stream=True,
        extra_body=extra):
    plain_chunks += 1
    if chunk.usage is not None:
        plain_usage_seen = True

r = client.chat.completions.create(model=model, messages=messages, max_tokens=12,
                                   temperature=0, extra_body=extra)
print(json.dumps({
    "sdk_version": openai.__version__,
    "chunks": chunks,
    "stream_usage": usage,
    "content_after_usage": content_after_usage,
    "plain_chunks": plain_chunks,
    "plain_usage_seen": plain_usage_seen,
    "usage": [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens],
}))
