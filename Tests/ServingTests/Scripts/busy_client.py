"""gemma3 serve with --parallel 1 --queue 1: a full queue answers 429, and a client that goes away
frees its slot at once (streamed and not). Prints one JSON object. Usage: busy_client.py BASE_URL"""
import json
import re
import sys
import threading
import time

import rawhttp as httpx
import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
out = {}
LONG = 4000


def gauge(name):
    text = httpx.get(base + "/metrics").text
    m = re.search(r"^gemma3_%s (\S+)$" % name, text, re.M)
    return float(m.group(1)) if m else None


def wait_for(predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# Decode speed of this server, to know how long a LONG-token answer would hold the slot.
t = time.time()
client.completions.create(model="m", prompt="Once", max_tokens=200, temperature=0, extra_body={"ignore_eos": True})
out["seconds_per_token"] = (time.time() - t) / 200

# A: holds the only slot with a long streamed answer.
a = client.completions.create(model="m", prompt="Once upon a time", max_tokens=LONG, temperature=0, stream=True,
                              extra_body={"ignore_eos": True})
a_iter = iter(a)
next(a_iter)
out["a_active"] = gauge("active_slots_slots")

# B: waits in the queue.
b_result = {}


def run_b():
    t0 = time.time()
    text = []
    for ch in client.completions.create(model="m", prompt="Hello", max_tokens=5, temperature=0, stream=True,
                                        extra_body={"ignore_eos": True}):
        if not text:
            b_result["first_chunk_at"] = time.time()
        text.extend(c.text for c in ch.choices)
    b_result["text"] = "".join(text)
    b_result["seconds"] = time.time() - t0


b = threading.Thread(target=run_b)
b.start()
out["b_queued"] = wait_for(lambda: gauge("queue_length_requests") == 1)

# C: the queue is full.
c = httpx.post(base + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
out["c_status"] = c.status_code
out["c_retry_after"] = c.headers.get("retry-after")
out["c_error"] = c.json()
try:
    client.completions.create(model="m", prompt="Hi", max_tokens=2)
    out["c_client"] = "no error"
except openai.RateLimitError as e:
    out["c_client"] = ["RateLimitError", e.status_code]

# A goes away mid-stream: B gets the slot within a step.
closed_at = time.time()
a.close()
b.join(timeout=60)
out["b_text"] = b_result.get("text")
out["b_wait_after_close"] = b_result.get("first_chunk_at", 1e9) - closed_at
out["after_stream_cancel_active"] = wait_for(lambda: gauge("active_slots_slots") == 0, timeout=10)

# D: a whole (not streamed) request whose client gives up; E right after it is served at once.
try:
    httpx.post(base + "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": LONG, "temperature": 0, "ignore_eos": True},
               timeout=0.5)
    out["d"] = "finished"
except (TimeoutError, OSError):
    out["d"] = "timed out"
t = time.time()
e = client.completions.create(model="m", prompt="Hello", max_tokens=3, temperature=0, extra_body={"ignore_eos": True})
out["e_seconds"] = time.time() - t
out["e_tokens"] = e.usage.completion_tokens
out["final_queue"] = gauge("queue_length_requests")
out["final_active"] = gauge("active_slots_slots")
out["health"] = httpx.get(base + "/health").status_code
print(json.dumps(out))
