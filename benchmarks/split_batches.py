"""SEE expert training speed with and without ``train.split_padded_batches``, measured side by side in one run.

    python benchmarks/split_batches.py benchmarks/superni-cpu.yaml --task sst2 --steps 30 \\
        --out benchmarks/results/speed/split-batches

The first expert of a benchmark's stream, added as the benchmark adds it (``see.lifecycle.add_expert`` with
the config's lora, train and reconstruction sections and its general negatives), for ``--steps`` optimizer
steps with whole padded batches and with each batch run as sub-batches of similar length, ``--rounds``
times each, alternating, so that a load that drifts over the run falls on both arms. Both arms train on
the same batches with the same gradient (``tests/test_training.py``); the report gives the median seconds
per step of the training loop (the expert's recorded ``seconds`` over its steps) and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from see.bench.config import load_bench_config  # noqa: E402
from see.bench.methods import section_overrides  # noqa: E402
from see.bench.runner import _versions  # noqa: E402
from see.bench.tasks import query_task, stream_task  # noqa: E402
from see.jsonio import strict_json  # noqa: E402

ARMS = {"whole batches": "false", "sub-batches": "true"}


def main(argv: list[str] | None = None) -> dict:
    from see.lifecycle import add_expert, init_ensemble

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path)
    p.add_argument("--task", required=True, help="a stream task of the config")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="*", help="key=value benchmark-config overrides")
    args = p.parse_args(argv)
    cfg = load_bench_config(args.config, args.overrides)
    spec = next((s for s in cfg.stream if s.name == args.task), None)
    if spec is None:
        raise SystemExit(f"{args.config}: no stream task {args.task!r} (tasks: {[s.name for s in cfg.stream]})")
    task = stream_task(spec, cfg.budget, 0)
    negatives = [(t.instruction, ex.input) for s in cfg.negatives
                 for t in [query_task(s, max(50, int(cfg.budget.train_examples)), 0, "negatives")] for ex in t.examples]
    per_step: dict[str, list[float]] = {arm: [] for arm in ARMS}
    examples = None
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        negatives_file = None
        if negatives:
            negatives_file = Path(tmp) / "negatives.jsonl"
            negatives_file.write_text("".join(json.dumps({"instruction": a, "input": b}) + "\n" for a, b in negatives))
        for r in range(args.rounds):
            for arm, split in ARMS.items():
                ensemble = Path(tmp) / f"ensemble-{r}-{split}"
                init_ensemble(ensemble, base=cfg.base, overrides=section_overrides(cfg, ("prompt",)), log=lambda m: None)
                overrides = section_overrides(cfg, ("lora", "train", "reconstruction")) + [
                    "train.seed=0", f"train.max_steps={args.steps}", "train.eval_every=0",
                    f"train.split_padded_batches={split}"]
                record = add_expert(ensemble, task.name, task.train, overrides=overrides,
                                    negatives=str(negatives_file) if negatives_file else None, progress=False,
                                    log=lambda m: None)
                per_step[arm].append(record.metrics["seconds"] / record.metrics["steps"])
                examples = record.metrics["examples"]
                print(f"{arm}: {per_step[arm][-1]:.3f} s/step", flush=True)
    load = max(load, os.getloadavg()[0])
    median = {arm: statistics.median(v) for arm, v in per_step.items()}
    if not all(median.values()):
        raise SystemExit(f"a run's training took no measurable time ({median}); raise --steps")
    ratio = median["whole batches"] / median["sub-batches"]
    command = [sys.argv[0]] + (sys.argv[1:] if argv is None else argv)
    results = {"command": "python " + " ".join(shlex.quote(a) for a in command), "versions": _versions(),
               "task": args.task, "training_examples": examples, "general_negatives": len(negatives),
               "batch_size": int(cfg.train.batch_size), "max_length": int(cfg.train.max_length),
               "steps": args.steps, "rounds": args.rounds, "seconds_per_step": per_step, "median": median,
               "ratio": ratio, "load_average_max": load}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(strict_json(results, indent=2) + "\n")
    report = [f"# SEE expert training speed: `train.split_padded_batches` on `{cfg.name}`/{args.task}", "",
              f"Produced by `{results['command']}` at git `{results['versions']['git']}` "
              f"(torch {results['versions'].get('torch')}); 1-minute load average up to {load:.1f} on "
              f"{os.cpu_count()} cores.", "",
              f"The first expert: {examples} training examples (the task's and its negatives; general negatives "
              + (f"drawn from the config's {len(negatives)}" if negatives else "from the pool `see` ships, the config "
                 "naming none") + f"), batch {results['batch_size']}, max_length {results['max_length']}, "
              f"{args.steps} steps per run, {args.rounds} runs per arm, alternating.", "",
              "| batches | median s/step | runs (s/step) |", "|---|---|---|"]
    for arm in ARMS:
        report.append(f"| {arm} | {median[arm]:.3f} | " + ", ".join(f"{v:.3f}" for v in per_step[arm]) + " |")
    report += ["", f"Sub-batches of similar length train **{ratio:.2f}x** as fast per step, on the same batches "
               "with the same gradient.", ""]
    (args.out / "report.md").write_text("\n".join(report))
    print("\n".join(report))
    return results


if __name__ == "__main__":
    main()
