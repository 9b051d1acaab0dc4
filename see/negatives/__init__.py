"""The general-negatives pool shipped for every base.

Each expert learns to answer its own task and to say ``<<neg>>`` to anything
else. Rehearsal teaches it to reject earlier tasks; general negatives teach it
to reject the unknown: queries from no particular task, without which the
first expert, and every later one, may accept queries of tasks it has never
seen. ``general.jsonl`` holds a few hundred such queries of the kinds people
send to language models (questions, requests, code, rewriting, translation,
chit-chat, bare snippets), about a third with an instruction. No narrow task
type fills more than a small share of it, so a user's own task of that type
is not largely taught as a negative.

``build_pool.py`` generates the file, deterministically, from hand-written
lists; see ``README.md`` beside it for its composition.

Licence: written for this project and released with it under Apache-2.0. It
contains no third-party text.
"""
from __future__ import annotations

import json
from pathlib import Path

POOL_FILE = Path(__file__).resolve().parent / "general.jsonl"


def general_pool() -> list[tuple[str | None, str]]:
    """(instruction, input) pairs of the shipped pool, in file order; instruction is None for a bare input."""
    pool = []
    with POOL_FILE.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                pool.append((row.get("instruction"), row["input"]))
    return pool
