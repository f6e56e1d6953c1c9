"""Bad requests against gemma3 serve (started with --max-body-bytes 4096 --context 256): prints
one JSON object {case: [status, error object or body]}. Usage: errors_client.py BASE_URL"""
import json
import sys

import rawhttp as httpx
import openai

base = sys.argv[1]
out = {}


def record(name, response):
    try:
        body = response.json()
    except Exception:
        body = response.text
    out[name] = [response.status_code, body, response.headers.get("content-type", "")]


post = lambda path, **kw: httpx.post(base + path, timeout=30, **kw)
ok = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}

record("malformed_json", post("/v1/completions", content=b'{"prompt": "x", ', headers={"content-type": "application/json"}))
record("not_an_object", post("/v1/completions", content=b'[1, 2]'))
record("wrong_type", post("/v1/completions", json={**ok, "max_tokens": "ten"}))
record("wrong_type_bool", post("/v1/completions", json={**ok, "stream": "yes"}))
record("temperature_range", post("/v1/completions", json={**ok, "temperature": 5}))
record("top_p_range", post("/v1/completions", json={**ok, "top_p": 1.5}))
record("negative_max_tokens", post("/v1/completions", json={**ok, "max_tokens": -3}))
record("top_logprobs_range", post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "logprobs": True,
                                                                  "top_logprobs": 21}))
record("n2", post("/v1/completions", json={**ok, "n": 2}))
record("invalid_utf8", post("/v1/completions", content=b'{"prompt": "\xff\xfe"}', headers={"content-type": "application/json"}))
record("missing_prompt", post("/v1/completions", json={"max_tokens": 2}))
record("token_out_of_range", post("/v1/completions", json={**ok, "prompt": [1, 2, 99999999]}))
record("too_long", post("/v1/completions", json={**ok, "prompt": list(range(300))}))
record("chat_without_template", post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}))
record("not_found", httpx.get(base + "/v1/nothing-here"))
record("too_large", post("/v1/completions", content=b'{"prompt": "' + b"a" * 8000 + b'"}'))
record("unknown_fields_ignored", post("/v1/completions", json={**ok, "frobnicate": [1, {"a": None}], "user": "x"}))
record("null_is_absent", post("/v1/completions", json={**ok, "seed": None, "stop": None}))

# The official client raises its typed errors for these statuses.
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
try:
    client.completions.create(model="m", prompt="x", temperature=9)
    out["client_400"] = "no error"
except openai.BadRequestError as e:
    out["client_400"] = ["BadRequestError", e.status_code, e.body]
try:
    client.completions.create(model="m", prompt="x", max_tokens=2, extra_body={"n": 3})
    out["client_n"] = "no error"
except openai.BadRequestError as e:
    out["client_n"] = ["BadRequestError", e.status_code, e.body]
print(json.dumps(out))
