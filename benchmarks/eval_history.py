"""Write the held-out evaluations each SEE expert of a bench run made while it trained.

`see bench` keeps them only in the run's `work/` ensemble (`see list --json` shows the same for a user's
ensemble), which is not committed; this copies them beside the cells:

    python benchmarks/eval_history.py benchmarks/results/negatives-ablation/sst2-trajectory-defaults --seed 2

writes `eval_history.json` there: per expert, its `train.eval_every` evaluations (step, held-out loss, accept
and reject rates, exact match) and its final training metrics (with `train.restarts`, each attempt's
figures). Needs the run's `train.eval_every`; without it an expert under an explicit budget is evaluated
only at the end.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def expert_histories(manifest: dict) -> dict:
    out = {}
    for expert in manifest["experts"]:
        metrics = expert["metrics"]
        out[expert["name"]] = {"eval_history": metrics.get("eval_history", []),
                               "final": {k: v for k, v in metrics.items() if k != "eval_history"}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the bench run's --out folder")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--method", default="see")
    p.add_argument("--target", type=Path, help="where to write (default: OUT/eval_history.json); one file per "
                                               "seed when a run holds several")
    args = p.parse_args()
    manifest = args.out / "work" / f"seed{args.seed}" / args.method / "ensemble" / "manifest.json"
    histories = expert_histories(json.loads(manifest.read_text()))
    target = args.target or args.out / "eval_history.json"
    target.write_text(json.dumps(histories, indent=1) + "\n")
    for name, h in histories.items():
        steps = " ".join(f"{e['step']}:{100 * e['heldout_exact_match']:.0f}" for e in h["eval_history"])
        print(f"{name}: held-out exact match by step {steps}")
        for attempt in h["final"].get("attempts", []):  # train.restarts: each start, and which one was kept
            if "failed" in attempt:
                print(f"{name}: attempt with seed {attempt['seed']}: failed ({attempt['failed']})")
                continue
            print(f"{name}: attempt with seed {attempt['seed']}: held-out exact match "
                  f"{100 * attempt['heldout_exact_match']:.0f}%, score {100 * attempt['heldout_score']:.1f}"
                  + (" (kept)" if attempt["seed"] == h["final"].get("kept_seed") else ""))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
