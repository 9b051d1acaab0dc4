"""How much arithmetic and letter play a base model has before any expert is trained on it.

    python benchmarks/embedded-base/probe_skills.py BASE_DIR [--n 100] [--json OUT]

Greedy continuations of prompts in the pretraining statements' own form (``345 + 27 =``,
``512 - 87 =``, ``falcon reversed is``), with fresh random operands, scored by exact match on
the first word of the continuation. A LoRA expert maps a user's wording onto a skill the base
already has; when this probe reads 0%, an expert for sums or reversed words has nothing to map onto
(see README.md here).

``--sums FILE`` and ``--differences FILE`` add ``sum_task`` and ``difference_task``: the operands of an
add or subtract task's queries (any format ``see add-expert`` reads), asked in the form above.

``--words FILE`` adds ``reversal_words``: the same reversal prompt for each row's ``output`` of a
reverse-a-word task file, read back to the word it reverses. Random strings split into
one- and two-letter tokens; a user's real words split into longer ones, which a base must spell
before it can reverse them.
"""
from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path


def first_word(continuation: str) -> str:
    """The answer a continuation gives. Any whitespace ends it: pretraining packs statements with spaces
    or newlines, so a base that is right writes ``372\\nthe sum`` as often as ``372 the sum``."""
    words = continuation.split()
    return words[0] if words else ""


def words_probe(path: Path) -> list[tuple[str, str]]:
    from see.data import load_task

    return [(f"{ex.outputs[0][::-1]} reversed is", ex.outputs[0]) for ex in load_task(path).examples]


def base_form(query: str, op: str) -> str:
    """A sum's or difference's first two numbers in the form pretraining states them (``635 - 591 =``)."""
    import re

    numbers = [int(n) for n in re.findall(r"\d+", query)]
    if len(numbers) < 2:
        raise ValueError(f"{query!r}: an add or subtract query needs two numbers")
    a, b = numbers[:2]
    return f"{a} + {b} =" if op == "sum" else f"{max(a, b)} - {min(a, b)} ="


def operands_probe(path: Path, op: str) -> list[tuple[str, str]]:
    """The operands of an add or subtract task's queries, asked in the base's own form against the task's
    answer. Set beside the task's expert, this tells a base that cannot compute from an expert that does
    not use what its base computes."""
    from see.data import load_task

    return [(base_form(ex.input, op), ex.outputs[0]) for ex in load_task(path).examples]


def probes(n: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    rng = random.Random(seed)
    out: dict[str, list[tuple[str, str]]] = {"sum": [], "difference": [], "reversal": []}
    for _ in range(n):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        out["sum"].append((f"{a} + {b} =", str(a + b)))
        out["difference"].append((f"{max(a, b)} - {min(a, b)} =", str(max(a, b) - min(a, b))))
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 7)))
        out["reversal"].append((f"{word} reversed is", word[::-1]))
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path)
    p.add_argument("--n", type=int, default=100, help="prompts per skill")
    p.add_argument("--seed", type=int, default=1234, help="operands' seed (not the pretraining corpus's)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--words", type=Path, default=None,
                   help="a reverse-a-word task file (any format add-expert reads): also probe reversal of its answers")
    p.add_argument("--sums", type=Path, default=None,
                   help="an add-two-numbers task file: also probe its operands in the base's form (`sum_task`)")
    p.add_argument("--differences", type=Path, default=None,
                   help="a subtract task file: also probe its operands in the base's form (`difference_task`)")
    args = p.parse_args(argv)

    tok = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base).eval()
    result: dict = {"base": str(args.base), "n": args.n, "seed": args.seed, "exact_match": {}, "examples": {}}
    table = probes(args.n, args.seed)
    if args.words is not None:
        table["reversal_words"] = words_probe(args.words)
        result["words"] = str(args.words)
    for op, path in (("sum", args.sums), ("difference", args.differences)):
        if path is not None:
            table[f"{op}_task"] = operands_probe(path, op)
            result[f"{op}_task"] = str(path)
    for skill, pairs in table.items():
        right = 0
        for i, (prompt, answer) in enumerate(pairs):
            ids = tok(prompt, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            got = first_word(text)
            right += got == answer
            if i < 3:
                result["examples"].setdefault(skill, []).append({"prompt": prompt, "answer": answer, "got": text})
        result["exact_match"][skill] = round(100 * right / len(pairs), 1)
    info = args.base / "build_info.json"
    if info.is_file():
        result["build"] = json.loads(info.read_text())
    print(json.dumps(result["exact_match"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
