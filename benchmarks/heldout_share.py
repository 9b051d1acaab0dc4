"""How much of SEE's gap to the oracle is the share an expert holds out for its threshold?

SEE's expert for a task trains on the task minus its held-out share (``train.eval_fraction``, at most
``train.eval_max`` examples), which sets its acceptance threshold; the oracle trains on all of it. This trains
the oracle's plain LoRA (``Context.train_plain``, every setting of the config) on ``--examples`` of one stream
task's training examples (a seeded subset of the ones the bench's oracle trained on) and scores it on the
bench's test set for that task and seed, so the score sits beside the bench's oracle and SEE cells.

    python benchmarks/heldout_share.py benchmarks/cl-standard.yaml --task yelp --seed 0 --examples 900 \\
        --out benchmarks/results/heldout-share

Each run appends one line to ``OUT/results.jsonl`` (task, seed, examples, steps, score, seconds, commit).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    from see.bench.config import load_bench_config
    from see.bench.methods import Answer, Context, Method
    from see.bench.runner import _cell_value, _git_commit, _queries, _stream

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--task", required=True, help="a stream task's name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, required=True, help="training examples (of the bench's)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args(argv)  # key=value overrides may follow the options

    cfg = load_bench_config(args.config, args.overrides)
    tasks = _stream(cfg, args.seed, [])
    names = [t.name for t in tasks]
    if args.task not in names:
        parser.error(f"--task {args.task!r} is not in the stream ({', '.join(names)})")
    task = tasks[names.index(args.task)]
    if not 0 < args.examples <= len(task.train.examples):
        parser.error(f"--examples must be 1..{len(task.train.examples)} (the bench's training examples)")
    subset = task.train.sample(args.examples, args.seed)
    work = args.out / "work" / f"{args.task}-seed{args.seed}-n{args.examples}"
    ctx = Context(cfg, args.seed, work, tasks, [], print)
    start = time.time()
    model, result = ctx.train_plain(ctx.examples(subset))
    model.eval()

    class SubsetLora(Method):
        name = "subset-lora"  # its folder under work/

    texts = SubsetLora(ctx)._gen(model, ctx.prompts(_queries(task.test)))  # the bench's greedy answers
    cell = _cell_value([Answer(t) for t in texts], task.test, task.metric)
    record = {"config": args.config, "task": args.task, "seed": args.seed, "examples": len(subset.examples),
              "steps": result.steps, "metric": task.metric, "score": round(100 * cell["score"], 2),
              "test_examples": cell["n"], "seconds": round(time.time() - start, 1), "commit": _git_commit(),
              "overrides": args.overrides}
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
