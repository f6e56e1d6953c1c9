"""Chat on the real Gemma 3 270M through gemma3 serve with the official openai client: plain,
streamed, a second turn that reuses the cached history, logprobs, and a greedy completion.
Prints one JSON object. Usage: chat_client.py BASE_URL COMPLETION_PROMPT"""
import json
import sys

import openai
import rawhttp

base, prompt = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
model = client.models.list().data[0].id
out = {"model": model}
messages = [{"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"}]

r = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
out["plain"] = {"content": r.choices[0].message.content, "role": r.choices[0].message.role,
                "finish_reason": r.choices[0].finish_reason, "usage": r.usage.model_dump(), "object": r.object}

pieces, roles, finishes, usage = [], [], [], None
for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True}):
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finishes.append(c.finish_reason)
out["streamed"] = {"content": "".join(pieces), "roles": roles, "finish_reasons": finishes, "usage": usage}

# Second turn: the history is resent; the slot's cache holds it.
history = messages + [{"role": "assistant", "content": out["plain"]["content"]}, {"role": "user", "content": "And of Italy?"}]
r = client.chat.completions.create(model=model, messages=history, max_tokens=12, temperature=0)
out["second_turn"] = {"content": r.choices[0].message.content, "usage": r.usage.model_dump()}

r = client.chat.completions.create(model=model, messages=messages, max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
out["logprobs"] = [[t.token, t.logprob, len(t.top_logprobs)] for t in r.choices[0].logprobs.content]

r = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0)
out["completion"] = {"text": r.choices[0].text, "usage": r.usage.model_dump()}
text = "<start_of_turn>user\nHi<end_of_turn>"
ids = rawhttp.post(base + "/tokenize", json={"content": text}).json()["tokens"]
out["tokenize"] = {"ids": ids, "back": rawhttp.post(base + "/detokenize", json={"tokens": ids}).json()["content"],
                   "pieces": rawhttp.post(base + "/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]}
# Eight concurrent greedy requests (as many as the slots, half streamed) give token for token what
# each gives alone: the batched decode is batch-invariant on the quantized model too.
import threading
prompts = [prompt, "Once upon a time", "The best way to learn", "def fibonacci(n):", "Water boils at",
           "My favourite colour is", "In 1969, the first", "A list of fruits:"]
def alone(p):
    return client.completions.create(model=model, prompt=p, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}).choices[0].text
expected = [alone(p) for p in prompts]
together = [None] * len(prompts)
def run(i):
    if i % 2:
        together[i] = "".join(ch.choices[0].text for ch in client.completions.create(
            model=model, prompt=prompts[i], max_tokens=12, temperature=0, stream=True, extra_body={"ignore_eos": True}) if ch.choices)
    else:
        together[i] = alone(prompts[i])
threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
for t in threads: t.start()
for t in threads: t.join()
out["batching"] = {"alone": expected, "together": together}
print(json.dumps(out))
