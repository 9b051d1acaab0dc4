"""Aggregate a benchmark's cells into metrics (mean and spread over seeds), a report and plots."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from see.bench.methods import ROUTING_METHODS
from see.metrics import (auroc, average_performance, backward_transfer, diagonal_gap, fallback_rate, forgetting,
                         forward_transfer, mean_and_spread, paired_difference, routing_accuracy, routing_confusion,
                         tpr_at_fpr)

METRICS = ("AP", "BWT", "FWT", "Forgetting", "Routing acc", "OOD TPR", "OOD FPR", "OOD TPR@5%FPR", "OOD AUROC")
#: The in-distribution false-positive rate at which the threshold-free OOD TPR is read.
OOD_MAX_FPR = 0.05
#: How far below the oracle SEE's diagonal may be and still count as parity: a correctly routed expert should
#: answer as well as a plain LoRA trained on the same examples (the target the project set itself).
DIAGONAL_TOLERANCE = 0.02
#: Misrouted test queries kept per (task, chosen) pair and seed, for the report's examples.
FAILURE_EXAMPLES = 3

DEFINITIONS = """\
- **R[i][j]**: score on task j after training through task i (exact match, any acceptable answer, for
  classification-style tasks; ROUGE-L F1 for generative ones, as set per task in the config).
- **AP** (average performance) = mean of the last row, (1/T) Σ_j R[T][j].
- **BWT** (backward transfer) = mean over j < T of R[T][j] − R[j][j].
- **FWT** (forward transfer) = mean over j > 1 of R[j−1][j] − Z[j], where Z[j] is the base model's zero-shot
  score on task j, measured in the same run.
- **Forgetting** = mean over j < T of (max over i < T of R[i][j]) − R[T][j].
- **Routing acc**: share of test queries (all tasks, after the last task) answered by their own task's expert;
  the confusion matrix counts task → chosen expert or fallback. For Arrow, which mixes experts per token, the
  chosen expert is the one with the largest mixing weight averaged over the query's tokens and layers.
- **OOD TPR**: share of out-of-distribution queries that reach the fallback. **OOD FPR**: share of
  in-distribution test queries sent to the fallback. **OOD AUROC**: area under the ROC curve separating OOD
  from in-distribution queries by the method's confidence (SEE: max P(<<pos>>) over experts; kNN: similarity
  to the nearest stored query; Arrow: its largest mixing weight), computed without any threshold.
- **OOD TPR@5%FPR**: the largest share of OOD queries that a single threshold on that same confidence sends to
  the fallback while it sends at most 5% of in-distribution test queries there. The threshold is picked on the
  test scores themselves, so it is the best any threshold could do, not the method's own operating point
  (that is OOD TPR / OOD FPR).
- mtl-lora trains once on all tasks, so only its last row exists (AP only). Methods without routing have no
  routing or OOD figures.
- Each figure is the mean ± sample standard deviation over seeds."""


def _matrix(cells, method: str, seed: int, T: int) -> list[list[float | None]]:
    return [[(c or {}).get("score") for c in (cells.get(method, seed, i, j) for j in range(T))] for i in range(T)]


def _complete(R: list[list[float | None]], method: str) -> bool:
    """Whether a seed has every cell of the method's matrix (multi-task training has only the last row)."""
    rows = R[-1:] if method == "mtl-lora" else R
    return all(v is not None for row in rows for v in row)


def counted_seeds(data: dict) -> dict:
    """The per-seed figures that the summaries average: the complete seeds, or every seed while none is.

    A seed still running has a partial matrix, and AP, BWT, FWT and the routing confusion of a partial matrix
    are not the same quantities as a finished seed's: averaged in, they would move the mean toward whichever
    rows happen to be done."""
    done = {s: m for s, m in data["per_seed"].items() if m.get("complete")}
    return done or data["per_seed"]


def aggregate(cfg: Any, cells, notes: list[str], inputs: dict | None = None, ood_inputs: dict | None = None) -> dict:
    """Metrics per method and seed, and their mean and spread. ``inputs`` ({seed: one list of test inputs per
    task, in cell order}) and ``ood_inputs`` ({seed: the OOD inputs, in cell order}) let the report quote
    misrouted queries."""
    T = len(cfg.stream)
    names = [t.name for t in cfg.stream]
    out: dict = {"name": cfg.name, "base": cfg.base, "tasks": names, "seeds": list(cfg.seeds),
                 "methods": {}, "notes": notes, "zero_shot": {}}
    for seed in cfg.seeds:
        out["zero_shot"][str(seed)] = [(cells.get("base", seed, "zero", j) or {}).get("score") for j in range(T)]
    for method in cfg.methods:
        per_seed = {}
        for seed in cfg.seeds:
            R = _matrix(cells, method, seed, T)
            zero = out["zero_shot"][str(seed)]
            m = {"R": R, "AP": average_performance(R), "BWT": backward_transfer(R), "FWT": forward_transfer(R, zero),
                 "Forgetting": forgetting(R), "complete": _complete(R, method)}
            if method in ROUTING_METHODS:
                last = [cells.get(method, seed, T - 1, j) or {} for j in range(T)]
                true = [names[j] for j in range(T) for _ in last[j].get("chosen", [])]
                chosen = [c for j in range(T) for c in last[j].get("chosen", [])]
                ind_scores = [s for j in range(T) for s in last[j].get("ood_score", []) if s is not None]
                m["Routing acc"] = routing_accuracy(true, chosen)
                m["confusion"] = routing_confusion(true, chosen, names) if true else None
                ood = cells.get(method, seed, T - 1, "ood")
                m["complete"] = m["complete"] and (ood is not None or not cfg.ood)
                m["OOD FPR"] = fallback_rate(chosen)
                if ood:
                    m["OOD TPR"] = fallback_rate(ood["chosen"])
                    ood_scores = [s for s in ood["ood_score"] if s is not None]
                    # OOD is the positive class: a lower in-distribution score means "more OOD"
                    m["OOD AUROC"] = auroc([-s for s in ood_scores], [-s for s in ind_scores])
                    m["OOD TPR@5%FPR"] = tpr_at_fpr([-s for s in ood_scores], [-s for s in ind_scores], OOD_MAX_FPR)
                    m["ood_routing"] = ood_routing(ood.get("families", []), ood["chosen"],
                                                   (ood_inputs or {}).get(seed))
                seed_inputs = (inputs or {}).get(seed)
                if seed_inputs:
                    m["failures"] = misrouted_examples(names, [c.get("chosen", []) for c in last], seed_inputs)
            per_seed[str(seed)] = m
        counted = counted_seeds({"per_seed": per_seed})
        summary = {}
        for key in METRICS:
            mu, sd = mean_and_spread([m.get(key) for m in counted.values()])
            summary[key] = {"mean": mu, "std": sd}
        mean_R = [[mean_and_spread([m["R"][i][j] for m in counted.values()])[0] for j in range(T)] for i in range(T)]
        out["methods"][method] = {"per_seed": per_seed, "summary": summary, "mean_R": mean_R,
                                  "seeds_counted": [int(s) for s in counted]}
    out["diagonal"] = {ours: diagonal_against(cells, out, ours, "oracle") for ours in ("see", "see-calibrated")
                       if ours in out["methods"] and "oracle" in out["methods"]}
    return out


def diagonal_against(cells, results: dict, ours: str, reference: str) -> dict:
    """Per task: R[j][j] of ours minus the reference's, per seed and as mean ± std over the seeds both have;
    and, where both cells stored per-query scores, the paired difference with its 95% interval per seed."""
    T = len(results["tasks"])
    gaps, paired = {}, {}
    for seed in results["seeds"]:
        a = results["methods"][ours]["per_seed"][str(seed)]["R"]
        b = results["methods"][reference]["per_seed"][str(seed)]["R"]
        gaps[str(seed)] = diagonal_gap(a, b)
        row = []
        for j in range(T):
            ca, cb = cells.get(ours, seed, j, j) or {}, cells.get(reference, seed, j, j) or {}
            both = "scores" in ca and "scores" in cb and len(ca["scores"]) == len(cb["scores"])
            row.append(paired_difference(ca["scores"], cb["scores"]) if both else None)
        paired[str(seed)] = row
    stats = [mean_and_spread([gaps[s][j] for s in gaps]) for j in range(T)]

    def diag(method: str, j: int) -> float | None:  # over the seeds both methods have, as the gap is
        R = {s: results["methods"][method]["per_seed"][s]["R"] for s in gaps if gaps[s][j] is not None}
        return mean_and_spread([r[j][j] for r in R.values()])[0]

    return {"reference": reference, "per_seed": gaps, "paired": paired,
            "ours_mean": [diag(ours, j) for j in range(T)], "reference_mean": [diag(reference, j) for j in range(T)],
            "mean": [m for m, _ in stats], "std": [sd for _, sd in stats],
            "seeds": [sum(gaps[s][j] is not None for s in gaps) for j in range(T)]}


def _diagonal_section(results: dict) -> list[str]:
    lines = []
    for ours, d in results.get("diagonal", {}).items():
        ref = d["reference"]
        lines += [f"R[j][j], task j right after its own training: {ours} (routed, as served) minus {ref} (the "
                  f"task's own LoRA, given the task), in points. Parity means within {100 * DIAGONAL_TOLERANCE:.0f} "
                  "points below the oracle on every task; the paired interval (per seed, where the cells stored "
                  "per-query scores) says whether a gap is larger than the test set's noise.", "",
                  f"| task | {ours} | {ref} | difference (mean ± std) | seeds | within {100 * DIAGONAL_TOLERANCE:.0f} "
                  "| paired difference per seed, 95% interval |", "|---|---|---|---|---|---|---|"]
        for j, task in enumerate(results["tasks"]):
            mine, theirs, mu, sd = d["ours_mean"][j], d["reference_mean"][j], d["mean"][j], d["std"][j]
            if mu is None:
                lines.append(f"| {task} | – | – | – | 0 | – | – |")
                continue
            ok = "yes" if mu >= -DIAGONAL_TOLERANCE - 1e-9 else "**no**"  # -0.02 exactly passes, float error aside
            pairs = [f"seed {s}: {100 * p['mean']:+.1f} ± {100 * p['half_width']:.1f}"
                     for s, row in d["paired"].items() for p in [row[j]] if p is not None]
            lines.append(f"| {task} | {100 * mine:.1f} | {100 * theirs:.1f} | {100 * mu:+.1f} ± {100 * sd:.1f} | "
                         f"{d['seeds'][j]} | {ok} | {'; '.join(pairs) or '–'} |")
        lines.append("")
    return lines


def misrouted_examples(names: list[str], chosen: list[list], inputs: list[list[str]],
                       per_pair: int = FAILURE_EXAMPLES) -> dict[str, list[str]]:
    """{"task -> chosen": the first few misrouted inputs} over one seed's last row (None is the fallback)."""
    out: dict[str, list[str]] = {}
    for j, task in enumerate(names):
        for c, text in zip(chosen[j], inputs[j]):
            if c == task:
                continue
            examples = out.setdefault(f"{task} -> {'fallback' if c is None else c}", [])
            if len(examples) < per_pair:
                examples.append(" ".join(text.split())[:160])
    return out


def ood_routing(families: list[str], chosen: list, inputs: list[str] | None = None,
                per_pair: int = FAILURE_EXAMPLES) -> dict:
    """Where one seed's OOD queries went: ``counts`` {family: {expert or "fallback": n}}, and ``kept``
    {"family -> expert": the first few inputs an expert answered instead of the fallback}."""
    counts: dict[str, dict[str, int]] = {}
    kept: dict[str, list[str]] = {}
    for k, (family, c) in enumerate(zip(families, chosen)):
        where = "fallback" if c is None else c
        bucket = counts.setdefault(family, {})
        bucket[where] = bucket.get(where, 0) + 1
        if c is not None and inputs is not None and k < len(inputs):
            examples = kept.setdefault(f"{family} -> {c}", [])
            if len(examples) < per_pair:
                examples.append(" ".join(inputs[k].split())[:160])
    return {"counts": counts, "kept": kept}


def _ood_lines(data: dict, tasks: list[str]) -> list[str]:
    """OOD family x (expert or fallback) counts over all seeds, and the OOD queries experts kept, quoted."""
    routed = [m["ood_routing"] for m in counted_seeds(data).values() if m.get("ood_routing")]
    if not routed:
        return []
    families = list(dict.fromkeys(f for r in routed for f in r["counts"]))
    cols = tasks + ["fallback"]
    lines = [f"Out-of-distribution queries, summed over {len(routed)} seed(s): where each OOD family went.", "",
             "| OOD family \\ chosen | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for f in families:
        row = [sum(r["counts"].get(f, {}).get(c, 0) for r in routed) for c in cols]
        lines.append(f"| {f} | " + _count_cells(row) + " |")
    kept = sorted(((sum(r["counts"].get(f, {}).get(t, 0) for r in routed), f, t) for f in families for t in tasks),
                  reverse=True)
    kept = [k for k in kept if k[0]]
    lines.append("")
    if not kept:
        return lines + ["Every OOD query reached the fallback.", ""]
    lines.append("OOD queries an expert answered instead of the fallback:")
    for count, f, t in kept[:4]:
        quoted = next((r["kept"][f"{f} -> {t}"] for r in routed if r["kept"].get(f"{f} -> {t}")), [])
        lines.append(f"- `{f} -> {t}`: {count} queries; e.g. " + "; ".join(f"“{q}”" for q in quoted[:2])
                     if quoted else f"- `{f} -> {t}`: {count} queries")
    return lines + [""]


def _count_cells(row: list[int]) -> str:
    """A table row's counts with their share of the row."""
    total = max(1, sum(row))
    return " | ".join(f"{v} ({100 * v / total:.0f}%)" for v in row)


def _fmt(stat: dict, pct: bool = True) -> str:
    if stat["mean"] is None:
        return "–"
    scale = 100 if pct else 1
    return f"{scale * stat['mean']:.1f} ± {scale * stat['std']:.1f}"


def _comparisons(results: dict) -> list[str]:
    methods = results["methods"]
    lines = []
    for ours in ("see", "see-calibrated"):
        if ours not in methods:
            continue
        ap = methods[ours]["summary"]["AP"]
        for other, data in methods.items():
            if other == ours or other.startswith("see") or data["summary"]["AP"]["mean"] is None or ap["mean"] is None:
                continue
            o = data["summary"]["AP"]
            diff = 100 * (ap["mean"] - o["mean"])
            spread = 100 * max(ap["std"] or 0, o["std"] or 0)
            seeds = min(_seeds_with(methods[ours], "AP"), _seeds_with(data, "AP"))
            if seeds < 2:
                verdict = "(one seed, no spread to judge by) scores " + ("above" if diff > 0 else "at or below")
            elif abs(diff) <= spread:
                verdict = "is within the seed spread of"
            elif diff > 0:
                verdict = "beats"
            else:
                verdict = "**does not beat**"
            lines.append(f"- {ours} {verdict} {other} on AP ({100 * ap['mean']:.1f} vs {100 * o['mean']:.1f}, "
                         f"difference {diff:+.1f} points; seed spread up to {spread:.1f}; {seeds} seed(s)).")
        s = methods[ours]["summary"]
        if s["Routing acc"]["mean"] is not None:
            lines.append(f"- {ours}: routing accuracy {_fmt(s['Routing acc'])}; BWT {_fmt(s['BWT'])}.")
        if s["OOD TPR"]["mean"] is not None:
            lines.append(f"- {ours}, OOD at its own thresholds: TPR {_fmt(s['OOD TPR'])} with in-distribution FPR "
                         f"{_fmt(s['OOD FPR'])}; the best single threshold on its scores reaches TPR "
                         f"{_fmt(s['OOD TPR@5%FPR'])} at FPR ≤ {100 * OOD_MAX_FPR:.0f}% (AUROC "
                         f"{_fmt(s['OOD AUROC'])}).")
    return lines


def _seeds_with(data: dict, key: str) -> int:
    return sum(m.get(key) is not None for m in counted_seeds(data).values())


def _routing_section(results: dict) -> list[str]:
    """Confusion tables (counts over all seeds) and the largest failures, quoted."""
    tasks = results["tasks"]
    lines: list[str] = []
    for method, data in results["methods"].items():
        mats = [m["confusion"] for m in counted_seeds(data).values() if m.get("confusion")]
        if not mats:
            continue
        C = [[sum(M[i][j] for M in mats) for j in range(len(tasks) + 1)] for i in range(len(tasks))]
        lines += [f"### {method}", "", f"Test queries after the last task, summed over {len(mats)} seed(s); "
                  "each cell is a count (share of the row).", "",
                  "| task \\ chosen | " + " | ".join(tasks) + " | fallback |", "|---" * (len(tasks) + 2) + "|"]
        for i, row in enumerate(C):
            lines.append(f"| {tasks[i]} | " + _count_cells(row) + " |")
        pairs = sorted(((C[i][j], i, j) for i in range(len(tasks)) for j in range(len(tasks) + 1)
                        if i != j and C[i][j]), reverse=True)
        lines.append("")
        if not pairs:
            lines += ["No test query went to another task's expert or to the fallback.", ""]
        else:
            lines.append("Largest failures:")
            for count, i, j in pairs[:4]:
                key = f"{tasks[i]} -> {'fallback' if j == len(tasks) else tasks[j]}"
                quoted = next((m["failures"][key] for m in counted_seeds(data).values()
                               if m.get("failures", {}).get(key)), [])
                lines.append(f"- `{key}`: {count} queries ({100 * count / max(1, sum(C[i])):.0f}% of {tasks[i]}'s)"
                             + ("; e.g. " + "; ".join(f"“{q}”" for q in quoted[:2]) if quoted else ""))
            lines.append("")
        lines += _ood_lines(data, tasks)
    return lines


def _negative_share_note(cfg: dict) -> str:
    """SEE's cap on negatives an epoch, as its experts trained (`auto` resolved the way training resolves it)."""
    from omegaconf import OmegaConf

    from see.experts.training import negative_share

    share = negative_share(OmegaConf.create(cfg["train"]))
    return f" SEE's experts: at most {share:.0%} negatives an epoch." if share is not None else ""


def write_report(results: dict, out: Path) -> None:
    cfg = results["config"]
    if results.get("report_only"):
        produced = (f"Written from the cells done so far by `{results.get('command') or 'see bench --report'}`, "
                    "which trained and generated nothing; the table below gives each cell group's wall time and "
                    "commit.")
    else:
        produced = (f"Produced by `{results.get('command') or 'see bench'}` (this invocation took "
                    f"{results['seconds'] / 60:.1f} min; per method and seed: see the table below).")
    lines = [f"# Benchmark `{results['name']}`", "", produced, "",
             f"- **Base model: `{results['base']}`.** Absolute figures on this small CPU base are not comparable "
             "with results on LLMs; the comparison between methods on one base, data budget and seed is the point.",
             f"- Stream ({len(results['tasks'])} tasks, in order): " + " → ".join(f"`{t}`" for t in results["tasks"]),
             f"- Budget per task: {cfg['budget']['train_examples']} training and {cfg['budget']['test_examples']} "
             f"test examples; {cfg['budget']['ood_examples']} OOD queries per OOD task "
             f"({', '.join(t['name'] for t in cfg['ood']) or 'none'}). Seeds: {', '.join(map(str, results['seeds']))}.",
             f"- Training (every method): LoRA r={cfg['lora']['r']}, alpha={cfg['lora']['alpha']}, "
             f"targets {cfg['lora']['target_modules']}; {cfg['train']['epochs']} epochs"
             + (f" (max {cfg['train']['max_steps']} steps)" if cfg['train']['max_steps'] else "")
             + f", batch {cfg['train']['batch_size']}, lr {cfg['train']['lr']}"
             + (" (1e-3 x 384 / the base's hidden size)" if cfg['train']['lr'] == "auto" else "") + ". Rehearsal/replay buffer "
             f"{cfg['reconstruction']['rehearsal_size']} queries per task." + _negative_share_note(cfg),
             f"- Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}.", ""]
    status = results.get("cell_status")
    if status:
        spent = sum(r["seconds"] for r in status["rows"])
        lines += [f"**Cells:** {status['done']}/{status['total']} done, {spent / 3600:.2f} h of wall time in all "
                  "(a cell's time includes the training its row needed; cells are resumable, so they may come "
                  "from several invocations and commits).", "",
                  "| method | seed | cells | wall time | commit(s) |", "|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['seed']} | {r['done']}/{r['total']} | {r['seconds'] / 60:.1f} min | "
                  f"{', '.join(r['commits']) or '–'} |" for r in status["rows"]]
        lines.append("")
    lines += ["## Results (percent, mean ± std over seeds)", "",
             "| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for method, data in results["methods"].items():
        lines.append(f"| {method} | " + " | ".join(_fmt(data["summary"][k]) for k in METRICS) + " |")
    left_out = [f"{method} seed {s}" for method, data in results["methods"].items() for s in data["per_seed"]
                if int(s) not in data["seeds_counted"]]
    if left_out:
        lines += ["", "Seeds whose cells are not all done are left out of this table and of the sections below until "
                  "they are (except SEE's diagonal against the oracle's, which compares finished diagonal cells): "
                  + ", ".join(left_out) + "."]
    comp = _comparisons(results)
    if comp:
        lines += ["", "## How SEE compares", ""] + comp
    diagonal = _diagonal_section(results)
    if diagonal:
        lines += ["", "## SEE's diagonal against the oracle's", ""] + diagonal[:-1]
    routing = _routing_section(results)
    if routing:
        lines += ["", "## Routing: confusion and where it fails", ""] + routing
    lines += ["", "## Accuracy matrices (mean over seeds, percent)", ""]
    tasks = results["tasks"]
    zero = [r for r in results["zero_shot"].values()]
    z_mean = [sum(v[j] for v in zero if v[j] is not None) / max(1, sum(v[j] is not None for v in zero))
              for j in range(len(tasks))]
    lines += ["Base model zero-shot (Z): " + ", ".join(f"{t} {100 * z:.1f}" for t, z in zip(tasks, z_mean)), ""]
    for method, data in results["methods"].items():
        lines += [f"**{method}**", "", "| after \\ on | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
        for i, row in enumerate(data["mean_R"]):
            lines.append(f"| {tasks[i]} | " + " | ".join("–" if v is None else f"{100 * v:.1f}" for v in row) + " |")
        lines.append("")
    lines += ["## Definitions", "", DEFINITIONS, ""]
    notes = list(results["notes"])
    if any(m.startswith("see") for m in results["methods"]):
        notes.append(f"SEE holds out train.eval_fraction={cfg['train']['eval_fraction']} of each task's training "
                     "examples (its end-of-training evaluation, and see-calibrated's thresholds); the baselines "
                     "train on all of them.")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Plots", "", "![accuracy matrices](accuracy_matrices.png)", "",
              "![routing confusion](routing_confusion.png)", "", "![AP and BWT](ap_bwt.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    _plots(results, out)


def _plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = results["tasks"]
    methods = list(results["methods"])
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, method in zip(axes.flat, methods):
        R = np.array([[np.nan if v is None else v for v in row] for row in results["methods"][method]["mean_R"]])
        ax.axis("on")
        ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                if not np.isnan(R[i, j]):
                    ax.text(j, i, f"{100 * R[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if R[i, j] < 0.5 else "black")
        ax.set_title(method, fontsize=9)
        ax.set_xticks(range(len(tasks)), [t[:10] for t in tasks], rotation=45, fontsize=6)
        ax.set_yticks(range(len(tasks)), [t[:10] for t in tasks], fontsize=6)
        ax.set_xlabel("evaluated on", fontsize=7)
        ax.set_ylabel("after training on", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_matrices.png", dpi=110)
    plt.close(fig)

    routed = [m for m in methods if any(s.get("confusion") for s in counted_seeds(results["methods"][m]).values())]
    fig, axes = plt.subplots(1, max(1, len(routed)), figsize=(3.8 * max(1, len(routed)), 3.4), squeeze=False)
    for ax, method in zip(axes.flat, routed):
        C = sum(np.array(s["confusion"]) for s in counted_seeds(results["methods"][method]).values()
                if s.get("confusion"))
        shares = C / np.maximum(1, C.sum(axis=1, keepdims=True))
        ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
        for i in range(shares.shape[0]):
            for j in range(shares.shape[1]):
                ax.text(j, i, f"{100 * shares[i, j]:.0f}", ha="center", va="center", fontsize=7)
        ax.set_title(f"{method}: task → chosen", fontsize=9)
        ax.set_xticks(range(len(tasks) + 1), [t[:10] for t in tasks] + ["fallback"], rotation=45, fontsize=6)
        ax.set_yticks(range(len(tasks)), [t[:10] for t in tasks], fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "routing_confusion.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(1.3 * len(methods) + 2, 3.6))
    x = np.arange(len(methods))
    for offset, key, color in ((-0.2, "AP", "tab:blue"), (0.2, "BWT", "tab:orange")):
        means = [results["methods"][m]["summary"][key]["mean"] for m in methods]
        stds = [results["methods"][m]["summary"][key]["std"] for m in methods]
        ax.bar(x + offset, [100 * (v or 0) for v in means], 0.4, yerr=[100 * (s or 0) for s in stds], capsize=3,
               label=key, color=color)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, methods, rotation=30, fontsize=8)
    ax.set_ylabel("percent")
    ax.set_title(f"{results['name']}: AP and BWT (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ap_bwt.png", dpi=110)
    plt.close(fig)
