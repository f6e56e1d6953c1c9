#!/usr/bin/env python3
"""A small instruction task from the TinyStories text at hand, for `gemma3 finetune`:
"Write a short story with these three words: …" → a TinyStories story that contains them.

Usage: python3 scripts/make-story-task.py [--source ../shared/data/tinystories/train.txt] [--count 300]
                                          [--max-chars 600] [--seed 1] > stories.jsonl

Stories are separated by <|endoftext|> lines; those up to --max-chars characters are taken in file
order after a seeded shuffle; the three words are distinct lowercase words of 4+ letters from the story
(not in a small stop list), in the order they appear. Each line is {"messages": [user, assistant]}.
`gemma3 finetune` holds out a tenth of the lines by hash unless --val-data is given.
"""
import argparse, json, random, re, sys, zlib

STOP = set("that this with they them then there their what when were have from into said very your about after "
           "could would will just like some made much more once upon time were went little".split())

p = argparse.ArgumentParser()
p.add_argument("--source", default="../shared/data/tinystories/train.txt")
p.add_argument("--count", type=int, default=300)
p.add_argument("--max-chars", type=int, default=600)
p.add_argument("--seed", type=int, default=1)
a = p.parse_args()

text = open(a.source, encoding="utf-8").read()
stories = [s.strip() for s in re.split(r"^<\|endoftext\|>\s*$", text, flags=re.M)]
stories = [s for s in stories if 80 <= len(s) <= a.max_chars]
random.Random(a.seed).shuffle(stories)
out = 0
for story in stories:
    seen, words = set(), []
    for w in re.findall(r"[A-Za-z]+", story):
        lw = w.lower()
        if len(lw) >= 4 and lw not in STOP and lw not in seen and w == lw:
            seen.add(lw)
            words.append(lw)
    if len(words) < 3:
        continue
    rng = random.Random(zlib.crc32(story.encode()) ^ a.seed)
    picked = sorted(rng.sample(range(len(words)), 3))
    three = [words[i] for i in picked]
    prompt = f"Write a short story with these three words: {three[0]}, {three[1]}, {three[2]}."
    print(json.dumps({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": story}]}, ensure_ascii=False))
    out += 1
    if out == a.count:
        break
print(f"{out} examples", file=sys.stderr)
