"""gemma3 serve started with --api-key sekrit: prints {case: status}. Usage: auth_client.py BASE_URL"""
import json
import sys

import rawhttp as httpx
import openai

base = sys.argv[1]
out = {}
body = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
out["no_key"] = httpx.post(base + "/v1/completions", json=body).status_code
wrong = httpx.post(base + "/v1/completions", json=body, headers={"Authorization": "Bearer wrong"})
out["wrong_key"] = wrong.status_code
out["wrong_key_error"] = wrong.json()
out["models_no_key"] = httpx.get(base + "/v1/models").status_code
out["health_no_key"] = httpx.get(base + "/health").status_code
out["right_key"] = httpx.post(base + "/v1/completions", json=body, headers={"Authorization": "Bearer sekrit"}).status_code

try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    out["client_wrong"] = "no error"
except openai.AuthenticationError as e:
    out["client_wrong"] = ["AuthenticationError", e.status_code]
good = openai.OpenAI(base_url=base + "/v1", api_key="sekrit", max_retries=0)
out["client_right"] = good.completions.create(model="m", prompt="Hello", max_tokens=2, temperature=0).usage.completion_tokens
print(json.dumps(out))
