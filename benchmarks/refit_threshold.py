"""Where a refit expert (``train.refit``) routes at the first training's threshold and at ``refit_threshold``.

A refit trains on its held-out positives, so the threshold that the first training set on them has nothing
unseen left to check it. This scores each kept refit expert of a bench's work folder, as it was stored, on
its task's test queries, on the earlier tasks' test queries and on the OOD queries, and counts what it
accepts at two thresholds: the first training's (``metrics.threshold``) and
:func:`see.routing.calibration.refit_threshold` of it, the room once more bounded by the refit's own scores
of its held-out negatives (what ``add-expert`` stores since that rule). Nothing is trained.

    python benchmarks/refit_threshold.py OUT --seeds 0,1,2 [--record FILE]

``OUT`` is a ``see bench --out`` folder whose rows ran with ``train.refit=true`` (its ``config.yaml`` and
``work/seedS/see/afterJ`` ensembles). One line per expert is printed, and appended to ``--record`` as JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> list[dict]:
    from see.bench.config import load_bench_config
    from see.bench.runner import _git_commit, _ood_tasks, _queries, _stream
    from see.ensemble import Ensemble
    from see.prompt import format_prompt
    from see.routing import calibration
    from see.routing.rule import active_adapter_scores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a see bench --out folder")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--record", type=Path, help="append one JSON line per expert here")
    args = parser.parse_args(argv)

    cfg = load_bench_config(str(args.out / "config.yaml"), [])
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        stream, ood = _stream(cfg, seed, []), _ood_tasks(cfg, seed)
        for j, task in enumerate(stream):
            folder = args.out / "work" / f"seed{seed}" / "see" / f"after{j}"
            if not (folder / "manifest.json").is_file():
                continue
            ens = Ensemble.load(folder)
            rec = ens.manifest.experts[j]
            refit = rec.metrics.get("refit") or {}
            if not refit.get("kept") or rec.metrics.get("threshold") is None:
                print(f"seed {seed} {rec.name}: no kept refit with an automatic threshold")
                continue
            ens.model.set_adapter(rec.name)
            template, pos_id = ens.manifest.prompt.template, ens.indicator.pos_id

            def scores(queries):
                texts = [format_prompt(text, instruction, template) for instruction, text in queries]
                return active_adapter_scores(ens.model, ens.prompt, texts, pos_id)[0] if texts else []

            first = float(rec.metrics["threshold"])
            bound = calibration.bounding_negative_scores(ens.model, ens.prompt, ens.indicator,
                                                         _heldout_examples(ens, rec))
            widened = calibration.refit_threshold(first, bound, float(rec.config["routing"]["margin_odds"]))
            own = scores(_queries(task.test))
            earlier = scores([q for t in stream[:j] for q in _queries(t.test)])
            outside = {t.name: scores([(t.instruction, ex.input) for ex in t.examples]) for t in ood}
            row = {"out": str(args.out), "seed": seed, "expert": rec.name, "stored_threshold": rec.threshold,
                   "first_threshold": first, "refit_threshold": widened, "commit": _git_commit()}
            for label, at in (("first", first), ("refit", widened)):
                row[label] = {"own_rejected": sum(s < at for s in own), "own": len(own),
                              "earlier_accepted": sum(s >= at for s in earlier), "earlier": len(earlier),
                              "ood_accepted": {k: sum(s >= at for s in v) for k, v in outside.items()},
                              "ood": {k: len(v) for k, v in outside.items()}}
            rows.append(row)
            print(f"seed {seed} {rec.name}: threshold {first:.4f} -> {widened:.4f}; " + "; ".join(
                f"at {label}: own rejected {row[label]['own_rejected']}/{len(own)}, earlier tasks' accepted "
                f"{row[label]['earlier_accepted']}/{len(earlier)}, OOD accepted "
                + ", ".join(f"{k} {v}/{row[label]['ood'][k]}" for k, v in row[label]["ood_accepted"].items())
                for label in ("first", "refit")), flush=True)
            if args.record:
                args.record.parent.mkdir(parents=True, exist_ok=True)
                with open(args.record, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return rows


def _heldout_examples(ens, rec):
    """The expert's stored held-out examples, as the ``TrainingExample`` records ``add-expert`` split off."""
    from see.experts.reconstruction import TrainingExample
    from see.store import read_jsonl

    return [TrainingExample(**r) for r in read_jsonl(ens.store.root / rec.path / "heldout.jsonl")]


if __name__ == "__main__":
    main()
