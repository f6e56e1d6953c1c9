"""Drives gemma3 serve's /v1/completions (and /v1/models, /tokenize, /detokenize) with the
official openai client; prints one JSON object of what it saw. Usage: completions_client.py BASE_URL PROMPT"""
import json
import sys

import rawhttp as httpx
import openai

base, prompt = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
out = {}

models = client.models.list()
out["models"] = [m.id for m in models.data]
model = out["models"][0]

# Greedy, whole response.
c = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
out["greedy"] = {"text": c.choices[0].text, "finish_reason": c.choices[0].finish_reason, "object": c.object,
                 "usage": c.usage.model_dump()}

# Greedy, streamed, with the usage chunk.
pieces, finishes, usage, chunks = [], [], None, 0
for chunk in client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0, stream=True,
                                       stream_options={"include_usage": True}):
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        pieces.append(choice.text)
        if choice.finish_reason is not None:
            finishes.append(choice.finish_reason)
out["streamed"] = {"text": "".join(pieces), "finish_reasons": finishes, "usage": usage, "chunks": chunks}

# The same prompt as token ids.
ids = httpx.post(base + "/tokenize", json={"content": prompt}).json()["tokens"]
out["tokenize"] = ids
out["detokenize"] = httpx.post(base + "/detokenize", json={"tokens": ids}).json()["content"]
c = client.completions.create(model=model, prompt=ids, max_tokens=12, temperature=0)
out["from_ids"] = c.choices[0].text

# Seeds: sampling at temperature 1 is reproducible for a seed.
def sampled(seed):
    r = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=1.0, seed=seed,
                                  extra_body={"ignore_eos": True})
    return r.choices[0].text
out["seed"] = {"a1": sampled(42), "a2": sampled(42), "b": sampled(43)}

# Stop strings: the greedy text, cut before the first occurrence of a piece of it.
greedy = out["greedy"]["text"]
stop = greedy[len(greedy) // 2: len(greedy) // 2 + 3] if len(greedy) >= 6 else greedy
r = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0, stop=[stop, "\u0000never"])
out["stop"] = {"stop": stop, "text": r.choices[0].text, "finish_reason": r.choices[0].finish_reason}
stream_text = "".join(ch.choices[0].text for ch in client.completions.create(
    model=model, prompt=prompt, max_tokens=12, temperature=0, stop=stop, stream=True) if ch.choices)
out["stop"]["streamed"] = stream_text

# max_tokens and n_predict, llama-server's spelling.
r = client.completions.create(model=model, prompt=prompt, max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
out["max5"] = {"completion_tokens": r.usage.completion_tokens, "finish_reason": r.choices[0].finish_reason}
raw = httpx.post(base + "/v1/completions", json={"prompt": prompt, "n_predict": 3, "temperature": 0, "ignore_eos": True,
                                                   "some_unknown_field": {"x": 1}}).json()
out["n_predict3"] = raw["usage"]["completion_tokens"]

# Log-probabilities (legacy int form).
r = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, logprobs=3, extra_body={"ignore_eos": True})
lp = r.choices[0].logprobs
out["logprobs"] = {"tokens": lp.tokens, "token_logprobs": lp.token_logprobs, "top": [len(t) for t in lp.top_logprobs],
                   "top_first": [max(t.values()) for t in lp.top_logprobs]}

# Prompt cache (exact mode, 512-token prefill chunks): a request whose prompt extends the previous
# one's reuses its slot's whole prefill chunks, and answers bit for bit as without the cache.
long_ids = (ids * (600 // len(ids) + 1))[:600]
r1 = client.completions.create(model=model, prompt=long_ids, max_tokens=1, temperature=0)
r2 = client.completions.create(model=model, prompt=long_ids + ids, max_tokens=4, temperature=0, logprobs=2, extra_body={"ignore_eos": True})
r3 = client.completions.create(model=model, prompt=long_ids + ids, max_tokens=4, temperature=0, logprobs=2,
                               extra_body={"cache_prompt": False, "ignore_eos": True})
out["cache"] = {"first": r1.usage.prompt_tokens_details.cached_tokens, "second": r2.usage.prompt_tokens_details.cached_tokens,
                "second_prompt": r2.usage.prompt_tokens, "long": len(long_ids), "disabled": r3.usage.prompt_tokens_details.cached_tokens,
                "same_text": int(r2.choices[0].text == r3.choices[0].text),
                "same_logprobs": int(r2.choices[0].logprobs.token_logprobs == r3.choices[0].logprobs.token_logprobs)}

# Continuous batching changes nothing: concurrent greedy requests (more than the slots, mixed
# streamed and not) give what each gives alone.
import threading
prompts = [prompt, "The cat sat on", "In a small village", prompt + " dog", "Once", "She said"]
def alone(p):
    return client.completions.create(model=model, prompt=p, max_tokens=10, temperature=0, extra_body={"ignore_eos": True}).choices[0].text
expected = [alone(p) for p in prompts]
together = [None] * len(prompts)
def run(i):
    if i % 2:
        together[i] = "".join(ch.choices[0].text for ch in client.completions.create(
            model=model, prompt=prompts[i], max_tokens=10, temperature=0, stream=True, extra_body={"ignore_eos": True}) if ch.choices)
    else:
        together[i] = alone(prompts[i])
threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
for t in threads: t.start()
for t in threads: t.join()
out["batching"] = {"alone": expected, "together": together}

# Metrics after all this.
out["metrics"] = httpx.get(base + "/metrics").text
print(json.dumps(out))
