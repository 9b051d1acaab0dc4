"""Task reconstruction: a task becomes positives and negatives for one expert.

Positives are the task's examples with target ``<<pos>> answer``. Negatives
are queries the expert must reject, with target ``<<neg>>``: a rehearsal
sample of earlier tasks (an expert only has to reject *older* tasks, since
newer experts see a query first), a pool of general negatives, so that an
expert also rejects what no task of the stream looks like, and near misses:
the task's own queries with a key word swapped (:mod:`see.negatives.near_miss`),
so that it rejects what looks like its task but asks for something else.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from see.data import Task
from see.negatives.crossed import crossed_negatives
from see.negatives.near_miss import auto_ratio, near_miss_negatives

Query = tuple[str | None, str]  # (instruction, input)

#: origin of near-miss negatives: made by a heuristic, so a few are queries of the task after all; they are
#: trained on, but not counted where a wrong label would mislead (the quality gate, the threshold)
NEAR_MISS = "near-miss"
#: origin of crossed negatives (:mod:`see.negatives.crossed`): other queries carrying the task's content
CROSSED = "crossed"


@dataclass(frozen=True)
class TrainingExample:
    instruction: str | None
    input: str
    #: "pos" or "neg"
    kind: str
    #: the answer after <<pos>>; None for negatives
    answer: str | None
    #: where the example came from: the task name, "rehearsal:<task>", "general", "near-miss" or "crossed"
    origin: str


class RehearsalBuffer:
    """Queries of earlier tasks kept in the ensemble, per task, in expert order."""

    def __init__(self, per_task: dict[str, list[Query]] | None = None):
        self.per_task: dict[str, list[Query]] = dict(per_task or {})

    @staticmethod
    def sample_task(task: Task, size: int, seed: int) -> list[Query]:
        picked = task.sample(size, seed) if size < len(task) else task
        return [(picked.instruction, ex.input) for ex in picked.examples]

    def add(self, name: str, queries: list[Query]) -> None:
        self.per_task[name] = list(queries)

    def __len__(self) -> int:
        return sum(len(v) for v in self.per_task.values())



def _allocate(total: int, sizes: dict[str, int], minimum: int) -> dict[str, int]:
    """Split ``total`` negatives over earlier tasks: at least ``minimum`` each when available,
    the rest in proportion to what each buffer holds."""
    alloc = {k: min(minimum, n) for k, n in sizes.items()}
    remaining = max(0, total - sum(alloc.values()))
    capacity = {k: sizes[k] - alloc[k] for k in sizes}
    cap_total = sum(capacity.values())
    if remaining and cap_total:
        shares = {k: remaining * capacity[k] / cap_total for k in sizes}
        extra = {k: min(capacity[k], int(math.floor(shares[k]))) for k in sizes}
        leftover = min(remaining, cap_total) - sum(extra.values())
        for k in sorted(sizes, key=lambda k: shares[k] - extra[k], reverse=True):
            if leftover <= 0:
                break
            if extra[k] < capacity[k]:
                extra[k] += 1
                leftover -= 1
        alloc = {k: alloc[k] + extra[k] for k in sizes}
    return alloc


def reconstruct_task(task: Task, rehearsal: RehearsalBuffer | None = None,
                     general: Sequence[Query] = (), *, negative_ratio: float = 0.2,
                     min_negatives_per_task: int = 1, general_negative_ratio: float = 0.2,
                     near_miss_ratio: float | str = 0.0, crossed_ratio: float = 0.0, seed: int = 0
                     ) -> list[TrainingExample]:
    """Positives of ``task`` plus rehearsal and general negatives, shuffled with ``seed``.

    Sizes: ``negative_ratio * len(task)`` rehearsal negatives spread over the
    earlier tasks (at least ``min_negatives_per_task`` from each when its
    buffer has them), and ``general_negative_ratio * len(task)`` general
    negatives, and ``near_miss_ratio * len(task)`` near misses made from the
    task's queries and the general pool's words (none without a general pool;
    ``auto``: :func:`see.negatives.near_miss.auto_ratio`), and ``crossed_ratio * len(task)``
    earlier tasks' kept queries and general negatives carrying the task's content (:mod:`see.negatives.crossed`).
    The first expert has no rehearsal: it gets general negatives and near misses.
    """
    if near_miss_ratio == "auto":
        near_miss_ratio = auto_ratio(task.instruction)
    rng = random.Random(seed)
    out = [TrainingExample(task.instruction, ex.input, "pos", ex.output, task.name) for ex in task.examples]
    n_pos = len(out)
    queries = [(task.instruction, ex.input) for ex in task.examples]
    earlier = {k: v for k, v in (rehearsal.per_task.items() if rehearsal is not None else ()) if k != task.name}
    if earlier:
        alloc = _allocate(int(round(negative_ratio * n_pos)), {k: len(v) for k, v in earlier.items()},
                          min_negatives_per_task)
        for name, count in alloc.items():
            for instruction, text in rng.sample(earlier[name], count):
                out.append(TrainingExample(instruction, text, "neg", None, f"rehearsal:{name}"))
    if general:
        own = {ex.input for ex in task.examples}
        general = [q for q in general if q[1] not in own]  # a task's own query is never its negative
        count = min(len(general), int(round(general_negative_ratio * n_pos)))
        for instruction, text in rng.sample(general, count):
            out.append(TrainingExample(instruction, text, "neg", None, "general"))
        for instruction, text in near_miss_negatives(queries, general, int(round(near_miss_ratio * n_pos)), seed):
            out.append(TrainingExample(instruction, text, "neg", None, NEAR_MISS))
    hosts = [v for v in earlier.values() if v] + ([list(general)] if general else [])
    for instruction, text in crossed_negatives(queries, hosts, int(round(crossed_ratio * n_pos)), seed):
        out.append(TrainingExample(instruction, text, "neg", None, CROSSED))
    rng.shuffle(out)
    return out


def count_by_origin(examples: Iterable[TrainingExample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ex in examples:
        counts[ex.origin] = counts.get(ex.origin, 0) + 1
    return counts


def split_heldout(examples: list[TrainingExample], fraction: float, cap: int
                  ) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Hold out a share of positives and of negatives (each capped), keeping the order otherwise."""
    held_ids: set[int] = set()
    for kind in ("pos", "neg"):
        ids = [k for k, ex in enumerate(examples) if ex.kind == kind]
        n = min(cap, int(round(len(ids) * fraction)))
        if fraction > 0 and len(ids) >= 4:
            n = max(1, n)
        held_ids.update(ids[:n])  # examples are already shuffled by reconstruct_task
    train = [ex for k, ex in enumerate(examples) if k not in held_ids]
    held = [ex for k, ex in enumerate(examples) if k in held_ids]
    return train, held


@dataclass
class Reconstruction:
    """One expert's data: what it trains on, what it is evaluated on, and where each example came from."""

    train: list[TrainingExample]
    heldout: list[TrainingExample]
    counts: dict[str, int] = field(default_factory=dict)


def reconstruct(task: Task, rehearsal: RehearsalBuffer | None, general: Sequence[Query], settings,
                eval_fraction: float, eval_max: int, seed: int) -> Reconstruction:
    """:func:`reconstruct_task` with the config's ``reconstruction`` section, then the held-out split."""
    examples = reconstruct_task(task, rehearsal, general, negative_ratio=settings.negative_ratio,
                                min_negatives_per_task=settings.min_negatives_per_task,
                                general_negative_ratio=settings.general_negative_ratio,
                                near_miss_ratio=settings.near_miss_ratio, crossed_ratio=settings.crossed_ratio,
                                seed=seed)
    train, heldout = split_heldout(examples, eval_fraction, eval_max)
    return Reconstruction(train, heldout, count_by_origin(examples))
