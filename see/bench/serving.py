"""Serving benchmark: routing cost as experts grow, for LoRA and aLoRA experts.

For N = 1, 2, 4, 8, 16 experts on the embedded base, measured side by side in
one run: latency per query batch (batch 1 and 16) and throughput of the
sequential cascade, batched routing, and a plain single-adapter
``generate`` of the same queries (the reference); and peak RSS with N
experts loaded (a fresh process per N). Ratios to the reference come from the
same run, so the machine's noise cancels as far as it can.
"""
from __future__ import annotations

import cProfile
import io
import json
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from see.embedded.families import FAMILIES, STREAM, make_task
from see.engine.decode import pad_left
from see.jsonio import strict_json
from see.ensemble import Ensemble
from see.lifecycle import add_expert, init_ensemble
from see.store import EnsembleStore

MODES = ("sequential", "batched", "reference")


def _families_for(n: int) -> list[str]:
    names = list(FAMILIES)
    return [names[k % len(names)] for k in range(n)]


def expert_name(k: int, family: str) -> str:
    return family if k < len(FAMILIES) else f"{family}-{k}"


def build_ensemble(path: Path, kind: str, n: int, examples: int, overrides: Sequence[str], log) -> Path:
    """An ensemble of ``n`` experts (families cycled), reused when a previous run built it."""
    if not EnsembleStore(path).exists():
        init_ensemble(path, overrides=[f"model.expert_kind={kind}"], log=log)
    have = {e.name for e in EnsembleStore(path).read().experts}
    for k, family in enumerate(_families_for(n)):
        name = expert_name(k, family)
        if name in have:
            continue
        t0 = time.time()
        add_expert(path, name, make_task(family, examples, seed=k), overrides=list(overrides), progress=False,
                   log=lambda m: None)
        log(f"  [{kind}] expert {k + 1}/{n} '{name}' trained in {time.time() - t0:.0f}s")
    return path


def queries_for(n_experts: int, count: int, seed: int = 0) -> list[dict]:
    """A mix of the experts' tasks (test split), round robin."""
    fams = _families_for(n_experts)
    per = -(-count // len(fams))
    pools = [make_task(f, per, seed=1000 + seed, split="test") for f in fams]
    out = []
    for i in range(per):
        for t in pools:
            out.append({"instruction": t.instruction, "input": t.examples[i].input})
    return out[:count]


def _reference(ens, prompts: list[str], max_new_tokens: int) -> int:
    """A plain single-adapter ``generate`` (the newest expert), as a PEFT user would serve one LoRA."""
    ens.model.set_adapter(ens.experts[-1])
    ids, mask = pad_left(ens.prompt.encode_all(prompts, max_new_tokens), ens.tokenizer.pad_token_id)
    out = ens.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             min_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=ens.tokenizer.pad_token_id, eos_token_id=ens.tokenizer.eos_token_id)
    return int(out[:, ids.shape[1]:].numel())


def run_mode(ens, mode: str, batches: list[list[dict]], max_new_tokens: int) -> tuple[float, int]:
    """Seconds for all batches and completion tokens produced."""
    tokens = 0
    t0 = time.perf_counter()
    for batch in batches:
        if mode == "reference":
            tokens += _reference(ens, [ens.prompt_for(q) for q in batch], max_new_tokens)
        else:
            results = ens.generate(batch, max_new_tokens=max_new_tokens, mode=mode, ignore_eos=True)
            # answer tokens, as for the reference (an expert's <<pos>> is routing, not output)
            tokens += sum(r.completion_tokens - (r.expert is not None) for r in results)
    return time.perf_counter() - t0, tokens


def measure(ens, queries: list[dict], batch_size: int, max_new_tokens: int, repeats: int) -> dict:
    """Interleaved repeats (A B C A B C ...), medians per mode."""
    batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
    for mode in MODES:  # warm-up
        run_mode(ens, mode, batches[:1], max_new_tokens)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    tokens: dict[str, int] = {}
    for _ in range(repeats):
        for mode in MODES:
            seconds, tok = run_mode(ens, mode, batches, max_new_tokens)
            times[mode].append(seconds)
            tokens[mode] = tok
    out = {}
    for mode in MODES:
        total = statistics.median(times[mode])
        out[mode] = {"latency_per_batch_s": total / len(batches), "tokens": tokens[mode],
                     "tokens_per_s": tokens[mode] / total if total else None, "runs_s": times[mode]}
    return out


def rss_probe(path: Path, queries: list[dict], max_new_tokens: int, max_rows: int | None = None) -> int:
    """Peak RSS (bytes) of a fresh process that loads the ensemble and answers a batch.

    ``max_rows`` sets ``routing.max_rows_per_forward`` for the probe (the memory bound users set)."""
    bound = "" if max_rows is None else f"ens.manifest.routing.max_rows_per_forward = {int(max_rows)}\n"
    code = (
        "import json\n"
        "from see.ensemble import Ensemble\n"
        f"ens = Ensemble.load({str(path)!r})\n" + bound +
        f"ens.generate(json.loads({json.dumps(json.dumps(queries))}), max_new_tokens={max_new_tokens})\n"
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the forking parent
        # across exec, so a probe started from this (large) process would report this process's peak.
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"RSS probe of {path} failed:\n{r.stderr[-4000:]}")
    return int(r.stdout.strip().splitlines()[-1]) * 1024  # Linux reports kB


def profile_batched(ens, queries: list[dict], max_new_tokens: int, out: Path) -> str:
    """Where batched routing spends its time (cProfile, cumulative), for the report."""
    prof = cProfile.Profile()
    prof.enable()
    ens.generate(queries, max_new_tokens=max_new_tokens, mode="batched")
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
    text = buf.getvalue()
    out.write_text(text)
    return text


def accuracy_by_kind(work: Path, kinds: Sequence[str], examples: int, overrides: Sequence[str], test: int,
                     log) -> dict:
    """Expert accuracy of a 4-task stream per expert kind (same budget, same seed)."""
    out = {}
    for kind in kinds:
        path = work / f"accuracy-{kind}"
        if path.exists():
            shutil.rmtree(path)
        init_ensemble(path, overrides=[f"model.expert_kind={kind}"], log=lambda m: None)
        for family in STREAM:
            add_expert(path, family, make_task(family, examples), overrides=list(overrides), progress=False,
                       log=lambda m: None)
        ens = Ensemble.load(path)
        scores = {}
        for family in STREAM:
            report = ens.evaluate(make_task(family, test, split="test"))
            scores[family] = {"accuracy": report["score"], "routed_to_own": report["routed"].get(family, 0.0)}
        mean = sum(s["accuracy"] for s in scores.values()) / len(scores)
        routing = sum(s["routed_to_own"] for s in scores.values()) / len(scores)
        out[kind] = {"tasks": scores, "mean_accuracy": mean, "mean_routing": routing}
        log(f"  [{kind}] 4-task stream accuracy {100 * mean:.1f}%, routing accuracy {100 * routing:.1f}%")
    return out


def run(out: Path, work: Path, ns: Sequence[int] = (1, 2, 4, 8, 16), kinds: Sequence[str] = ("lora", "alora"),
        batch_sizes: Sequence[int] = (1, 16), queries: int = 32, max_new_tokens: int = 16, repeats: int = 5,
        examples: int = 400, overrides: Sequence[str] = ("train.epochs=4", "train.lr=2e-3"),
        accuracy_examples: int = 600, accuracy_overrides: Sequence[str] = ("train.epochs=5", "train.lr=2e-3"),
        accuracy_test: int = 60, log: Callable[[str], None] = print, command: str = "") -> dict:
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    results: dict = {"command": command, "ns": list(ns), "kinds": list(kinds), "batch_sizes": list(batch_sizes),
                     "queries": queries, "max_new_tokens": max_new_tokens, "repeats": repeats,
                     "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                 "torch": torch.__version__, "threads": torch.get_num_threads()},
                     "cells": []}
    for kind in kinds:
        log(f"building a {max(ns)}-expert {kind} ensemble ...")
        full = build_ensemble(work / f"full-{kind}", kind, max(ns), examples, overrides, log)
        for n in ns:
            path = EnsembleStore(full).subset(n, work / f"n{n}-{kind}")
            ens = Ensemble.load(path)
            qs = queries_for(n, queries)
            for bs in batch_sizes:
                m = measure(ens, qs, bs, max_new_tokens, repeats)
                ref = m["reference"]["latency_per_batch_s"]
                cell = {"kind": kind, "n": n, "batch": bs, **{f"{mode}": m[mode] for mode in MODES},
                        "ratio_batched": m["batched"]["latency_per_batch_s"] / ref,
                        "ratio_sequential": m["sequential"]["latency_per_batch_s"] / ref,
                        "throughput_ratio_batched": m["batched"]["tokens_per_s"] / m["reference"]["tokens_per_s"]}
                results["cells"].append(cell)
                log(f"  [{kind}] N={n:>2} batch={bs:>2}: batched {cell['ratio_batched']:.2f}x, sequential "
                    f"{cell['ratio_sequential']:.2f}x of the single-adapter reference "
                    f"({1000 * ref:.0f} ms/batch)")
            rss = rss_probe(path, qs[:16], max_new_tokens)
            bounded = rss_probe(path, qs[:16], max_new_tokens, max_rows=BOUNDED_ROWS)
            results.setdefault("rss", []).append({"kind": kind, "n": n, "bytes": rss, "bytes_bounded": bounded})
            log(f"  [{kind}] N={n:>2} peak RSS {rss / 2 ** 20:.0f} MiB "
                f"({bounded / 2 ** 20:.0f} MiB with routing.max_rows_per_forward={BOUNDED_ROWS})")
            if n == 8:
                profile_batched(ens, qs[:16], max_new_tokens, out / f"profile-batched-{kind}-n8.txt")
            del ens
    log("expert accuracy by kind on the 4-task embedded stream ...")
    results["accuracy"] = accuracy_by_kind(work, kinds, accuracy_examples, accuracy_overrides, accuracy_test, log)
    results["seconds"] = round(time.time() - start, 1)
    (out / "results.json").write_text(strict_json(results, indent=2) + "\n")
    plot(results, out / "latency.png")
    (out / "report.md").write_text(report(results))
    return results


#: The memory bound of the second RSS probe: rows per forward, so N experts x 16 queries run in groups.
BOUNDED_ROWS = 16


def _cell(results, kind, n, batch):
    return next((c for c in results["cells"] if c["kind"] == kind and c["n"] == n and c["batch"] == batch), None)


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """The issue's targets, each (description, measured, met)."""
    rows = []

    def add(desc, kind, n, key, bound, batch=16, higher=False):
        c = _cell(results, kind, n, batch)
        if c is None:
            rows.append((desc, "not measured", None))
            return
        v = c[key]
        rows.append((desc, f"{v:.2f}x", v >= bound if higher else v <= bound))

    add("LoRA, batched routing, N=8, batch 16: latency <= 2x reference", "lora", 8, "ratio_batched", 2.0)
    add("aLoRA, batched routing, N=8, batch 16: latency <= 1.3x reference", "alora", 8, "ratio_batched", 1.3)
    add("aLoRA, batched routing, N=16, batch 16: latency <= 1.5x reference", "alora", 16, "ratio_batched", 1.5)
    add("LoRA, batched routing, N=8, batch 16: throughput >= 0.7x reference", "lora", 8,
        "throughput_ratio_batched", 0.7, higher=True)
    add("aLoRA, batched routing, N=8, batch 16: throughput >= 0.7x reference", "alora", 8,
        "throughput_ratio_batched", 0.7, higher=True)
    for kind in results["kinds"]:
        rss = {r["n"]: r["bytes"] for r in results.get("rss", []) if r["kind"] == kind}
        if 1 in rss and 8 in rss:
            ratio = rss[8] / rss[1]
            rows.append((f"{kind}: peak RSS at N=8 <= 1.1x RSS at N=1", f"{ratio:.3f}x", ratio <= 1.1))
        bounded = {r["n"]: r.get("bytes_bounded") for r in results.get("rss", []) if r["kind"] == kind}
        if bounded.get(1) and bounded.get(8):
            ratio = bounded[8] / bounded[1]
            rows.append((f"{kind}: the same with routing.max_rows_per_forward={BOUNDED_ROWS}", f"{ratio:.3f}x",
                         ratio <= 1.1))
    acc = results.get("accuracy", {})
    if "lora" in acc and "alora" in acc:
        gap = 100 * (acc["lora"]["mean_accuracy"] - acc["alora"]["mean_accuracy"])
        rows.append(("aLoRA expert accuracy within 2 points of LoRA", f"{gap:+.1f} points (LoRA - aLoRA)",
                     gap <= 2.0))
    return rows


def report(results: dict) -> str:
    lines = ["# Serving benchmark", "",
             f"Produced by `{results['command'] or 'see bench-serve'}` in {results['seconds'] / 60:.1f} min on "
             f"{results['machine']['platform']} (torch {results['machine']['torch']}, "
             f"{results['machine']['threads']} threads), embedded base (0.98M parameters).", "",
             f"Each cell: median over {results['repeats']} interleaved repeats of {results['queries']} mixed queries "
             f"of the experts' tasks, greedy, exactly {results['max_new_tokens']} new tokens per query (EOS ignored, "
             "as serving benchmarks do, so every mode does the same decoding work and tokens/s compare). "
             "*Reference*: a plain single-adapter PEFT `generate` of the same queries (the newest expert, no "
             "routing). Ratios are to the reference measured in the same run.", "", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for desc, measured, met in targets(results):
        lines.append(f"| {desc} | {measured} | {'yes' if met else ('no' if met is False else '-')} |")
    lora_ref = {(c["n"], c["batch"]): c["reference"]["latency_per_batch_s"] for c in results["cells"]
                if c["kind"] == "lora"}
    if "alora" in results["kinds"] and lora_ref:
        lines += ["", "The aLoRA rows are compared with a single aLoRA adapter's `generate`, which pays PEFT's "
                  "per-call offset search; against the plain single-LoRA reference of the same N and batch "
                  "(same run), aLoRA batched routing costs:", "",
                  "| N | batch | aLoRA batched / LoRA reference |", "|---|---|---|"]
        for c in results["cells"]:
            if c["kind"] == "alora" and (c["n"], c["batch"]) in lora_ref:
                lines.append(f"| {c['n']} | {c['batch']} | "
                             f"{c['batched']['latency_per_batch_s'] / lora_ref[(c['n'], c['batch'])]:.2f} |")
    for kind in results["kinds"]:
        lines += ["", f"## {kind} experts", "",
                  "| N | batch | sequential ms/batch | batched ms/batch | reference ms/batch | sequential / ref | "
                  "batched / ref | batched tokens/s | reference tokens/s | peak RSS MiB | peak RSS MiB, "
                  f"{BOUNDED_ROWS} rows/forward |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        rss = {r["n"]: r["bytes"] for r in results.get("rss", []) if r["kind"] == kind}
        rss_b = {r["n"]: r.get("bytes_bounded") or 0 for r in results.get("rss", []) if r["kind"] == kind}
        for c in results["cells"]:
            if c["kind"] != kind:
                continue
            lines.append(
                f"| {c['n']} | {c['batch']} | {1000 * c['sequential']['latency_per_batch_s']:.1f} | "
                f"{1000 * c['batched']['latency_per_batch_s']:.1f} | {1000 * c['reference']['latency_per_batch_s']:.1f} | "
                f"{c['ratio_sequential']:.2f} | {c['ratio_batched']:.2f} | {c['batched']['tokens_per_s']:.0f} | "
                f"{c['reference']['tokens_per_s']:.0f} | {rss.get(c['n'], 0) / 2 ** 20:.0f} | "
                f"{rss_b.get(c['n'], 0) / 2 ** 20:.0f} |")
    acc = results.get("accuracy", {})
    if acc:
        lines += ["", "## Expert accuracy and routing accuracy by kind (4-task embedded stream, same budget and seed)",
                  "", "Each cell: accuracy (share routed to the task's own expert).", "",
                  "| kind | " + " | ".join(STREAM) + " | mean |", "|---" * (len(STREAM) + 2) + "|"]
        for kind, a in acc.items():
            lines.append(f"| {kind} | " + " | ".join(
                f"{100 * a['tasks'][f]['accuracy']:.1f}% ({100 * a['tasks'][f]['routed_to_own']:.0f}%)" for f in STREAM)
                + f" | {100 * a['mean_accuracy']:.1f}% ({100 * a.get('mean_routing', 0):.0f}%) |")
    lines += ["", "Peak RSS is the high-water mark (`VmHWM`) of a fresh process that loads the ensemble and "
              "answers 16 queries. Most of it is the Python, torch and transformers runtime; what grows with N "
              "is the transient activations of the N x 16-row routing forward, which "
              "`routing.max_rows_per_forward` bounds (second RSS column).",
              "", "Profiles of batched routing at N=8 (cProfile, cumulative): `profile-batched-*-n8.txt`.",
              "", "![latency vs N](latency.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = results["batch_sizes"]
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
    for ax, bs in zip(axes[0], batches):
        for kind, style in zip(results["kinds"], ("-", "--")):
            cells = sorted((c for c in results["cells"] if c["kind"] == kind and c["batch"] == bs), key=lambda c: c["n"])
            ns = [c["n"] for c in cells]
            for mode, color in zip(MODES, ("tab:red", "tab:blue", "tab:gray")):
                ax.plot(ns, [1000 * c[mode]["latency_per_batch_s"] for c in cells], style, color=color, marker="o",
                        label=f"{kind} {mode}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("experts N")
        ax.set_ylabel("ms per batch")
        ax.set_title(f"batch {bs}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
