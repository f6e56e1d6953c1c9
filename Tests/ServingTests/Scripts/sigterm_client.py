"""SIGTERM while a streamed answer is in flight: the answer still completes, then the server stops
accepting. Prints one JSON object. Usage: sigterm_client.py BASE_URL SERVER_PID"""
import json
import os
import signal
import sys
import time

import rawhttp as httpx
import openai

base, pid = sys.argv[1], int(sys.argv[2])
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
out = {"pieces": 0, "finish": None}
stream = client.completions.create(model="m", prompt="Once upon a time", max_tokens=150, temperature=0, stream=True,
                                   stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
for i, chunk in enumerate(stream):
    if i == 0:
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
    for c in chunk.choices:
        out["pieces"] += 1
        if c.finish_reason:
            out["finish"] = c.finish_reason
    if chunk.usage is not None:
        out["completion_tokens"] = chunk.usage.completion_tokens
# Once the in-flight answer is done the listener is gone.
time.sleep(0.5)
try:
    httpx.get(base + "/health", timeout=2)
    out["after"] = "answered"
except OSError as e:
    out["after"] = "refused" if isinstance(getattr(e, "reason", e), ConnectionRefusedError) else repr(e)
print(json.dumps(out))
