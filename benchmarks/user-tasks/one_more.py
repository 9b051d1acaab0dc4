"""Add one suite task again, with other settings, to the ensemble as it stood before that task was added.

    python benchmarks/user-tasks/one_more.py WORK TASK --out OUT.json [--source-tree DIR] [--eval NAME ...] \
        [key=value ...]

WORK is a finished ``run.py --work`` folder. Its ensemble is copied with only the experts added before TASK
(the add is deterministic, so with no key=value this reproduces the suite's own expert, figure for figure),
TASK is added through the real CLI with the key=value settings, and each ``--eval`` task's test file (default:
TASK, the task added just before it, and ``ood_number_words``) is evaluated through the copy. What one
setting does to one expert in its place in the sequence costs one add-expert instead of a whole suite.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import Cli, field_flags, load_index  # noqa: E402


def truncated_copy(ensemble: Path, task: str, dest: Path) -> list[str]:
    """Copy ``ensemble`` into ``dest`` with only the experts added before ``task``; their names."""
    manifest = json.loads((ensemble / "manifest.json").read_text())
    names = [e["name"] for e in manifest["experts"]]
    if task not in names:
        raise SystemExit(f"one_more.py: {ensemble} has no expert {task!r} (it has {names})")
    keep = names[:names.index(task)]
    shutil.copytree(ensemble, dest, ignore=shutil.ignore_patterns(".lock", ".staging"))
    for e in manifest["experts"][len(keep):]:
        shutil.rmtree(dest / e["path"])
    manifest["experts"] = manifest["experts"][:len(keep)]
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return keep


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path, help="a finished run.py --work folder")
    p.add_argument("task", help="the suite task to add again")
    p.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    p.add_argument("--eval", nargs="+", help="tasks or OOD files whose test split is evaluated")
    p.add_argument("--source-tree", type=Path, help="run the `see` package from this directory")
    args, overrides = p.parse_known_args(argv)
    index = load_index()
    unknown = [n for n in [args.task, *(args.eval or [])] if n not in index]
    if unknown:  # before any training: a key=value after --eval lands here too
        raise SystemExit(f"one_more.py: no suite task or OOD file named {', '.join(map(repr, unknown))} in "
                         f"{HERE / 'tasks.json'}; give key=value settings before --eval")
    spec = index[args.task]
    with tempfile.TemporaryDirectory(prefix="see-one-more-") as tmp:
        # run.py's runner: logs in tmp, which is also the cwd, so --source-tree decides which package runs
        cli = Cli([sys.executable, "-m", "see"], Path(tmp), args.source_tree.resolve() if args.source_tree else None)
        ens = Path(tmp) / "ensemble"
        before = truncated_copy(args.work / "ensemble", args.task, ens)
        evals = args.eval or [args.task, *before[-1:], "ood_number_words"]
        added = cli.run(["add-expert", str(ens), "--name", args.task, "--data", str(HERE / spec["train"]),
                         "--no-progress", *field_flags(spec), *overrides], "add", check=False)
        if added["rc"] != 0:
            raise SystemExit(f"one_more.py: add-expert failed ({added['rc']}):\n{added['stderr_tail']}")
        manifest = json.loads((ens / "manifest.json").read_text())
        results = {"command": " ".join(["python benchmarks/user-tasks/one_more.py",
                                        *(sys.argv[1:] if argv is None else argv)]), "work": str(args.work),
                   "task": args.task, "experts_before": before, "overrides": overrides,
                   "add_seconds": round(added["seconds"], 1), "warnings": added["warnings"],
                   "metrics": manifest["experts"][-1]["metrics"], "eval": {}}
        for name in evals:
            entry = index[name]
            got, _ = cli.json(["eval", str(ens), "--data", str(HERE / entry["test"]), "--json", *field_flags(entry)],
                              f"eval-{name}")
            results["eval"][name] = {"exact_match": got["score"], "routed": got["routed"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, e in results["eval"].items():
        print(f"{name}: exact match {100 * e['exact_match']:.0f}%, routed {e['routed']}")
    return results


if __name__ == "__main__":
    main()
