"""The ``see`` command line. Each subcommand is one typed function whose signature is its interface.

The parser is derived from the signatures (litgpt style): every parameter's
type, default and ``Arg`` help become its flag, and a command is called by
keyword, so the flags are written once. Commands import what they run
inside their bodies, so that ``see --help`` answers without loading torch. User errors (bad files, flags,
configs) print one clear message and exit 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import collections.abc
import inspect
import json
import shlex
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional, Sequence

from see.config import EXPERT_KINDS, FORMATS, ROUTING_MODES, RoutingConfig, load_config
from see.errors import ConfigError, SeeError
from see.jsonio import strict_json


@dataclass(frozen=True)
class Arg:
    """How a command parameter appears on the command line."""

    help: str = ""
    #: Option strings; default: ``--name-with-dashes`` (or the name itself when positional).
    flags: tuple[str, ...] = ()
    positional: bool = False
    choices: tuple | None = None
    metavar: str | None = None


#: A parameter that collects the trailing ``key=value`` config overrides.
Overrides = Annotated[Sequence[str], "overrides"]

COMMANDS: dict[str, tuple[Callable, str]] = {}


def command(name: str, summary: str):
    def register(fn: Callable) -> Callable:
        COMMANDS[name] = (fn, summary)
        return fn
    return register


# ----------------------------------------------------------------------------- shared flags

Dir = Annotated[Path, Arg("ensemble directory", positional=True)]
Format = Annotated[Optional[str], Arg("data format (default: auto, detected by content)", choices=FORMATS)]
InputField = Annotated[Optional[str], Arg("input field/column (default: input)")]
OutputField = Annotated[Optional[str], Arg("output field/column (default: output)")]
Instruction = Annotated[Optional[str], Arg("instruction for every example (overrides a SuperNI definition)")]
MaxExamples = Annotated[Optional[int], Arg("use a seeded sample of at most N examples")]
JsonOut = Annotated[bool, Arg("print JSON", flags=("--json",))]
ConfigFile = Annotated[Optional[Path], Arg("YAML config; see the README for every key")]


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


# ----------------------------------------------------------------------------- commands

@command("init", "create an ensemble")
def init(dir: Dir,
         base: Annotated[Optional[str], Arg("base model: a local HF model dir or hub id (default: the embedded "
                                            "base)")] = None,
         fallback: Annotated[Optional[str], Arg("model that answers when every expert rejects (default: base, "
                                                "adapters off)")] = None,
         expert_kind: Annotated[Optional[str], Arg("expert kind for the whole ensemble", choices=EXPERT_KINDS)] = None,
         config: Annotated[Optional[Path], Arg("YAML config (model/prompt/routing sections)")] = None,
         trust_remote_code: Annotated[bool, Arg("allow the model's own Python code to run")] = False,
         allow_pickle: Annotated[bool, Arg("allow pickle (.bin) weights")] = False,
         overrides: Overrides = ()) -> int:
    """Create an ensemble directory on a base model (default: the embedded offline base)."""
    from see.lifecycle import init_ensemble

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


@command("add-expert", "train and add one expert")
def add_expert(dir: Dir,
               name: Annotated[str, Arg("the expert's name")],
               data: Annotated[str, Arg("data file or folder (or a dataset name with --format hf)")],
               format: Format = None, input_field: InputField = None, output_field: OutputField = None,
               instruction: Instruction = None,
               split: Annotated[Optional[str], Arg("split of folder datasets (default: train)")] = None,
               max_examples: MaxExamples = None,
               negatives: Annotated[Optional[str], Arg("file of general negatives (any data format; inputs only), "
                                                       "or 'none'")] = None,
               config: ConfigFile = None,
               resume: Annotated[bool, Arg("continue an interrupted add of this expert")] = False,
               no_wait: Annotated[bool, Arg("fail at once if another process is writing")] = False,
               progress: Annotated[bool, Arg("no progress bar", flags=("--no-progress",))] = True,
               overrides: Overrides = ()) -> int:
    """Train one expert on a task's data and add it to the ensemble (atomically)."""
    from see.data import load_task_from_config
    from see.lifecycle import add_expert as add, check_new_expert, expert_config
    from see.store import EnsembleStore

    # fail on the name before reading (possibly large) data
    manifest = check_new_expert(EnsembleStore(dir), name)
    all_overrides = _data_overrides(format, input_field, output_field, instruction, split, max_examples) + list(overrides)
    cfg = expert_config(manifest, config, all_overrides)
    task = load_task_from_config(data, cfg.data, name=name, seed=int(cfg.train.seed))
    record = add(dir, name, task, config=config, overrides=all_overrides, negatives=negatives, resume=resume,
                 wait=not no_wait, progress=progress, data_info={"format": cfg.data.format, "split": cfg.data.split})
    if record is not None:
        m = record.metrics
        parts = [f"loss {m.get('train_loss')}", f"{m.get('steps')} steps", f"{m.get('seconds')}s"]
        for key, label in (("heldout_accept_rate", "accepts own held-out"), ("heldout_reject_rate", "rejects negatives"),
                           ("heldout_near_miss_reject_rate", "near misses"),
                           ("heldout_exact_match", "held-out exact match")):
            if key in m:
                parts.append(f"{label} {100 * m[key]:.0f}%")
        print(f"added expert '{name}' ({len(manifest.experts) + 1} in the ensemble): " + ", ".join(parts))
    return 0


@command("ask", "answer queries")
def ask(dir: Dir,
        queries: Annotated[Sequence[str], Arg("queries to answer", positional=True, metavar="QUERY")],
        json_out: Annotated[bool, Arg("one JSON object per query", flags=("--json",))] = False,
        max_new_tokens: Annotated[Optional[int], Arg("answer length in tokens")] = None,
        threshold: Annotated[Optional[float], Arg("accept when P(<<pos>>) >= T (default: argmax or "
                                                  "calibrated)")] = None,
        mode: Annotated[Optional[str], Arg("routing mode", choices=ROUTING_MODES)] = None) -> int:
    """Answer queries through the ensemble and say which expert answered."""
    from see.ensemble import Ensemble

    ens = Ensemble.load(dir)
    if not ens.experts:
        print("note: the ensemble has no experts yet; the fallback answers every query", file=sys.stderr)
    results = ens.generate(list(queries), max_new_tokens=max_new_tokens, threshold=threshold, mode=mode)
    for r in results:
        if json_out:
            print(strict_json(r.to_json()))
        else:
            who = f"expert {r.expert}" if r.expert else "fallback"
            print(f"{r.answer}\t[{who}]" if len(results) == 1 else f"{r.query!r} -> {r.answer}\t[{who}]")
    return 0


def _adapter_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("adapter_model.*"))


@command("list", "list experts")
def list_experts(dir: Dir, json_out: JsonOut = False) -> int:
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
        print(strict_json({"base": manifest.base.ref, "fallback": manifest.fallback, "experts": rows}, indent=2))
        return 0
    print(f"base: {manifest.base.ref}   fallback: {manifest.fallback or 'base (adapters off)'}")
    if not rows:
        print("no experts yet")
        return 0
    print(f"{'#':>2}  {'name':<20} {'examples':>8} {'size':>9} {'steps':>6} {'loss':>7}   held-out: "
          f"{'accept':>6} {'reject':>6} {'EM':>5} {'base EM':>7} {'majority':>8} {'threshold':>9}")
    pct = lambda v: f"{100 * v:.0f}%" if isinstance(v, (int, float)) else "-"  # noqa: E731
    for r in rows:
        m = r["metrics"]
        threshold = f"{r['threshold']:.3f}" if r["threshold"] is not None else "argmax"
        print(f"{r['position']:>2}  {r['name']:<20} {r['examples'] or 0:>8} {r['adapter_bytes'] / 1024:>7.0f}kB "
              f"{m.get('steps', '-'):>6} {m.get('train_loss', float('nan')):>7.3f}             "
              f"{pct(m.get('heldout_accept_rate')):>6} {pct(m.get('heldout_reject_rate')):>6} "
              f"{pct(m.get('heldout_exact_match')):>5} {pct(m.get('base_exact_match')):>7} "
              f"{pct(m.get('majority_exact_match')):>8} {threshold:>9}")
        if m.get("attempts"):  # train.restarts: say that the figures are a later start's, and what came before
            tried = [f"seed {a['seed']} "
                     + (f"({a['loss_weighting']} loss) " if a.get("loss_weighting", "tokens") != "tokens" else "")
                     + ("failed" if "failed" in a else f"EM {pct(a.get('heldout_exact_match'))}"
                     + (" (no better than the commonest answer)" if a.get("answers_collapsed") else ""))
                     for a in m["attempts"]]
            print(f"{'':>4}trained {len(tried)} times, seed {m.get('kept_seed')} kept: " + ", ".join(tried))
        taken = sorted(((v["accepted"], k) for k, v in (m.get("earlier_tasks_taken") or {}).items()
                        if v["accepted"] > 0), reverse=True)
        if taken:  # the routing this expert took from older ones when it was added (newest first)
            print(f"{'':>4}accepts earlier tasks' kept queries: "
                  + ", ".join(f"{k} {pct(share)}" for share, k in taken[:3]) + (" ..." if len(taken) > 3 else ""))
        repair = m.get("repair")
        if repair and "failed" in repair:
            print(f"{'':>4}{repair['steps']} more steps against {', '.join(repair['tasks'])} failed "
                  f"({repair['failed']}): undone")
        elif repair:  # train.repair_steps: what the steps on half of those queries did to the other half
            print(f"{'':>4}{repair['steps']} more steps against "
                  + ", ".join(f"{k} ({pct(repair['taken_before'][k])} -> {pct(repair['taken_after'][k])} of the "
                              f"held-back half)" for k in repair["tasks"])
                  + (": kept" if repair["kept"] else ": not kept"))
        refit = m.get("refit")
        if refit:  # train.refit: the figures above are the first training's; say what the second one did
            print(f"{'':>4}trained again with its {refit['examples_added']} held-out positives (train.refit): "
                  + (f"failed ({refit['failed']}), first weights kept" if "failed" in refit else
                     f"held-out negatives rejected {pct(refit['heldout_negatives_rejected_before'])} -> "
                     f"{pct(refit['heldout_negatives_rejected_after'])}, "
                     + ("kept" if refit["kept"] else "not kept, first weights kept")
                     + (f", threshold {m['threshold']:.3f} -> {refit['threshold']:.3f}" if "threshold" in refit
                        else "")))
        elif m.get("refit_skipped"):
            print(f"{'':>4}not trained again with its held-out positives (train.refit): {m['refit_skipped']}")
    return 0


@command("eval", "evaluate on a task's data")
def eval_data(dir: Dir, data: Annotated[str, Arg("data file or folder")], format: Format = None,
              input_field: InputField = None, output_field: OutputField = None, instruction: Instruction = None,
              split: Annotated[Optional[str], Arg("split of folder datasets")] = "test",
              max_examples: MaxExamples = None, json_out: JsonOut = False,
              max_new_tokens: Annotated[Optional[int], Arg("answer length in tokens")] = None) -> int:
    """Accuracy (exact match, any acceptable answer) of the ensemble on a task, and where it was routed."""
    from see.data import load_task_from_config
    from see.ensemble import Ensemble

    cfg = load_config(None, _data_overrides(format, input_field, output_field, instruction, split, max_examples))
    task = load_task_from_config(data, cfg.data)
    ens = Ensemble.load(dir)
    report = ens.evaluate(task, max_new_tokens=max_new_tokens, progress=not json_out)
    report.pop("results")
    if json_out:
        print(strict_json(report, indent=2))
        return 0
    print(f"{task.name}: {report['examples']} examples, exact match {100 * report['score']:.1f}%")
    for name, share in report["routed"].items():
        print(f"  routed to {name:<20} {100 * share:5.1f}%")
    return 0


@command("calibrate", "store per-expert acceptance thresholds")
def calibrate(dir: Dir,
              target_frr: Annotated[float, Arg("largest share of an expert's own held-out positives it may "
                                               f"reject (default {RoutingConfig.target_frr}, as `add-expert`)",
                                               flags=("--target-frr", "--target-fpr"))] = RoutingConfig.target_frr,
              margin_odds: Annotated[float, Arg("room below that quantile, as a factor of odds (default "
                                                f"{RoutingConfig.margin_odds}, as `add-expert`; 1: none)")]
              = RoutingConfig.margin_odds,
              json_out: JsonOut = False) -> int:
    """Choose each expert's acceptance threshold on P(<<pos>>) by the rule `add-expert` uses (at most
    TARGET of its held-out positives below the quantile, MARGIN times lower in odds unless a held-out
    negative comes closer), and store it in the manifest (generate then uses it instead of argmax)."""
    from see.lifecycle import calibrate as store_thresholds

    if not 0.0 <= target_frr < 1.0:
        raise ConfigError(f"--target-frr must be in [0, 1), got {target_frr}", field="target-frr")
    if margin_odds < 1.0:
        raise ConfigError(f"--margin-odds must be at least 1, got {margin_odds}", field="margin-odds")
    rows = store_thresholds(dir, target_frr, margin_odds, log=lambda m: print(m, file=sys.stderr))
    if json_out:
        print(strict_json(rows, indent=2))
        return 0
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    print(f"{'expert':<20} {'threshold':>9}  {'own accepted (argmax -> threshold)':>36}  "
          f"{'negatives rejected (argmax -> threshold)':>42}")
    for r in rows:
        print(f"{r['expert']:<20} {r['threshold']:>9.4f}  {pct(r['accept_own_before']):>17} -> "
              f"{pct(r['accept_own_after']):<15}  {pct(r['reject_neg_before']):>21} -> {pct(r['reject_neg_after'])}")
    print(f"stored {len(rows)} threshold(s) in {dir}/manifest.json")
    return 0


@command("remove", "remove an expert (its rehearsal stays, so later experts stay valid)")
def remove(dir: Dir, name: Annotated[str, Arg("expert to remove", positional=True)],
           no_wait: Annotated[bool, Arg("fail at once if another process is writing")] = False) -> int:
    """Take an expert out of the ensemble, atomically and under the writer lock. Its adapter folder moves to
    DIR/.quarantine (delete it yourself when sure); its rehearsal queries stay in DIR/retired, so later experts
    keep rejecting that task and its queries reach the fallback."""
    from see.lifecycle import remove_expert

    remove_expert(dir, name, wait=not no_wait)
    return 0


@command("export", "export the ensemble for another engine (vLLM)")
def export(dir: Dir, out: Annotated[Path, Arg("new folder to write", positional=True)],
           format: Annotated[str, Arg("target engine", choices=("vllm",))] = "vllm") -> int:
    """Write the ensemble as a base checkpoint and plain LoRA adapters that vLLM loads: each expert's
    <<pos>>/<<neg>> rows become two rows of the exported base's vocabulary, so the adapters are plain LoRA.
    OUT/export.json lists the experts, their token ids and thresholds."""
    from see.export import export_vllm

    export_vllm(dir, out, log=lambda m: print(m, file=sys.stderr))
    return 0


#: Exit code of ``see doctor`` when it found a problem that is still there (0: none, or all repaired).
DOCTOR_PROBLEMS = 4


@command("doctor", "check an ensemble, and repair with --fix")
def doctor(dir: Dir, fix: Annotated[bool, Arg("repair what can be repaired safely: move orphans and leftovers "
                                              "to DIR/.quarantine, fix file modes")] = False,
           check_base: Annotated[bool, Arg("skip loading the base model to check its fingerprint",
                                           flags=("--no-base-check",))] = True,
           json_out: JsonOut = False) -> int:
    """Check the manifest, adapter hashes, rehearsal and held-out files, orphan folders, leftovers of
    interrupted runs, links, permissions and the base model. Changes nothing unless --fix; never deletes a file
    that is not see's own temporary file. Exit 0 when healthy, 4 when a problem remains."""
    import dataclasses

    from see.lifecycle import doctor as check

    findings = check(dir, fix=fix, check_base=check_base)
    remaining = [f for f in findings if f.severity == "error" and not f.fixed]
    if json_out:
        print(strict_json({"healthy": not remaining, "findings": [dataclasses.asdict(f) for f in findings]},
                          indent=2))
    else:
        for f in findings:
            state = " [fixed]" if f.fixed else (" [--fix repairs it]" if f.fixable else "")
            print(f"{f.severity}: {f.path}: {f.problem}{state}")
        print(f"{dir}: " + ("healthy" if not remaining else f"{len(remaining)} problem(s)"))
    return DOCTOR_PROBLEMS if remaining else 0


@command("bench", "continual-learning benchmark: SEE against every baseline")
def bench(config: Annotated[Path, Arg("benchmark YAML (see benchmarks/)", positional=True)],
          out: Annotated[Optional[Path], Arg("output folder (default: the config's `output`)")] = None,
          progress: Annotated[bool, Arg("no progress bar", flags=("--no-progress",))] = True,
          status: Annotated[bool, Arg("print which cells are done and which remain, with an estimate of the "
                                      "time left, and run nothing")] = False,
          report: Annotated[bool, Arg("write results.json and report.md from the cells done so far, and train "
                                      "or generate nothing (a long run's partial results, while it goes on)")] = False,
          overrides: Overrides = ()) -> int:
    """Run a continual-learning benchmark: every method on the stream, resumable cell by cell, with a report."""
    from see.bench.config import load_bench_config
    from see.bench.runner import bench_status, report_bench, run_bench

    cfg = load_bench_config(config, list(overrides))
    command_line = "see bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    target = Path(out) if out is not None else Path(cfg.output)
    if status:
        print(format_bench_status(bench_status(cfg, target)))
        return 0
    if report:
        results = report_bench(cfg, target, command=command_line)
    else:
        results = run_bench(cfg, target, log=lambda m: print(m, flush=True), progress=progress, command=command_line)
    print(f"{'method':<16} {'AP':>7} {'BWT':>7} {'route':>7} {'OOD TPR':>8} {'OOD FPR':>8}")
    for method, data in results["methods"].items():
        s = data["summary"]
        f = lambda k: "-" if s[k]["mean"] is None else f"{100 * s[k]['mean']:.1f}"  # noqa: E731
        print(f"{method:<16} {f('AP'):>7} {f('BWT'):>7} {f('Routing acc'):>7} {f('OOD TPR'):>8} {f('OOD FPR'):>8}")
    print(f"report: {target / 'report.md'}")
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def format_bench_status(st: dict) -> str:
    lines = [f"{st['name']} in {st['out']}: {st['done']}/{st['total']} cells done, "
             f"about {_duration(st['estimate_left'])} left",
             f"{'method':<16} {'seed':>4} {'cells':>9} {'spent':>7} {'left':>8}  commits"]
    for r in st["rows"]:
        left = "done" if r["done"] == r["total"] else _duration(r["estimate_left"])
        lines.append(f"{r['method']:<16} {r['seed']:>4} {r['done']:>4}/{r['total']:<4} {_duration(r['seconds']):>7} "
                     f"{left:>8}  {', '.join(r['commits']) or '-'}")
    return "\n".join(lines)


@command("bench-serve", "serving benchmark (routing cost vs number of experts)")
def bench_serve(out: Annotated[Path, Arg("output folder")] = Path("benchmarks/results/serving"),
                work: Annotated[Optional[Path], Arg("where to build the ensembles (reused when present)")] = None,
                quick: Annotated[bool, Arg("a smoke run at a tiny budget")] = False,
                kinds: Annotated[Sequence[str], Arg("expert kinds", choices=EXPERT_KINDS)] = EXPERT_KINDS) -> int:
    """Serving benchmark: latency, throughput and memory of routing as experts grow (N = 1..16), LoRA and aLoRA,
    against a plain single-adapter generate measured in the same run."""
    import tempfile

    from see.bench.serving import run, targets

    command_line = "see bench-serve " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    work = work or Path(tempfile.mkdtemp(prefix="see-serve-"))
    kwargs = {}
    if quick:
        kwargs = dict(ns=(1, 2), batch_sizes=(2,), queries=4, repeats=1, examples=24, max_new_tokens=3,
                      overrides=("train.max_steps=4", "train.batch_size=8"), accuracy_examples=24,
                      accuracy_overrides=("train.max_steps=4", "train.batch_size=8"), accuracy_test=4)
    results = run(Path(out), Path(work), kinds=tuple(kinds), log=lambda m: print(m, flush=True), command=command_line,
                  **kwargs)
    for desc, measured, met in targets(results):
        print(f"{'met ' if met else 'MISS' if met is False else '    '}  {desc}: {measured}")
    print(f"report: {Path(out) / 'report.md'}")
    return 0


@command("serve", "serve the ensemble over an OpenAI-compatible HTTP API")
def serve(dir: Dir,
          host: Annotated[str, Arg("address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
          port: Annotated[int, Arg("port to listen on")] = 8000,
          max_batch: Annotated[int, Arg("most requests answered by one generate call")] = 32,
          queue_size: Annotated[int, Arg("requests that may wait; past it, 503 with Retry-After")] = 256,
          batch_wait_ms: Annotated[float, Arg("how long a batch collects requests after its first one")] = 5.0,
          reload_interval: Annotated[float, Arg("seconds between manifest checks while idle")] = 1.0,
          log_level: Annotated[str, Arg("log level", choices=("debug", "info", "warning", "error"))] = "info",
          engine: Annotated[str, Arg("torch, or vllm (needs vLLM: ./dev setup-vllm here, pip install vllm on a "
                                     "GPU)", choices=("torch", "vllm"))] = "torch"
          ) -> int:
    """Serve the ensemble over HTTP with the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models,
    /health). The model is the folder's name. Concurrent requests are micro-batched, and experts added
    meanwhile (see add-expert) are picked up without a restart."""
    from see.serve import serve as run_server

    run_server(dir, host=host, port=port, max_batch=max_batch, queue_size=queue_size, batch_wait_ms=batch_wait_ms,
               reload_interval_s=reload_interval, log_level=log_level, engine=engine)
    return 0


@command("demo", "the offline demo: 4 experts on the embedded base")
def demo(dir: Annotated[Optional[Path], Arg("where to build the ensemble (default: a temp folder)")] = None,
         quick: Annotated[bool, Arg("fewer examples and steps (a smoke test)")] = False,
         seed: Annotated[int, Arg("seed")] = 0,
         no_general_negatives: Annotated[bool, Arg("train experts without the general-negatives pool, and so "
                                                   "without near misses (to measure what they buy)")] = False) -> int:
    """Build an ensemble on the embedded base, add 4 experts one by one, and print what it learned."""
    from see.demo import run_demo

    run_demo(dir, quick=quick, seed=seed, general_negatives=not no_general_negatives)
    return 0


# ----------------------------------------------------------------------------- the parser, from the signatures

def _unwrap(hint) -> tuple[type, bool]:
    """(element type, is a sequence) of a parameter's annotation, Optional removed."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union:
        hint = args[0]
    if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence):
        return typing.get_args(hint)[0], True
    return hint, False


def _add_parameter(p: argparse.ArgumentParser, param: inspect.Parameter, hint) -> bool:
    """Add one parameter's flag; False for the trailing overrides (collected by :func:`main`)."""
    base, meta = typing.get_args(hint)[0], typing.get_args(hint)[1:]
    if "overrides" in meta:
        return False
    arg = next((m for m in meta if isinstance(m, Arg)), Arg())
    kind, many = _unwrap(base)
    has_default = param.default is not inspect.Parameter.empty
    kwargs: dict = {"help": arg.help}
    if arg.choices:
        kwargs["choices"] = arg.choices
    if arg.metavar:
        kwargs["metavar"] = arg.metavar
    if arg.positional:
        if many:
            kwargs["nargs"] = "+"
        p.add_argument(param.name, type=kind, **kwargs)
        return True
    flags = arg.flags or ("--" + param.name.replace("_", "-"),)
    if kind is bool:
        p.add_argument(*flags, dest=param.name, action="store_false" if param.default else "store_true", **kwargs)
        return True
    if many:
        kwargs["nargs"] = "+"
    if has_default:
        kwargs["default"] = list(param.default) if many else param.default
    else:
        kwargs["required"] = True
    p.add_argument(*flags, dest=param.name, type=kind, **kwargs)
    return True


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser, and the commands that take trailing ``key=value`` overrides."""
    from see import __version__

    parser = argparse.ArgumentParser(prog="see", description="Continual fine-tuning with a Sequential Ensemble of "
                                     "Experts: one LoRA expert per task, routed newest first.")
    parser.add_argument("--version", action="version", version=f"see {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    takes_overrides = set()
    for name, (fn, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=fn.__doc__)
        hints = typing.get_type_hints(fn, include_extras=True)
        for param in inspect.signature(fn).parameters.values():
            if not _add_parameter(p, param, hints[param.name]):
                takes_overrides.add(name)
                p.epilog = "Any further key=value arguments override config keys, e.g. train.epochs=2 lora.r=8."
    return parser, takes_overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser, takes_overrides = build_parser()
    args, rest = parser.parse_known_args(argv)
    # key=value config overrides may come anywhere after the subcommand (argparse cannot mix a
    # trailing nargs="*" positional with options, so they are collected here)
    flags = [r for r in rest if r.startswith("-")]
    if flags or (rest and args.command not in takes_overrides):
        parser.error(f"unrecognized arguments: {' '.join(flags or rest)}")
    fn = COMMANDS[args.command][0]
    kwargs = {name: getattr(args, name) for name in inspect.signature(fn).parameters if hasattr(args, name)}
    if args.command in takes_overrides:
        kwargs["overrides"] = rest
    try:
        for item in rest:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not key=value", file="<command line>", field=item,
                                  hint="config overrides look like train.epochs=2")
        code = fn(**kwargs)
        _end_process_group()
        return code
    except SeeError as exc:
        if args.debug:
            raise
        print(f"see {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # a full disk, a read-only filesystem, a forbidden or missing file: the environment, not a bug; every
        # writer cleans up what it made before the error gets here
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"see {args.command}: error: {where}{exc.strerror or exc}\n  hint: {_os_hint(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the ensemble is unchanged unless a command said it finished", file=sys.stderr)
        return 130


def _end_process_group() -> None:
    """Destroy the process group a command ran in under `accelerate launch`, once it has finished.

    Left to interpreter exit, gloo's worker threads can still be joinable when their objects are
    destroyed, and a rank then aborts ("terminate called without an active exception", pytorch#190489)
    after its work is done. Only on success: a rank that failed may leave the others inside a collective,
    where destroying the group would hang them instead of letting the launcher stop them.
    """
    dist = sys.modules.get("torch.distributed")  # a command that never imported torch started no group
    if dist is not None and dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as exc:  # the command's work is saved; a failed teardown must not turn it into a crash
            print(f"warning: could not end the process group: {exc}", file=sys.stderr)


def _os_hint(exc: OSError) -> str:
    import errno

    return {errno.ENOSPC: "free some disk space and run the command again; the ensemble is unchanged",
            errno.EROFS: "the filesystem is read-only: copy the ensemble somewhere writable to change it",
            errno.EACCES: "check the file's permissions and owner", errno.EPERM: "check the file's permissions"
            }.get(exc.errno, "nothing was changed in the ensemble; run the command again once this is fixed")


if __name__ == "__main__":
    sys.exit(main())
