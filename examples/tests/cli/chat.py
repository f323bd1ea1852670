"""A chat completion through `cortex serve` with the unmodified OpenAI Python SDK.

Arguments: base URL (ending in /v1), API key, model. Prints one JSON object: the SDK version, the
streamed reply, the seconds to its first token, and a non-streamed reply's usage.
"""
import json
import sys
import time

import openai

base_url, key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
messages = [{"role": "user", "content": "Name three colours."}]

began = time.monotonic()
first = None
content = ""
for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        if first is None:
            first = time.monotonic() - began
        content += chunk.choices[0].delta.content

r = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
print(json.dumps({
    "sdk_version": openai.__version__,
    "content": content,
    "first_token_s": first,
    "usage": [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens],
}))
