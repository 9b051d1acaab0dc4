"""Compare one task's diagonal cell across benchmark runs, paired by query, from the committed cells.

An ablation runs the bench with an override into its own output folder (``see bench CONFIG --out OUT
key=value``); this puts its cell for a task beside the same task's cells in other runs, per seed, with the
paired difference to a reference arm (``see.metrics.paired_difference``: the same test queries, so the
test set's difficulty cancels). Each arm is ``LABEL=FOLDER:METHOD:ROW`` and reads
``FOLDER/cells/METHOD/seedS/rROW_ROW.json`` (R[ROW][ROW], the task right after its own training).

    python benchmarks/compare_cells.py --seeds 0 1 --reference oracle \\
        --arm 'oracle=benchmarks/results/superni-cpu:oracle:0' \\
        --arm 'SEE, before 9e59e2c=benchmarks/results/negatives-ablation/superni-cpu-before-instruction-rule:see:0' \\
        --arm 'SEE, no negatives=benchmarks/results/negatives-ablation/sst2-no-negatives:see:0' \\
        --out benchmarks/results/negatives-ablation/sst2.md
"""
from __future__ import annotations

import argparse
from pathlib import Path


def read_cell(folder: Path, method: str, seed: int, row: int) -> dict | None:
    from see.bench.runner import Cells

    cells = Cells(folder)  # the bench's own cell layout, not a copy of it
    cell = cells.get(method, seed, row, row)
    if cell is not None and "scores" not in cell:
        raise SystemExit(f"{cells.path(method, seed, row, row)}: the cell stored no per-query scores, "
                         "so it cannot be paired")
    return cell


def parse_arm(spec: str) -> tuple[str, Path, str, int]:
    label, sep, where = spec.partition("=")
    parts = where.rsplit(":", 2)
    if not sep or len(parts) != 3 or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"--arm {spec!r}: expected LABEL=FOLDER:METHOD:ROW")
    return label, Path(parts[0]), parts[1], int(parts[2])


def compare(arms: list[tuple[str, Path, str, int]], seeds: list[int], reference: str) -> str:
    from see.metrics import mean_and_spread, paired_difference

    labels = [a[0] for a in arms]
    if reference not in labels:
        raise SystemExit(f"--reference {reference!r} is not an arm's label ({', '.join(labels)})")
    cells = {(a[0], s): read_cell(a[1], a[2], s, a[3]) for a in arms for s in seeds}
    lines = [f"| arm | {' | '.join(f'seed {s}' for s in seeds)} | mean | vs {reference}, paired 95% per seed | "
             "commits |", "|---|" + "---|" * (len(seeds) + 3)]
    for label, folder, method, row in arms:
        scores, paired, commits = [], [], set()
        for s in seeds:
            cell, ref = cells[(label, s)], cells[(reference, s)]
            scores.append(None if cell is None else 100 * cell["score"])
            if cell is not None:
                commits.add(cell.get("commit", "?"))
            if cell is not None and ref is not None and label != reference:
                d = paired_difference(cell["scores"], ref["scores"])
                paired.append(f"seed {s}: {100 * d['mean']:+.1f} ± {100 * d['half_width']:.1f}")
        mu, sd = mean_and_spread(scores)
        lines.append(f"| {label} (`{folder}`, {method}) | "
                     + " | ".join("–" if v is None else f"{v:.1f}" for v in scores)
                     + f" | {'–' if mu is None else f'{mu:.1f} ± {sd:.1f}'} | {'; '.join(paired) or '–'} | "
                     + f"{', '.join(sorted(commits)) or '–'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", action="append", type=parse_arm, required=True, help="LABEL=FOLDER:METHOD:ROW")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--reference", required=True, help="the label of the arm to pair every other arm with")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    table = compare(args.arm, args.seeds, args.reference)
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return table


if __name__ == "__main__":
    main()
