"""Structured output through gemma3 serve with the official openai client: every schema of
SCHEMAS_FILE (a JSON list of schema texts) as response_format json_schema, SAMPLES seeded samples
each at temperature 1, on /v1/completions or /v1/chat/completions (ENDPOINT), half of them
streamed; json_object; bad formats. Every answer is parsed and validated with the jsonschema
package. Prints one JSON object.
Usage: structured_client.py BASE_URL ENDPOINT SCHEMAS_FILE SAMPLES MAX_TOKENS"""
import json
import sys
import threading

import jsonschema
import openai

base, endpoint, schemas_file, samples, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
schemas = [json.loads(s) for s in json.load(open(schemas_file))]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)
model = client.models.list().data[0].id
prompt = "Here is the record as JSON:"
messages = [{"role": "user", "content": "Give me the record as JSON."}]


def ask(response_format, seed, stream, temperature=1.0):
    """The answer's text and finish reason."""
    # /v1/completions has no response_format parameter in OpenAI's API: sent as an extra field
    # (as llama-server's clients do); chat has it.
    args = dict(model=model, max_tokens=max_tokens, temperature=temperature, seed=seed, stream=stream)
    if response_format is not None:
        if endpoint == "chat":
            args["response_format"] = response_format
        else:
            args["extra_body"] = {"response_format": response_format}
    if endpoint == "chat":
        r = client.chat.completions.create(messages=messages, **args)
        if not stream:
            return r.choices[0].message.content, r.choices[0].finish_reason
        text, finish = [], None
        for chunk in r:
            for c in chunk.choices:
                text.append(c.delta.content or "")
                finish = c.finish_reason or finish
        return "".join(text), finish
    r = client.completions.create(prompt=prompt, **args)
    if not stream:
        return r.choices[0].text, r.choices[0].finish_reason
    text, finish = [], None
    for chunk in r:
        for c in chunk.choices:
            text.append(c.text or "")
            finish = c.finish_reason or finish
    return "".join(text), finish


def check(schema, text):
    """None when text is one JSON value valid under schema, else why not."""
    try:
        jsonschema.Draft202012Validator(schema).validate(json.loads(text))
        return None
    except Exception as e:  # noqa: BLE001 - any failure is reported
        return "%s: %r" % (str(e).splitlines()[0], text)


out = {"answers": 0, "failures": [], "finish_reasons": {}}
lock = threading.Lock()


def run(i, schema):
    fmt = {"type": "json_schema", "json_schema": {"name": "s%d" % i, "schema": schema, "strict": True}}
    for k in range(samples):
        text, finish = ask(fmt, seed=1000 * i + k, stream=k % 2 == 1)
        why = check(schema, text)
        with lock:
            out["answers"] += 1
            out["finish_reasons"][finish] = out["finish_reasons"].get(finish, 0) + 1
            if why:
                out["failures"].append("schema %d sample %d: %s" % (i, k, why))


# Four schemas at a time: constrained requests share decode steps with each other.
threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(schemas)]
for start in range(0, len(threads), 4):
    for t in threads[start:start + 4]:
        t.start()
    for t in threads[start:start + 4]:
        t.join()

# json_object: any object.
objects = []
for k in range(4):
    text, _ = ask({"type": "json_object"}, seed=k, stream=k == 1)
    why = check({"type": "object"}, text)
    objects.append(why or "ok")
out["json_object"] = objects
# Greedy and text format: the same answer as without response_format.
out["text_format_same"] = ask({"type": "text"}, seed=1, stream=False, temperature=0) == ask(None, seed=1, stream=False, temperature=0)

# Bad formats: 400 with the parameter named.
bad = {}
for name, body in {
    "unsupported_keyword": {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "email"}}}},
    "bad_type": {"response_format": {"type": "yaml"}},
    "not_object": {"response_format": "json"},
    "schema_not_object": {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
    "grammar": {"grammar": "root ::= \"a\""},
}.items():
    try:
        if endpoint == "chat":
            client.chat.completions.create(model=model, messages=messages, max_tokens=4, extra_body=body)
        else:
            client.completions.create(model=model, prompt=prompt, max_tokens=4, extra_body=body)
        bad[name] = "accepted"
    except openai.BadRequestError as e:
        bad[name] = "400 " + str((e.body or {}).get("param")) + " " + str((e.body or {}).get("message", ""))[:120]
out["bad"] = bad
print(json.dumps(out))
