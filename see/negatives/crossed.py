"""Crossed negatives: other queries carrying the task's own content.

Near misses (:mod:`see.negatives.near_miss`) keep a task query's content and change what it asks; a crossed
negative does the reverse: a query the expert must reject anyway (an earlier task's kept query, a general
negative) with one of its varying tokens replaced by one of the task's: "which letter does 'judge' end
with?" becomes "which letter does '629' end with?" at an expert for "what is 629 + 652?". An expert whose
positives all carry numbers, and whose negatives seldom do, learns "numbers, so accept": "49 in letters?"
reached the add expert of the user-task suite 31% of the time while it rejected 96% of its held-out near
misses. Crossed negatives put the task's content under other wordings, so that the wording decides.

A varying token (a *slot*) is a word or number in under :data:`~see.negatives.near_miss.MIN_TASK_SHARE` of
its own group's queries (one earlier task's kept queries, or the general pool), so that a host keeps the
words that say what it asks. The task's content is likewise its inputs' tokens in under that share of its
queries: the word to reverse, the operands, the city. Only inputs change; an instruction given apart is left
as it is. A result equal to one of the task's queries is dropped.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

import regex

from see.negatives.near_miss import MIN_TASK_SHARE, Query

#: a word (letters and their combining marks) or a number (digits, with a decimal part)
TOKEN = regex.compile(r"\d+(?:[.,]\d+)?|\p{L}[\p{L}\p{M}]*")


def _rare_tokens(queries: Sequence[Query]) -> set[str]:
    """Tokens (lower-cased) of the inputs in under MIN_TASK_SHARE of ``queries``: what varies among them."""
    df = Counter(t for q in queries for t in {m.lower() for m in TOKEN.findall(q[1])})
    n = max(1, len(queries))
    return {t for t, c in df.items() if c / n < MIN_TASK_SHARE}


def content_tokens(queries: Sequence[Query]) -> list[str]:
    """The task's varying tokens, as written (first spelling seen), in a fixed order."""
    rare = _rare_tokens(queries)
    seen: dict[str, str] = {}
    for q in queries:
        for m in TOKEN.findall(q[1]):
            seen.setdefault(m.lower(), m)
    return [seen[t] for t in sorted(rare)]


def crossed_negatives(queries: Sequence[Query], hosts: Sequence[Sequence[Query]], count: int, seed: int = 0
                      ) -> list[Query]:
    """Up to ``count`` distinct queries of ``hosts`` (groups: each earlier task's kept queries, the general
    pool) with one varying token replaced by a varying token of the task's ``queries``."""
    if count <= 0:
        return []
    content = content_tokens(queries)
    if not content:
        return []
    spots: list[tuple[Query, list[tuple[int, int]]]] = []
    for group in hosts:
        rare = _rare_tokens(group)
        for q in group:
            slots = [(m.start(), m.end()) for m in TOKEN.finditer(q[1]) if m.group().lower() in rare]
            if slots:
                spots.append((q, slots))
    if not spots:
        return []
    rng = random.Random(f"crossed:{seed}")
    own = {(q[0] or "", q[1]) for q in queries}
    out: list[Query] = []
    seen: set[tuple[str, str]] = set()
    for _ in range(20 * count):  # the bound only stops a small pool that runs out of new results
        if len(out) >= count:
            break
        (instruction, text), slots = rng.choice(spots)
        start, end = rng.choice(slots)
        made = (instruction, text[:start] + rng.choice(content) + text[end:])
        key = (made[0] or "", made[1])
        if key in own or key in seen or made[1] == text:
            continue
        seen.add(key)
        out.append(made)
    return out
