"""Training speed with and without ``train.group_by_length``, measured side by side in one run.

    python benchmarks/group_by_length.py benchmarks/cl-standard.yaml --task amazon --steps 40 \\
        --out benchmarks/results/speed/group-by-length

One stream task of a benchmark config, its training examples encoded once; then the same plain LoRA
(the oracle's training) runs ``--steps`` optimizer steps with random batches and with length-grouped
batches, ``--rounds`` times each, alternating, so that a load that drifts over the run falls on both arms.
The report gives the median seconds per step of each arm, their ratio, and the share of the tokens a
pass over the data would spend on padding under each batching (computed from the examples' lengths and
each arm's batches). Whether grouping changes what the LoRA learns is a separate question: compare a
budget search run with ``train.group_by_length=true`` against one without (`benchmarks/budget_search.py`).
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from see.bench.config import load_bench_config  # noqa: E402
from see.bench.methods import Context  # noqa: E402
from see.bench.runner import _versions  # noqa: E402
from see.bench.tasks import stream_task  # noqa: E402
from see.jsonio import strict_json  # noqa: E402


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """The share of a pass's padded tokens that are padding."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def main() -> int:
    import torch

    from see.experts.training import LengthGroupedBatches, encode_examples, train_lora

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path)
    p.add_argument("--task", required=True, help="a stream task of the config")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="*", help="key=value benchmark-config overrides")
    args = p.parse_args()
    cfg = load_bench_config(args.config, args.overrides)
    spec = next((s for s in cfg.stream if s.name == args.task), None)
    if spec is None:
        raise SystemExit(f"{args.config}: no stream task {args.task!r} (tasks: {[s.name for s in cfg.stream]})")
    st = stream_task(spec, cfg.budget, 0)
    ctx = Context(cfg, 0, Path("/nonexistent"), [st], [], lambda m: None)
    base = ctx.base_model()
    encoded, _ = encode_examples(base, ctx.prompt, ctx.examples(st.train), None, ctx.train_cfg)
    lengths = [len(e.input_ids) for e in encoded]
    bs = int(ctx.train_cfg.batch_size)
    plain = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    shares = {"shuffled": padding_share(lengths, [plain[k:k + bs] for k in range(0, len(plain), bs)]),
              "grouped": padding_share(lengths, list(LengthGroupedBatches(lengths, bs,
                                                                          torch.Generator().manual_seed(0))))}
    per_step: dict[str, list[float]] = {"shuffled": [], "grouped": []}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for arm in ("shuffled", "grouped"):
            train = OmegaConf.merge(ctx.train_cfg, {"max_steps": args.steps, "group_by_length": arm == "grouped",
                                                     "eval_every": 0})
            model = ctx.base_model()
            _, result = train_lora(model, ctx.prompt, encoded, lora=cfg.lora, train=train, progress=False,
                                   log=lambda m: None)
            per_step[arm].append(result.metrics["seconds"] / result.steps)  # the loop alone, not the setup
            print(f"{arm}: {per_step[arm][-1]:.3f} s/step", flush=True)
    load = max(load, os.getloadavg()[0])
    median = {arm: statistics.median(v) for arm, v in per_step.items()}
    results = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "versions": _versions(),
               "task": args.task, "examples": len(lengths), "batch_size": bs,
               "max_length": int(ctx.train_cfg.max_length), "steps": args.steps, "rounds": args.rounds,
               "seconds_per_step": per_step, "median": median, "ratio": median["shuffled"] / median["grouped"],
               "padding_share": shares, "load_average_max": load}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(strict_json(results, indent=2) + "\n")
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    report = [f"# Training speed: `train.group_by_length` on `{cfg.name}`/{args.task}", "",
              f"Produced by `{results['command']}` at git `{results['versions']['git']}` "
              f"(torch {results['versions'].get('torch')}); 1-minute load average up to {load:.1f} on "
              f"{os.cpu_count()} cores.", "",
              f"{len(lengths)} training examples, batch {bs}, max_length {results['max_length']}, "
              f"{args.steps} steps per run, {args.rounds} runs per arm, alternating.", "",
              "| batching | padding share of a pass | median s/step | runs (s/step) |", "|---|---|---|---|"]
    for arm in ("shuffled", "grouped"):
        report.append(f"| {arm} | {pct(shares[arm])} | {median[arm]:.3f} | "
                      + ", ".join(f"{v:.3f}" for v in per_step[arm]) + " |")
    report += ["", f"Grouped batches train **{results['ratio']:.2f}x** as fast per step.", ""]
    (args.out / "report.md").write_text("\n".join(report))
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
