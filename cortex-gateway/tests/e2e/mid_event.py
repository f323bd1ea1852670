"""A stream that breaks in the middle of an event, read by the OpenAI Python SDK.

Usage: mid_event.py BASE_URL KEY MODEL. Prints JSON: the content read, and the exception the SDK
raised (its class, whether it is an openai.APIError, its message).
"""
import json
import sys

import openai

base, key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=20)
out = {"content": "", "exception": None, "api_error": False, "message": None}
try:
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    for chunk in stream:
        for choice in chunk.choices:
            out["content"] += choice.delta.content or ""
except openai.APIError as e:
    out.update(exception=type(e).__name__, api_error=True, message=e.message)
except Exception as e:  # a mis-parse: what the test must never see
    out.update(exception=type(e).__name__, message=str(e))
print(json.dumps(out))
