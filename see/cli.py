"""The ``see`` command line. Each subcommand is one typed function; argparse only maps flags to it.

User errors (bad files, flags, configs) print one clear message and exit 2;
``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from see.errors import ConfigError, SeeError


def _data_overrides(format: str | None, input_field: str | None, output_field: str | None,
                    instruction: str | None, split: str | None, max_examples: int | None) -> list[str]:
    """CLI data flags are shorthands for ``data.*`` config keys."""
    out = []
    for key, value in (("format", format), ("input_field", input_field), ("output_field", output_field),
                       ("split", split), ("max_examples", max_examples)):
        if value is not None:
            out.append(f"data.{key}={value}")
    if instruction is not None:
        out.append("data.instruction=" + json.dumps(instruction))
    return out


def init(dir: Path, base: str | None = None, fallback: str | None = None, config: Path | None = None,
         overrides: Sequence[str] = (), trust_remote_code: bool = False, allow_pickle: bool = False,
         expert_kind: str | None = None) -> int:
    """Create an ensemble directory on a base model (default: the embedded offline base)."""
    from see.ensemble import init_ensemble

    extra = list(overrides)
    if trust_remote_code:
        extra.append("model.trust_remote_code=true")
    if allow_pickle:
        extra.append("model.allow_pickle=true")
    if expert_kind:
        extra.append(f"model.expert_kind={expert_kind}")
    init_ensemble(dir, base=base, fallback=fallback, config=config, overrides=extra)
    print(f"ensemble ready: {dir}\nnext: see add-expert {dir} --name NAME --data PATH")
    return 0


def add_expert(dir: Path, name: str, data: str, format: str | None = None, input_field: str | None = None,
               output_field: str | None = None, instruction: str | None = None, split: str | None = None,
               max_examples: int | None = None, negatives: str | None = None, config: Path | None = None,
               overrides: Sequence[str] = (), resume: bool = False, no_wait: bool = False,
               progress: bool = True) -> int:
    """Train one expert on a task's data and add it to the ensemble (atomically)."""
    from see.data import load_task_from_config
    from see.ensemble import add_expert as _add, check_new_expert, expert_config
    from see.store import EnsembleStore

    # fail on the name before reading (possibly large) data
    manifest = check_new_expert(EnsembleStore(dir), name)
    all_overrides = _data_overrides(format, input_field, output_field, instruction, split, max_examples) + list(overrides)
    cfg = expert_config(manifest, config, all_overrides)
    task = load_task_from_config(data, cfg.data, name=name, seed=int(cfg.train.seed))
    record = _add(dir, name, task, config=config, overrides=all_overrides, negatives=negatives, resume=resume,
                  wait=not no_wait, progress=progress,
                  data_info={"format": cfg.data.format, "split": cfg.data.split})
    if record is not None:
        m = record.metrics
        parts = [f"loss {m.get('train_loss')}", f"{m.get('steps')} steps", f"{m.get('seconds')}s"]
        for key, label in (("heldout_accept_rate", "accepts own held-out"), ("heldout_reject_rate", "rejects negatives"),
                           ("heldout_exact_match", "held-out exact match")):
            if key in m:
                parts.append(f"{label} {100 * m[key]:.0f}%")
        print(f"added expert '{name}' ({len(manifest.experts) + 1} in the ensemble): " + ", ".join(parts))
    return 0


def ask(dir: Path, queries: Sequence[str], json_out: bool = False, max_new_tokens: int | None = None,
        threshold: float | None = None, mode: str | None = None) -> int:
    """Answer queries through the ensemble and say which expert answered."""
    from see.ensemble import Ensemble

    ens = Ensemble.load(dir)
    if not ens.experts:
        print("note: the ensemble has no experts yet; the fallback answers every query", file=sys.stderr)
    results = ens.generate(list(queries), max_new_tokens=max_new_tokens, threshold=threshold, mode=mode)
    for r in results:
        if json_out:
            print(json.dumps({"query": r.query, "answer": r.answer, "expert": r.expert,
                              "scores": {k: round(v, 6) for k, v in r.scores.items()}}))
        else:
            who = f"expert {r.expert}" if r.expert else "fallback"
            print(f"{r.answer}\t[{who}]" if len(results) == 1 else f"{r.query!r} -> {r.answer}\t[{who}]")
    return 0


def _adapter_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("adapter_model.*"))


def list_experts(dir: Path, json_out: bool = False) -> int:
    """List the experts in routing order (oldest first), with sizes and training metrics."""
    from see.store import EnsembleStore

    store = EnsembleStore(dir)
    manifest = store.read()
    rows = []
    for k, rec in enumerate(manifest.experts):
        rows.append({"position": k + 1, "name": rec.name, "examples": rec.data.get("examples"),
                     "adapter_bytes": _adapter_size(store.root / rec.path), "threshold": rec.threshold,
                     "created": rec.created, "metrics": rec.metrics})
    if json_out:
        print(json.dumps({"base": manifest.base.get("ref"), "fallback": (manifest.fallback or {}).get("ref"),
                          "experts": rows}, indent=2))
        return 0
    print(f"base: {manifest.base.get('ref')}   fallback: {(manifest.fallback or {}).get('ref') or 'base (adapters off)'}")
    if not rows:
        print("no experts yet")
        return 0
    header = f"{'#':>2}  {'name':<20} {'examples':>8} {'size':>9} {'steps':>6} {'loss':>7} {'accept':>7} {'reject':>7} {'EM':>6}"
    print(header)
    for r in rows:
        m = r["metrics"]
        pct = lambda v: f"{100 * v:.0f}%" if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"{r['position']:>2}  {r['name']:<20} {r['examples'] or 0:>8} {r['adapter_bytes'] / 1024:>7.0f}kB "
              f"{m.get('steps', '-'):>6} {m.get('train_loss', float('nan')):>7.3f} {pct(m.get('heldout_accept_rate')):>7} "
              f"{pct(m.get('heldout_reject_rate')):>7} {pct(m.get('heldout_exact_match')):>6}")
    return 0


def eval_data(dir: Path, data: str, format: str | None = None, input_field: str | None = None,
              output_field: str | None = None, instruction: str | None = None, split: str | None = "test",
              max_examples: int | None = None, json_out: bool = False, max_new_tokens: int | None = None) -> int:
    """Accuracy (exact match, any acceptable answer) of the ensemble on a task, and where it was routed."""
    from see.config import load_config
    from see.data import load_task_from_config
    from see.ensemble import Ensemble

    cfg = load_config(None, _data_overrides(format, input_field, output_field, instruction, split, max_examples))
    task = load_task_from_config(data, cfg.data)
    ens = Ensemble.load(dir)
    report = ens.evaluate(task, max_new_tokens=max_new_tokens, progress=not json_out)
    report.pop("results")
    if json_out:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{task.name}: {report['examples']} examples, exact match {100 * report['score']:.1f}%")
    for name, share in report["routed"].items():
        print(f"  routed to {name:<20} {100 * share:5.1f}%")
    return 0


def calibrate(dir: Path, target_fpr: float = 0.05, json_out: bool = False) -> int:
    """Choose a per-expert acceptance threshold on P(<<pos>>) that falsely rejects at most TARGET of the
    expert's held-out positives, and store it in the manifest (generate then uses it instead of argmax)."""
    from see.errors import ConfigError
    from see.routing.calibration import calibrate as _calibrate

    if not 0.0 <= target_fpr < 1.0:
        raise ConfigError(f"--target-fpr must be in [0, 1), got {target_fpr}", field="target-fpr")
    rows = _calibrate(dir, target_fpr, log=lambda m: print(m, file=sys.stderr))
    if json_out:
        print(json.dumps(rows, indent=2))
        return 0
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    print(f"{'expert':<20} {'threshold':>9}  {'own accepted (argmax -> threshold)':>36}  "
          f"{'negatives rejected (argmax -> threshold)':>42}")
    for r in rows:
        print(f"{r['expert']:<20} {r['threshold']:>9.4f}  {pct(r['accept_own_before']):>17} -> "
              f"{pct(r['accept_own_after']):<15}  {pct(r['reject_neg_before']):>21} -> {pct(r['reject_neg_after'])}")
    print(f"stored {len(rows)} threshold(s) in {dir}/manifest.json")
    return 0


def bench(config: Path, overrides: Sequence[str] = (), out: Path | None = None, progress: bool = True) -> int:
    """Run a continual-learning benchmark: every method on the stream, resumable cell by cell, with a report."""
    import shlex

    from see.bench.runner import run_bench
    from see.config import load_bench_config

    cfg = load_bench_config(config, list(overrides))
    command = "see bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    target = Path(out) if out is not None else Path(cfg.output)
    results = run_bench(cfg, target, log=lambda m: print(m, flush=True), progress=progress, command=command)
    print(f"{'method':<16} {'AP':>7} {'BWT':>7} {'route':>7} {'OOD TPR':>8} {'OOD FPR':>8}")
    for method, data in results["methods"].items():
        s = data["summary"]
        f = lambda k: "-" if s[k]["mean"] is None else f"{100 * s[k]['mean']:.1f}"  # noqa: E731
        print(f"{method:<16} {f('AP'):>7} {f('BWT'):>7} {f('Routing acc'):>7} {f('OOD TPR'):>8} {f('OOD FPR'):>8}")
    print(f"report: {target / 'report.md'}")
    return 0


def bench_serve(out: Path = Path("benchmarks/results/serving"), work: Path | None = None, quick: bool = False,
                kinds: Sequence[str] = ("lora", "alora")) -> int:
    """Serving benchmark: latency, throughput and memory of routing as experts grow (N = 1..16), LoRA and aLoRA,
    against a plain single-adapter generate measured in the same run."""
    import shlex
    import tempfile

    from see.bench.serving import run, targets

    command = "see bench-serve " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    work = work or Path(tempfile.mkdtemp(prefix="see-serve-"))
    kwargs = {}
    if quick:
        kwargs = dict(ns=(1, 2), batch_sizes=(2,), queries=4, repeats=1, examples=24, max_new_tokens=3,
                      overrides=("train.max_steps=4", "train.batch_size=8"), accuracy_examples=24,
                      accuracy_overrides=("train.max_steps=4", "train.batch_size=8"), accuracy_test=4)
    results = run(Path(out), Path(work), kinds=tuple(kinds), log=lambda m: print(m, flush=True), command=command,
                  **kwargs)
    for desc, measured, met in targets(results):
        print(f"{'met ' if met else 'MISS' if met is False else '    '}  {desc}: {measured}")
    print(f"report: {Path(out) / 'report.md'}")
    return 0


def demo(dir: Path | None = None, quick: bool = False, seed: int = 0, no_general_negatives: bool = False) -> int:
    """Build an ensemble on the embedded base, add 4 experts one by one, and print what it learned."""
    from see.demo import run_demo

    run_demo(dir, quick=quick, seed=seed, general_negatives=not no_general_negatives)
    return 0


# ----------------------------------------------------------------------------- argparse

def _data_flags(p: argparse.ArgumentParser, split_default: str | None) -> None:
    p.add_argument("--format", choices=["auto", "jsonl", "json", "csv", "superni", "cl-benchmark", "hf"],
                   help="data format (default: auto, detected by content)")
    p.add_argument("--input-field", help="input field/column (default: input)")
    p.add_argument("--output-field", help="output field/column (default: output)")
    p.add_argument("--instruction", help="instruction for every example (overrides a SuperNI definition)")
    p.add_argument("--split", default=split_default, help=f"split of folder datasets (default: {split_default})")
    p.add_argument("--max-examples", type=int, help="use a seeded sample of at most N examples")


def build_parser() -> argparse.ArgumentParser:
    from see import __version__

    parser = argparse.ArgumentParser(prog="see", description="Continual fine-tuning with a Sequential Ensemble of "
                                     "Experts: one LoRA expert per task, routed newest first.")
    parser.add_argument("--version", action="version", version=f"see {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="create an ensemble", description=init.__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("--base", help="base model: a local HF model dir or hub id (default: the embedded base)")
    p.add_argument("--fallback", help="model that answers when every expert rejects (default: base, adapters off)")
    p.add_argument("--expert-kind", choices=["lora", "alora"], help="expert kind for the whole ensemble")
    p.add_argument("--config", type=Path, help="YAML config (model/prompt/routing sections)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code to run")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")
    p.epilog = "Any further key=value arguments override config keys (e.g. routing.max_new_tokens=32)."

    p = sub.add_parser("add-expert", help="train and add one expert", description=add_expert.__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--data", required=True, help="data file or folder (or a dataset name with --format hf)")
    _data_flags(p, None)
    p.add_argument("--negatives", help="file of general negatives (any data format; inputs only), or 'none'")
    p.add_argument("--config", type=Path, help="YAML config; see the README for every key")
    p.add_argument("--resume", action="store_true", help="continue an interrupted add of this expert")
    p.add_argument("--no-wait", action="store_true", help="fail at once if another process is writing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.epilog = "Any further key=value arguments override config keys, e.g. train.epochs=2 lora.r=8."

    p = sub.add_parser("ask", help="answer queries", description=ask.__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("queries", nargs="+", metavar="QUERY")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--threshold", type=float, help="accept when P(<<pos>>) >= T (default: argmax or calibrated)")
    p.add_argument("--mode", choices=["batched", "sequential"])

    p = sub.add_parser("list", help="list experts", description=list_experts.__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("eval", help="evaluate on a task's data", description=eval_data.__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("--data", required=True)
    _data_flags(p, "test")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("calibrate", help="store per-expert acceptance thresholds", description=calibrate.__doc__)
    p.add_argument("dir", type=Path)
    p.add_argument("--target-fpr", type=float, default=0.05,
                   help="largest share of an expert's own held-out positives it may reject (default 0.05)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="continual-learning benchmark: SEE against every baseline",
                       description=bench.__doc__)
    p.add_argument("config", type=Path, help="benchmark YAML (see benchmarks/)")
    p.add_argument("--out", type=Path, help="output folder (default: the config's `output`)")
    p.add_argument("--no-progress", action="store_true")
    p.epilog = "Any further key=value arguments override config keys, e.g. seeds=[0] budget.train_examples=100."

    p = sub.add_parser("bench-serve", help="serving benchmark (routing cost vs number of experts)",
                       description=bench_serve.__doc__)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/serving"))
    p.add_argument("--work", type=Path, help="where to build the ensembles (reused when present)")
    p.add_argument("--kinds", nargs="+", default=["lora", "alora"], choices=["lora", "alora"])
    p.add_argument("--quick", action="store_true", help="a smoke run at a tiny budget")

    p = sub.add_parser("demo", help="the offline demo: 4 experts on the embedded base", description=demo.__doc__)
    p.add_argument("--dir", type=Path, help="where to build the ensemble (default: a temp folder)")
    p.add_argument("--quick", action="store_true", help="fewer examples and steps (a smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-general-negatives", action="store_true",
                   help="train experts without the general-negatives pool (to measure what it buys)")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    c = args.command
    if c == "init":
        return init(args.dir, args.base, args.fallback, args.config, args.overrides, args.trust_remote_code,
                    args.allow_pickle, args.expert_kind)
    if c == "add-expert":
        return add_expert(args.dir, args.name, args.data, args.format, args.input_field, args.output_field,
                          args.instruction, args.split, args.max_examples, args.negatives, args.config,
                          args.overrides, args.resume, args.no_wait, not args.no_progress)
    if c == "ask":
        return ask(args.dir, args.queries, args.json, args.max_new_tokens, args.threshold, args.mode)
    if c == "list":
        return list_experts(args.dir, args.json)
    if c == "eval":
        return eval_data(args.dir, args.data, args.format, args.input_field, args.output_field, args.instruction,
                         args.split, args.max_examples, args.json, args.max_new_tokens)
    if c == "calibrate":
        return calibrate(args.dir, args.target_fpr, args.json)
    if c == "bench":
        return bench(args.config, args.overrides, args.out, not args.no_progress)
    if c == "bench-serve":
        return bench_serve(args.out, args.work, args.quick, args.kinds)
    if c == "demo":
        return demo(args.dir, args.quick, args.seed, args.no_general_negatives)
    raise AssertionError(c)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # key=value config overrides may come anywhere after the subcommand (argparse cannot mix a
    # trailing nargs="*" positional with options, so they are collected here)
    flags = [r for r in rest if r.startswith("-")]
    if flags or (rest and args.command not in ("init", "add-expert", "bench")):
        parser.error(f"unrecognized arguments: {' '.join(flags or rest)}")
    args.overrides = rest
    try:
        for item in rest:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not key=value", file="<command line>", field=item,
                                  hint="config overrides look like train.epochs=2")
        return _dispatch(args)
    except SeeError as exc:
        if args.debug:
            raise
        print(f"see {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; the ensemble is unchanged unless a command said it finished", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
