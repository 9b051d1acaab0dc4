"""Put one stream's methods beside the same tasks in another order, paired by seed.

Two bench reports over the same tasks in different orders (``cl-standard.yaml`` and
``cl-standard-order2.yaml``) each give AP and BWT per seed. What differs between them is the order alone, so
this pairs each method's seeds that both reports have complete (every cell of the seed done) and
gives the difference, order B minus order A, per seed and on the mean. Tasks are matched by name, not by
position: per task it gives the score right after the task's own training (R[j][j]) and at the end of the
stream (the last row), in each order.

    python benchmarks/order_effects.py benchmarks/results/cl-standard benchmarks/results/cl-standard-order2 \\
        --out benchmarks/results/cl-standard-order2/order-effects.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _by_task(R: list[list[float]], tasks: list[str]) -> dict[str, tuple[float, float]]:
    """Task name -> (R[j][j], R[-1][j]): right after its own training, and after the whole stream."""
    return {t: (R[j][j], R[-1][j]) for j, t in enumerate(tasks)}


def order_effect(a: dict, b: dict, method: str) -> dict | None:
    """One method's AP and BWT in orders A and B over the seeds complete in both, and per task (by name) its
    scores in each order, each a list over those seeds (fractions, as the reports store them)."""
    from see.metrics import mean_and_spread

    if sorted(a["tasks"]) != sorted(b["tasks"]):
        raise SystemExit(f"the two reports are not over the same tasks: {a['tasks']} and {b['tasks']}")
    ma, mb = a["methods"].get(method), b["methods"].get(method)
    if ma is None or mb is None:
        return None
    def complete(m: dict) -> set[str]:
        return {s for s, row in m["per_seed"].items() if row.get("complete")}

    seeds = sorted(int(s) for s in complete(ma) & complete(mb))
    if not seeds:
        return None
    out: dict = {"seeds": seeds}
    for metric in ("AP", "BWT"):
        va = [ma["per_seed"][str(s)][metric] for s in seeds]
        vb = [mb["per_seed"][str(s)][metric] for s in seeds]
        d = [y - x if x is not None and y is not None else None for x, y in zip(va, vb)]
        out[metric] = {"A": va, "B": vb, "B-A": d, "B-A mean": mean_and_spread(d)}
    out["tasks"] = {}
    by_a = [_by_task(ma["per_seed"][str(s)]["R"], a["tasks"]) for s in seeds]
    by_b = [_by_task(mb["per_seed"][str(s)]["R"], b["tasks"]) for s in seeds]
    for t in a["tasks"]:
        ta, tb = [d[t] for d in by_a], [d[t] for d in by_b]
        out["tasks"][t] = {"position": (a["tasks"].index(t) + 1, b["tasks"].index(t) + 1),
                           "own A": [x[0] for x in ta], "own B": [x[0] for x in tb],
                           "last A": [x[1] for x in ta], "last B": [x[1] for x in tb]}
    return out


def _fmt(values: list[float | None]) -> str:
    from see.metrics import mean_and_spread

    mu, sd = mean_and_spread(values)
    return "–" if mu is None else f"{100 * mu:.1f} ± {100 * sd:.1f}"


def table(a: dict, b: dict, methods: list[str], label_a: str, label_b: str) -> str:
    lines = [f"Order A: {label_a} ({' → '.join(a['tasks'])}). Order B: {label_b} ({' → '.join(b['tasks'])}).",
             "Mean ± std over the seeds complete in both reports; B − A is paired by seed.", "",
             "| method | seeds | AP, A | AP, B | AP, B − A | BWT, A | BWT, B |", "|---|---|---|---|---|---|---|"]
    effects = {m: order_effect(a, b, m) for m in methods}
    for m, e in effects.items():
        if e is None:
            lines.append(f"| {m} | none in both | | | | | |")
            continue
        d_mu, d_sd = e["AP"]["B-A mean"]
        per_seed = ", ".join(f"{100 * x:+.1f}" for x in e["AP"]["B-A"] if x is not None)
        lines.append(f"| {m} | {','.join(map(str, e['seeds']))} | {_fmt(e['AP']['A'])} | {_fmt(e['AP']['B'])} | "
                     f"{100 * d_mu:+.1f} ({per_seed}) | {_fmt(e['BWT']['A'])} | {_fmt(e['BWT']['B'])} |")
    lines += ["", "Per task, matched by name: the score right after the task's own training (R[j][j]) and after "
              "the whole stream (last row), in each order; the position is the task's place in A and in B.", "",
              "| method | task | position A, B | own, A | own, B | last, A | last, B |", "|---|---|---|---|---|---|---|"]
    for m, e in effects.items():
        if e is None:
            continue
        for t, v in e["tasks"].items():
            lines.append(f"| {m} | {t} | {v['position'][0]}, {v['position'][1]} | {_fmt(v['own A'])} | "
                         f"{_fmt(v['own B'])} | {_fmt(v['last A'])} | {_fmt(v['last B'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("order_a", type=Path, help="a bench output folder (its results.json): the first order")
    p.add_argument("order_b", type=Path, help="the same tasks' bench output folder in another order")
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods to compare (default: every method in both reports)")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    reports = []
    for folder in (args.order_a, args.order_b):
        path = folder / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no such report (run `see bench CONFIG --out {folder} --report` first)")
        reports.append(json.loads(path.read_text()))
    a, b = reports
    methods = args.methods or [m for m in a["methods"] if m in b["methods"]]
    text = table(a, b, methods, str(args.order_a), str(args.order_b))
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
