"""Which answers a method gave on a closed-answer task, against the gold ones, from a bench run's cells.

A gap between two methods on a classification task says how many answers differ, not which: this reads the
answers a cell stored (every cell since `067b497`) and the task's test examples (read again from the run's
saved config by the bench's own loader, so the same seed gives the same queries), and prints the gold ×
answer table and each label's hits.

    python benchmarks/answer_confusion.py benchmarks/results/negatives-ablation/yelp-third-expert \\
        --method see --seed 0 --row 2 --task yelp
"""
from __future__ import annotations

import argparse
from pathlib import Path


def confusion_table(folder: Path, method: str, seed: int, row: int, task: str) -> str:
    from see.bench.config import load_bench_config
    from see.bench.runner import Cells, _stream
    from see.metrics import answer_confusion

    cfg = load_bench_config(folder / "config.yaml")
    names = [t.name for t in cfg.stream]
    if task not in names:
        raise SystemExit(f"--task {task!r}: the run's stream is {', '.join(names)}")
    col = names.index(task)
    cells = Cells(folder)
    cell = cells.get(method, seed, row, col)
    if cell is None or "answers" not in cell:
        raise SystemExit(f"{cells.path(method, seed, row, col)}: no such cell, or it stored no answers "
                         "(cells store them since 067b497)")
    examples = _stream(cfg, seed, [])[col].test.examples
    gold = [ex.outputs[0] for ex in examples]
    if len(gold) != len(cell["answers"]):
        raise SystemExit(f"{cells.path(method, seed, row, col)}: {len(cell['answers'])} answers for "
                         f"{len(gold)} test queries; was the data changed since the run?")
    labels = sorted(set(gold))
    C = answer_confusion(gold, cell["answers"], labels)
    lines = [f"{method}, seed {seed}, R[{row}][{col}] ({task}): exact match {100 * cell['score']:.1f} "
             f"on {len(gold)} queries (commit {cell.get('commit', '?')})", "",
             "| gold \\ answer | " + " | ".join(labels) + " | other | hits |",
             "|---|" + "---|" * (len(labels) + 2)]
    for k, g in enumerate(labels):
        lines.append(f"| {g} | " + " | ".join(str(n) for n in C[k]) + f" | {C[k][k]} of {sum(C[k])} |")
    lines.append("| answered | " + " | ".join(str(sum(C[k][a] for k in range(len(labels))))
                                            for a in range(len(labels) + 1)) + " | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a `see bench` output folder (its config.yaml and cells/)")
    parser.add_argument("--method", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--row", type=int, required=True, help="after which task (0-based)")
    parser.add_argument("--task", required=True, help="the evaluated task's name")
    args = parser.parse_args(argv)
    table = confusion_table(args.folder, args.method, args.seed, args.row, args.task)
    print(table, end="")
    return table


if __name__ == "__main__":
    main()
