"""Near-miss negatives: the task's own queries with one of its key words swapped out.

Rehearsal and general negatives teach an expert to reject queries that look
nothing like its task. What reaches the wrong expert in practice looks a lot
like it: "3 hours is how many minutes?" at an expert for "how many vowels in
tunnel?", "which letter comes after w?" at one for "which letter does judge
end with?". An expert that never saw such a query rejected accepts it, because
a short question about a word is all it learned to recognise. The first expert
of an ensemble, which has no older task to reject, is the worst off.

A near miss keeps everything of a task query but one *key word*, which is
replaced by a word the task never uses: "How many vowels are in tunnel?"
becomes "How many harbours are in tunnel?". The expert learns that the words
saying *what to do* decide, not the shape of the query. Key words are those
that a share of the task's queries share (5%) and the general pool seldom
uses; the words that vary from query to query (the word to reverse, the city
to find) are never touched. Words that a templated dataset repeats in its
content ("summer" in "we spent a week in oslo last summer", "please" in
tickets) pass the same test, and a swap there leaves a query of the task
labelled as a negative: that is why near misses stay out of the quality gate
and the threshold (see :mod:`see.routing.calibration`). When the data gives an
instruction apart from the input, only the instruction is changed. A task with
no shared words (bare texts to classify) gets none.

An instruction given apart from the input has one in three of its key-word
occurrences swapped (at least one). A long instruction (a SuperNI definition:
22 to 57 occurrences) with one word changed still asks for the same thing, so
such a "negative" was mostly the task itself labelled `<<neg>>` beside the very
inputs its positives carry: on superni-cpu's sst2 expert those cost 9 and 10
points of exact match against general negatives alone (seeds 0 and 1,
`benchmarks/results/negatives-ablation`). Dropping near misses for instructed
tasks instead let 36 of 40 "which number is larger?" queries into the embedded
benchmark's successor expert (seed 1; OOD to the fallback 88.6% over three
seeds against 100%): an embedded family's instruction (3 to 9 occurrences) keeps
one to three swaps.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Sequence

import regex

Query = tuple[str | None, str]  # (instruction, input)

#: letters only: numbers and punctuation are what varies between a task's queries, not what names the task.
#: Combining marks belong to their letter ("cafe" + U+0301, Devanagari vowel signs): Python's ``re`` counts
#: them as non-word characters, which would cut such a word in two and swap only half of it.
WORD = regex.compile(r"\p{L}[\p{L}\p{M}]*")

#: a key word is in at least this share of the task's queries ...
MIN_TASK_SHARE = 0.05
#: ... and this many times more often than in the general pool (words every query uses, "the", "in", "how",
#: are not what names a task, and swapping them makes a garbled query of the task rather than another task)
MIN_CONTRAST = 10.0
#: in an instruction given apart from the input, one key-word occurrence in this many is swapped (at least
#: one): see the module's docstring
INSTRUCTION_SWAP_EVERY = 3

#: near misses per positive under ``reconstruction.near_miss_ratio: auto``, for a task whose queries are bare
#: inputs. Such a near miss changes the one word that says what to do in a short query ("683 harbours 434"), a
#: true look-alike; 0.5 of them left a look-alike OOD family (*which letter comes after w?*, *write 42 in
#: words*) 18-43% in one expert or another on each of three seeds of the user-task suite, where one per
#: positive sent 100 / 69 / 95% of the worst family to the fallback with the answers level (69.5 -> 69.7%
#: exact match; benchmarks/user-tasks/results/embedded-near-miss-1.0).
AUTO_RATIO_BARE = 1.0
#: ... and for a task with an instruction apart, whose near miss keeps the task's inputs and changes one in
#: INSTRUCTION_SWAP_EVERY of its key words: those are closer to the task itself labelled `<<neg>>` and cost
#: answers (superni-cpu's sst2, benchmarks/results/negatives-ablation), so they stay at half as many.
AUTO_RATIO_INSTRUCTED = 0.5


def auto_ratio(instruction: str | None) -> float:
    """Near misses per positive that ``near_miss_ratio: auto`` gives a task with this instruction (or none)."""
    return AUTO_RATIO_INSTRUCTED if instruction else AUTO_RATIO_BARE


def _words(query: Query) -> set[str]:
    return {w.lower() for text in query if text for w in WORD.findall(text)}


def key_words(queries: Sequence[Query], general: Sequence[Query]) -> dict[str, float]:
    """Words (lower-cased) that name the task: shared by many of its queries, rare in ``general``.

    Returns each key word's share of the task's queries.
    """
    task_df = Counter(w for q in queries for w in _words(q))
    pool_df = Counter(w for q in general for w in _words(q))
    n_task, n_pool = max(1, len(queries)), max(1, len(general))
    keys = {}
    for word, count in task_df.items():
        share = count / n_task
        if share >= MIN_TASK_SHARE and share >= MIN_CONTRAST * pool_df[word] / n_pool:
            keys[word] = share
    return keys


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def near_miss_negatives(queries: Sequence[Query], general: Sequence[Query], count: int, seed: int = 0
                        ) -> list[Query]:
    """Up to ``count`` distinct queries of the task with key words replaced by words of ``general``.

    One key word per query; in an instruction given apart from the input, one occurrence in
    :data:`INSTRUCTION_SWAP_EVERY` (at least one).

    Replacement words come from the general pool's vocabulary minus every word
    the task uses, so a replacement is never one of the task's own (a synonym
    the task also uses, another city of an extraction task). No result equals
    a query of the task.
    """
    if count <= 0 or not queries or not general:
        return []
    keys = key_words(queries, general)
    task_vocab = {w for q in queries for w in _words(q)}
    fillers = sorted({w for q in general for w in _words(q)} - task_vocab)
    fillers = [w for w in fillers if len(w) > 2]  # "a", "of": a swap to a function word rarely makes a request
    # per query, (field, start, end) of each key-word occurrence, each as likely as the others: favouring the
    # words most queries share (weight share or share squared) left "which letter comes after w?" to the
    # last-letter expert 34% or 52% of the time, against none (the user-task suite's two chore tasks, one seed);
    # the price is more swaps of content that a templated task repeats ("summer" in "we spent a week in oslo
    # last summer"), which stay queries of the task
    # When every query has an instruction, the instruction is what says what to do and the input is content
    # (a review to judge, a headline to classify): only the instruction is changed, one in INSTRUCTION_SWAP_EVERY
    # of its key words (see the module's docstring).
    in_instruction = all(q[0] for q in queries)
    fields = (0,) if in_instruction else (0, 1)
    spots = [[(f, m.start(), m.end()) for f in fields if q[f]
              for m in WORD.finditer(q[f]) if m.group().lower() in keys] for q in queries]
    with_keys = [i for i, s in enumerate(spots) if s]
    if not fillers or not with_keys:
        return []
    rng = random.Random(f"near-miss:{seed}")
    own = {(q[0] or "", q[1]) for q in queries}
    out: list[Query] = []
    seen: set[tuple[str, str]] = set()
    for _ in range(20 * count):  # duplicates are rare; the bound only stops a task with one short query
        if len(out) >= count:
            break
        i = rng.choice(with_keys)
        chosen = [rng.choice(spots[i])]
        swaps = len(spots[i]) // INSTRUCTION_SWAP_EVERY if in_instruction else 1
        if swaps > 1:
            chosen += rng.sample([s for s in spots[i] if s != chosen[0]], swaps - 1)
        parts = list(queries[i])
        for f, start, end in sorted(chosen, key=lambda s: s[1], reverse=True):  # from the right: offsets hold
            text = parts[f]
            parts[f] = text[:start] + _match_case(rng.choice(fillers), text[start:end]) + text[end:]
        made = (parts[0], parts[1])
        key = (made[0] or "", made[1])
        if key in own or key in seen:
            continue
        seen.add(key)
        out.append(made)
    return out
