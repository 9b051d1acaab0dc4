"""The tasks of a benchmark stream, sampled per seed, with disjoint train and test parts."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from see.data import Task, load_task

EMBEDDED_PREFIX = "embedded:"


@dataclass
class StreamTask:
    name: str
    metric: str
    train: Task
    test: Task
    note: str | None = None


def _load(spec: Any, split: str, n: int, seed: int, purpose: str, source: str | None = None) -> Task:
    if spec.source.startswith(EMBEDDED_PREFIX):
        from see.embedded.families import make_task

        family = spec.source[len(EMBEDDED_PREFIX):]
        # the generator's train and test streams are independent, so each split is its own draw
        return make_task(family, n, seed=seed, split=split)
    return load_task(source or spec.source, name=spec.name, format=spec.format, input_field=spec.input_field,
                     output_field=spec.output_field if purpose != "negatives" else None,
                     instruction=spec.instruction, split=split)


def _sample(task: Task, n: int, seed: int) -> Task:
    return task.sample(n, seed)


def stream_task(spec: Any, budget: Any, seed: int) -> StreamTask:
    """Seeded train/test subsets of one stream task."""
    n_train, n_test = int(budget.train_examples), int(budget.test_examples)
    note = None
    if spec.source.startswith(EMBEDDED_PREFIX):
        train = _load(spec, "train", n_train, seed, "stream")
        test = _load(spec, "test", n_test, seed, "stream")
    elif getattr(spec, "test_source", None):
        train = _sample(_load(spec, spec.train_split, 0, seed, "stream"), n_train, seed)
        test = _sample(_load(spec, spec.test_split, 0, seed, "stream", source=spec.test_source), n_test, 0)
    elif spec.train_split == spec.test_split:
        full = _load(spec, spec.train_split, 0, seed, "stream")
        idx = list(range(len(full)))
        random.Random(f"split/{spec.name}").shuffle(idx)  # fixed across seeds: the test set never moves
        test_ids, train_ids = idx[:n_test], idx[n_test:]
        pick = lambda ids: Task(full.name, [full.examples[i] for i in sorted(ids)], full.instruction,  # noqa: E731
                                full.source)
        test = pick(test_ids)
        train = _sample(pick(train_ids), n_train, seed)
        note = (f"{spec.name}: no separate '{spec.test_split}' split was used; its '{spec.train_split}' split was "
                f"divided with a fixed seed into {len(test)} test and up to {len(train_ids)} training examples")
    else:
        train = _sample(_load(spec, spec.train_split, 0, seed, "stream"), n_train, seed)
        test = _sample(_load(spec, spec.test_split, 0, seed, "stream"), n_test, 0)  # same test set every seed
    train.name = test.name = spec.name
    return StreamTask(spec.name, spec.metric, train, test, note)


def query_task(spec: Any, n: int, seed: int, purpose: str) -> Task:
    """OOD queries or general negatives: ``n`` examples (inputs are what matter)."""
    if spec.source.startswith(EMBEDDED_PREFIX):
        task = _load(spec, "test" if purpose == "ood" else "train", n, seed, purpose)
    else:
        task = _sample(_load(spec, spec.test_split if purpose == "ood" else spec.train_split, 0, seed, purpose),
                       n, seed)
    task.name = spec.name
    return task
