"""``see bench``: run a continual-learning stream through every method, cell by cell, resumably.

A cell is one (method, seed, after-task i, eval-task j) score, saved as soon
as it is computed; a rerun skips finished cells and reuses trained adapters.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from omegaconf import OmegaConf

from see.bench.methods import METHODS, ROUTING_METHODS, Answer, BaseModel, Context
from see.bench.report import aggregate, write_report
from see.bench.tasks import query_task, stream_task
from see.errors import ConfigError, StoreError
from see.jsonio import strict_json
from see.metrics import score_answers


class Cells:
    """The per-cell files of a run."""

    def __init__(self, root: Path, commit: str = ""):
        self.root = root
        self.commit = commit
        self.mark = time.time()

    def restart_clock(self) -> None:
        """Time the next cell from now (a method starts; a seed's data was loaded)."""
        self.mark = time.time()

    def path(self, method: str, seed: int, row: str | int, col: str | int) -> Path:
        return self.root / "cells" / method / f"seed{seed}" / f"r{row}_{col}.json"

    def get(self, *key) -> dict | None:
        p = self.path(*key)
        return json.loads(p.read_text()) if p.is_file() else None

    def put(self, value: dict, *key) -> None:
        """Save a cell, with the wall seconds since the previous cell of this run (the training a row
        needs is charged to its first cell) and the commit of the code that computed it."""
        now = time.time()
        value = {**value, "seconds": round(now - self.mark, 2), "commit": self.commit,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        self.mark = now
        p = self.path(*key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(p)


def _cell_value(answers: list[Answer], task, metric: str) -> dict:
    scores = score_answers([a.text for a in answers], task.examples, metric)
    # per-query scores let the report pair two methods query by query (see metrics.paired_difference)
    return {"score": sum(scores) / len(scores), "n": len(scores), "metric": metric,
            "scores": [round(x, 4) for x in scores], "chosen": [a.chosen for a in answers],
            # every answer, so that a gap between two methods can be read label by label after the run
            "answers": [a.text[:200] for a in answers],
            "ood_score": [a.score for a in answers],
            "examples": [{"input": ex.input[:200], "answer": a.text[:200], "gold": list(ex.outputs)[:3]}
                         for a, ex in list(zip(answers, task.examples))[:5]]}


def _queries(task) -> list[tuple[str | None, str]]:
    return [(task.instruction, ex.input) for ex in task.examples]


def run_bench(cfg: Any, out: Path, log: Callable[[str], None] = print, progress: bool = True,
              command: str = "") -> dict:
    from tqdm.auto import tqdm

    start = time.time()
    versions = _versions()  # at the start: the code that runs, whatever is committed meanwhile
    out.mkdir(parents=True, exist_ok=True)
    _check_same_run(cfg, out)
    cells = Cells(out, versions["git"])
    _write_folder_config(cfg, out)
    _note_work_commit(out / "work", versions["git"], log)
    methods = list(cfg.methods)
    T = len(cfg.stream)
    per_seed = T + sum(T * T + (1 if m in ROUTING_METHODS else 0) for m in methods)
    bar = tqdm(total=per_seed * len(cfg.seeds), desc=f"bench {cfg.name}", disable=not progress, dynamic_ncols=True)
    notes: list[str] = list(cfg.notes)
    timings: dict[str, float] = {}
    inputs: dict[int, list[list[str]]] = {}
    ood_inputs: dict[int, list[str]] = {}
    for seed in cfg.seeds:
        tasks = _stream(cfg, seed, notes)
        inputs[seed] = _test_inputs(tasks)
        ood = _ood_tasks(cfg, seed)
        ood_inputs[seed] = _ood_inputs(ood)
        negatives = [(t.instruction, ex.input) for spec in cfg.negatives
                     for t in [query_task(spec, max(50, int(cfg.budget.train_examples)), seed, "negatives")]
                     for ex in t.examples]
        ctx = Context(cfg, seed, out / "work" / f"seed{seed}", tasks, negatives, log)
        # the base model alone: the zero-shot scores FWT is measured against
        base = BaseModel(ctx)
        cells.restart_clock()
        for j, task in enumerate(tasks):
            if cells.get("base", seed, "zero", j) is None:
                cells.put(_cell_value(base.answer(0, j, _queries(task.test)), task.test, task.metric),
                          "base", seed, "zero", j)
            bar.update(1)
        for name in methods:
            t0 = time.time()
            method = METHODS[name](ctx)
            cells.restart_clock()
            rows = range(T - 1, T) if name == "mtl-lora" else range(T)
            if name == "mtl-lora":
                bar.update(T * (T - 1))  # MTL has only the last row
            for i in rows:
                missing = [j for j in range(T) if cells.get(name, seed, i, j) is None]
                need_ood = name in ROUTING_METHODS and i == T - 1 and ood and cells.get(name, seed, i, "ood") is None
                if missing or need_ood:
                    method.prepare(i)
                for j in range(T):
                    if j in missing:
                        answers = method.answer(i, j, _queries(tasks[j].test))
                        cells.put(_cell_value(answers, tasks[j].test, tasks[j].metric), name, seed, i, j)
                    bar.update(1)
                if name in ROUTING_METHODS and i == T - 1:
                    if need_ood:
                        answers = [a for t in ood for a in method.answer(i, None, _queries(t))]
                        cells.put({"chosen": [a.chosen for a in answers], "ood_score": [a.score for a in answers],
                                   "families": [t.name for t in ood for _ in t.examples]}, name, seed, i, "ood")
                    bar.update(1)
            timings[f"{name}/seed{seed}"] = round(time.time() - t0, 1)
            log(f"seed {seed}: {name} done in {timings[f'{name}/seed{seed}']:.0f}s")
            del method
    bar.close()
    return _finish(cfg, out, cells, notes, (inputs, ood_inputs), versions, command=command,
                   seconds=time.time() - start, timings=timings)


def _stream(cfg: Any, seed: int, notes: list[str]) -> list:
    tasks = [stream_task(spec, cfg.budget, seed) for spec in cfg.stream]
    for t in tasks:
        if t.note and t.note not in notes:
            notes.append(t.note)
    return tasks


def _test_inputs(tasks: list) -> list[list[str]]:
    """Each task's test inputs, which the report quotes where routing fails."""
    return [[ex.input for ex in t.test.examples] for t in tasks]


def _ood_tasks(cfg: Any, seed: int) -> list:
    return [query_task(spec, int(cfg.budget.ood_examples), seed, "ood") for spec in cfg.ood]


def _ood_inputs(ood: list) -> list[str]:
    """The OOD inputs in cell order, which the report quotes where an expert kept one."""
    return [ex.input for t in ood for ex in t.examples]


def _finish(cfg: Any, out: Path, cells: Cells, notes: list[str], inputs: tuple[dict, dict], versions: dict, *,
            command: str, seconds: float, timings: dict, report_only: bool = False) -> dict:
    """``inputs``: ({seed: test inputs per task}, {seed: OOD inputs}), for the report's quotes."""
    results = aggregate(cfg, cells, notes, *inputs)
    results["cell_status"] = bench_status(cfg, out)
    results.update({"command": command, "seconds": round(seconds, 1), "timings": timings, "versions": versions,
                    "report_only": report_only, "config": OmegaConf.to_container(cfg, resolve=True)})
    (out / "results.json").write_text(strict_json(results, indent=2) + "\n")
    write_report(results, out)
    return results


def report_bench(cfg: Any, out: Path, command: str = "") -> dict:
    """The report of the cells done so far, training and generating nothing: a long run's partial results can be
    committed while it goes on (its missing cells show as –, and the header counts them)."""
    start = time.time()
    if not (out / "cells").is_dir():
        raise StoreError("no benchmark cells here yet", file=out,
                         hint="run `see bench CONFIG` first; --report covers the cells done so far")
    _check_same_run(cfg, out)
    notes: list[str] = list(cfg.notes)
    inputs = {seed: _test_inputs(_stream(cfg, seed, notes)) for seed in cfg.seeds}
    ood_inputs = {seed: _ood_inputs(_ood_tasks(cfg, seed)) for seed in cfg.seeds}
    return _finish(cfg, out, Cells(out), notes, (inputs, ood_inputs), _versions(), command=command,
                   seconds=time.time() - start, timings={}, report_only=True)


def expected_cells(cfg: Any, seeds: Iterable[int] | None = None) -> list[tuple]:
    """Every cell key a complete run of ``cfg`` writes, in the order the runner computes them (for
    ``seeds`` in place of the config's when given)."""
    T = len(cfg.stream)
    keys: list[tuple] = []
    for seed in (cfg.seeds if seeds is None else seeds):
        keys += [("base", seed, "zero", j) for j in range(T)]
        for name in cfg.methods:
            for i in (range(T - 1, T) if name == "mtl-lora" else range(T)):
                keys += [(name, seed, i, j) for j in range(T)]
                if name in ROUTING_METHODS and i == T - 1 and len(cfg.ood):
                    keys.append((name, seed, i, "ood"))
    return keys


def bench_status(cfg: Any, out: Path) -> dict:
    """Which cells of ``cfg`` are done in ``out`` and which remain, with an estimate of the time left.

    A row (one method and seed after one task) charges its training to its first cell, so the estimate
    works by rows: an untouched row costs its method's first cell plus a further cell for each other one,
    a row begun costs a further cell for each missing one. A first cell is taken from the method's slowest
    seed (a seed re-evaluated from saved adapters, after `see calibrate` say, carries no training and
    would promise a fraction of the real time), a further cell is the median over the method's complete
    rows. A method with no complete row yet takes the mean seconds a cell over every method. Cells written
    before cells carried their time count as done; the estimate then comes from the per-method timings
    of the folder's last ``results.json``. The timings come from every seed the folder holds, not only
    those asked about: a status of the one seed about to run must not estimate it from no timed cell.
    """
    import statistics

    cells = Cells(out)
    rows: dict[tuple, dict] = {}
    by_row: dict[tuple, dict] = {}
    asked = set(cfg.seeds)
    held = {int(p.name[4:]) for p in out.glob("cells/*/seed*") if p.name[4:].isdigit()}
    for key in expected_cells(cfg, list(cfg.seeds) + sorted(held - asked)):
        method, seed = key[0], key[1]
        part = by_row.setdefault((method, seed, key[2]), {"expected": 0, "done": 0, "seconds": [],
                                                         "timing_only": seed not in asked})
        part["expected"] += 1
        row = None if part["timing_only"] else rows.setdefault(
            (method, seed), {"method": method, "seed": seed, "done": 0, "total": 0, "seconds": 0.0, "commits": set()})
        if row is not None:
            row["total"] += 1
        value = cells.get(*key)
        if value is None:
            continue
        part["done"] += 1
        if value.get("seconds") is not None:
            part["seconds"].append(value["seconds"])
        if row is not None:
            row["done"] += 1
            row["seconds"] += value.get("seconds") or 0.0
            row["commits"].add(value.get("commit") or "unrecorded")
    every = [t for part in by_row.values() for t in part["seconds"]]
    if not every:  # cells from before cells carried their time: the last report's per-method timings
        try:
            timings = json.loads((out / "results.json").read_text()).get("timings", {})
        except (OSError, ValueError):
            timings = {}
        for (method, seed, _), part in by_row.items():
            if part["timing_only"]:
                continue
            spent, row = timings.get(f"{method}/seed{seed}"), rows[method, seed]
            if spent and row["done"] == row["total"]:  # a resumed run that computed nothing took 0 s
                part["seconds"] = [spent / row["total"]] * part["expected"]
        every = [t for part in by_row.values() for t in part["seconds"]]
    models: dict[str, tuple[float, float]] = {}
    for method in {m for m, _ in rows}:
        firsts: dict[int, list[float]] = {}
        further: list[float] = []
        for (m, seed, _), part in by_row.items():
            if m == method and part["expected"] and len(part["seconds"]) == part["expected"]:
                ordered = sorted(part["seconds"], reverse=True)
                firsts.setdefault(seed, []).append(ordered[0])
                further += ordered[1:]
        if firsts:
            first = max(sum(v) / len(v) for v in firsts.values())
            models[method] = (first, statistics.median(further) if further else first)
    mean = sum(every) / len(every) if every else None
    left = 0.0
    for (method, seed, _), part in by_row.items():
        if part["timing_only"]:  # another seed's cells: timings only
            continue
        row = rows[method, seed]
        missing = part["expected"] - part["done"]
        first, further = models.get(method, (mean, mean))
        if first is None:
            row["estimate_left"] = None if missing else row.get("estimate_left", 0.0)
            continue
        cost = (first + (missing - 1) * further if missing and not part["done"] else missing * further)
        row["estimate_left"] = row.get("estimate_left", 0.0) + cost
        left += cost
    for row in rows.values():
        row.setdefault("estimate_left", 0.0 if row["done"] == row["total"] else None)
        row["commits"] = sorted(row["commits"])
    done = sum(r["done"] for r in rows.values())
    total = sum(r["total"] for r in rows.values())
    return {"name": cfg.name, "out": str(out), "done": done, "total": total, "rows": list(rows.values()),
            "estimate_left": left if every or done == total else None}


#: Config keys a rerun may change without invalidating finished cells (they only choose which cells exist).
_FREE_KEYS = ("methods", "seeds", "output", "notes", "name")


def _check_same_run(cfg: Any, out: Path) -> None:
    """Refuse to resume into a folder whose cells came from a different stream, base or budget."""
    previous = out / "config.yaml"
    if not previous.is_file() or not (out / "cells").is_dir():
        return
    old = _with_new_defaults(OmegaConf.to_container(OmegaConf.load(previous), resolve=True))
    new = OmegaConf.to_container(cfg, resolve=True)
    changed = sorted(k for k in set(old) | set(new) if k not in _FREE_KEYS and old.get(k) != new.get(k))
    if changed:
        raise ConfigError(f"{out} holds cells of a run with a different config (changed: {', '.join(changed)}); "
                          "they would be mixed with this run's", file=previous,
                          hint="choose another --out, or delete the folder to start over")


def _write_folder_config(cfg: Any, out: Path) -> None:
    """Save the run's config in its folder, its methods and seeds joined with those already there: a run of
    one method or seed (resuming a long benchmark piece by piece) must not leave the folder's config
    describing only that piece of the cells it holds."""
    saved = OmegaConf.to_container(cfg, resolve=True)
    previous = out / "config.yaml"
    if previous.is_file():
        old = OmegaConf.to_container(OmegaConf.load(previous), resolve=True)
        for key in ("methods", "seeds"):
            saved[key] = list(old.get(key) or []) + [v for v in saved[key] if v not in (old.get(key) or [])]
    previous.write_text(OmegaConf.to_yaml(saved))


#: Keys the schema gained whose default does something runs before them did not: a config written before the
#: key existed did what this value does (section, key) -> value. (``train.split_padded_batches`` is not one:
#: it trains on the same batches with the same gradient, so cells from before it are the same method's.)
_BEFORE_ADDED = {("reconstruction", "near_miss_ratio"): 0.0, ("train", "negative_share"): None}


def _with_new_defaults(old: dict) -> dict:
    """An earlier run's config with the keys the schema gained since at their defaults: an option added
    later, left at its default, is what that run did, so its cells stay valid (``train.group_by_length``).
    A key whose default changed behaviour takes the value that reproduces the old one (``_BEFORE_ADDED``)."""
    from omegaconf.errors import OmegaConfBaseException

    from see.bench.config import BenchConfig

    old = {k: dict(v) if isinstance(v, dict) else v for k, v in old.items()}
    for (section, key), value in _BEFORE_ADDED.items():
        if isinstance(old.setdefault(section, {}), dict) and key not in old[section]:
            old[section][key] = value
    try:
        return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(BenchConfig), old), resolve=True)
    except OmegaConfBaseException:  # a key the schema has dropped: compare as written
        return old


def _versions() -> dict:
    import peft
    import torch
    import transformers

    from see import __version__

    # the same code and versions train differently on another CPU: torch dispatches its kernels by the
    # instruction set and splits reductions by thread, so a report says which it ran on
    return {"see": __version__, "git": _git_commit(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu": f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"}


def _note_work_commit(work: Path, commit: str, log: Callable[[str], None]) -> None:
    """Warn when ``work/`` holds what other code saved: a resumed row reuses its adapters and experts as they are.

    A cell records the commit that computed it, but the adapter it evaluates may have been trained before a
    change to training: without this warning, such cells pass for the new code's.
    """
    stamp = work / "commits"
    earlier = stamp.read_text().split() if stamp.exists() else []
    others = [c for c in earlier if c != commit]
    if others:
        log(f"warning: {work} holds adapters and experts saved by {', '.join(others)}; this code is {commit}. "
            f"A row that resumes from them is not retrained: delete {work} (or a method's folder in it) to "
            "retrain with this code.")
    if commit not in earlier:
        work.mkdir(parents=True, exist_ok=True)
        with stamp.open("a", encoding="utf-8") as f:
            f.write(commit + "\n")


def _git_commit() -> str:
    """The commit of the code that ran (with '+dirty' when the work tree had changes)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")
