"""Where a user-task suite's refit experts route, at the first training's threshold and at the refit's own.

An expert trained again on its held-out positives (``train.refit``) routes at
:func:`see.routing.calibration.refit_threshold`: the first training's threshold with its room once more. This
scores every kept refit expert of a ``run.py`` ensemble, as stored, on its own test queries and on every
out-of-distribution file of the suite, and counts what each threshold rejects and accepts. Nothing is trained.

    python benchmarks/user-tasks/refit_ood.py WORK/ensemble [--json FILE]

One line per expert and query file is printed (and written to ``--json``): the queries, how many score under
the first threshold and under the refit's, and the lowest score. An expert alone, not the ensemble: a query
another expert takes first is counted here too.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> list[dict]:
    from see.data import load_queries
    from see.ensemble import Ensemble
    from see.prompt import format_prompt
    from see.routing.rule import active_adapter_scores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ensemble", type=Path, help="the ensemble a run.py --work folder holds")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)

    tasks = {t["name"]: t for t in json.loads((HERE / "tasks.json").read_text())["tasks"]}
    ood = sorted(t for t in tasks if t.startswith("ood_"))
    ens = Ensemble.load(args.ensemble)
    template = ens.manifest.prompt.template
    rows = []
    for rec in ens.manifest.experts:
        if not (rec.metrics.get("refit") or {}).get("kept") or rec.metrics.get("threshold") is None:
            continue
        ens.model.set_adapter(rec.name)
        first, refit = float(rec.metrics["threshold"]), float(rec.threshold)
        for name in [rec.name, *ood]:
            t = tasks[name]
            queries = load_queries(HERE / t["test"], input_field=t["input_field"])
            texts = [format_prompt(text, instruction, template) for instruction, text in queries]
            scores = active_adapter_scores(ens.model, ens.prompt, texts, ens.indicator.pos_id)[0]
            row = {"expert": rec.name, "queries_of": name, "queries": len(scores),
                   "first_threshold": first, "refit_threshold": refit,
                   "under_first": sum(s < first for s in scores), "under_refit": sum(s < refit for s in scores),
                   "lowest": round(min(scores), 4)}
            rows.append(row)
            own = name == rec.name
            print(f"{rec.name:16s} {name:18s} {len(scores)} queries: "
                  + (f"rejected {row['under_first']} at the first threshold {first:.3f}, {row['under_refit']} at "
                     f"the refit's {refit:.3f}" if own else
                     f"accepted {len(scores) - row['under_first']} at the first threshold {first:.3f}, "
                     f"{len(scores) - row['under_refit']} at the refit's {refit:.3f}"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
