#!/usr/bin/env python3
"""A bounded load test of an OpenAI-compatible server (gemma3 serve), through the official `openai` client.

    scripts/serve-load-test.py --base-url http://127.0.0.1:8080/v1 --requests 500 --concurrency 16

Sends --requests completions from --concurrency concurrent workers: a mix of streamed and whole
responses, every --cancel-every-th streamed one closed after its first chunk (a client that hangs up
mid-stream). Checks that no request got a 5xx or a transport error, that every request that was not
cancelled was answered exactly once and completely (a finish_reason; a stream's chunks all carry
the request's own id), and that /health is still 200 afterwards. Stops at --time-limit seconds.
Prints one JSON object; exits 1 when a check failed.
"""
import argparse
import asyncio
import json
import sys
import time
import urllib.request

import openai


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", default="model")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--cancel-every", type=int, default=7, help="close every n-th streamed request after its first chunk")
    ap.add_argument("--time-limit", type=float, default=240)
    ap.add_argument("--api-key", default="none")
    args = ap.parse_args()

    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.requests):
        queue.put_nowait(i)
    outcomes: dict[int, str] = {}
    errors: list[str] = []
    counts = {"streamed": 0, "whole": 0, "cancelled": 0, "completion_tokens": 0}
    deadline = time.monotonic() + args.time_limit

    async def one(i: int) -> None:
        prompt = f"Request {i}: once upon a time"
        streamed = i % 2 == 0
        cancel = streamed and (i // 2) % args.cancel_every == 0
        try:
            if not streamed:
                r = await client.completions.create(model=args.model, prompt=prompt, max_tokens=args.max_tokens,
                                                    temperature=0.8, seed=i)
                if not r.choices or r.choices[0].finish_reason not in ("stop", "length"):
                    errors.append(f"request {i}: no finish_reason in {r}")
                    return
                counts["whole"] += 1
                counts["completion_tokens"] += r.usage.completion_tokens if r.usage else 0
            else:
                stream = await client.completions.create(model=args.model, prompt=prompt, max_tokens=args.max_tokens,
                                                         temperature=0.8, seed=i, stream=True)
                ids, finish = set(), None
                async for chunk in stream:
                    ids.add(chunk.id)
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                    if cancel:
                        await stream.close()
                        break
                if cancel:
                    counts["cancelled"] += 1
                else:
                    if finish not in ("stop", "length"):
                        errors.append(f"request {i}: stream ended without a finish_reason")
                        return
                    if len(ids) != 1:
                        errors.append(f"request {i}: chunks of {len(ids)} different ids")
                        return
                    counts["streamed"] += 1
            if i in outcomes:
                errors.append(f"request {i}: answered twice")
            outcomes[i] = "ok"
        except openai.APIStatusError as e:
            errors.append(f"request {i}: HTTP {e.status_code}: {str(e)[:200]}")
        except Exception as e:  # transport errors, timeouts
            errors.append(f"request {i}: {type(e).__name__}: {str(e)[:200]}")

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await one(i)

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    wall = time.monotonic() - start
    await client.close()
    health_url = args.base_url.rsplit("/v1", 1)[0] + "/health"
    try:
        health = urllib.request.urlopen(health_url, timeout=10).status
    except Exception as e:
        health = str(e)
    lost = args.requests - len(outcomes) - sum(1 for e in errors if "answered twice" not in e)
    summary = {"requests": args.requests, "concurrency": args.concurrency, "answered": len(outcomes), **counts,
               "errors": len(errors), "first_errors": errors[:5], "lost": lost, "health_after": health,
               "wall_seconds": wall, "timed_out": queue.qsize() > 0}
    print(json.dumps(summary))
    ok = not errors and lost == 0 and health == 200 and queue.qsize() == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
