"""The torch engine against the vllm engine on the same ensembles and queries, measured side by side in one run.

    python benchmarks/vllm_vs_torch.py --out benchmarks/results/serving/vllm-vs-torch

For N = 1, 4 and 8 experts on the embedded base (each trained briefly: the
cost of routing, not the experts' quality, is measured), one batch of 16
queries answered with up to 16 new tokens: the torch engine here, the vllm
engine in ``.venv-vllm`` (``./dev setup-vllm``). Each engine answers the
batch once to warm up, then ``--repeat`` times; the report gives the median
seconds per batch, the ratio, the engine start time, and how many answers,
experts and scores agree.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from see.embedded.families import FAMILIES, make_task  # noqa: E402
from see.jsonio import strict_json  # noqa: E402

EXPERT_COUNTS = (1, 4, 8)
BATCH = 16
MAX_NEW_TOKENS = 16


def build(root: Path, n: int) -> Path:
    from see.lifecycle import add_expert, init_ensemble

    if (root / "manifest.json").is_file():
        return root
    init_ensemble(root, log=lambda m: None)
    for family in list(FAMILIES)[:n]:
        add_expert(root, family, make_task(family, 60), overrides=["train.max_steps=30", "train.eval_every=0"],
                   negatives="none", progress=False, log=lambda m: None)
    return root


def torch_engine(root: Path, queries: list[str], repeat: int) -> dict:
    from see.ensemble import Ensemble

    start = time.perf_counter()
    ens = Ensemble.load(root)
    loaded = time.perf_counter() - start
    results = ens.generate(queries, max_new_tokens=MAX_NEW_TOKENS)
    timings = []
    for _ in range(repeat):
        t = time.perf_counter()
        ens.generate(queries, max_new_tokens=MAX_NEW_TOKENS)
        timings.append(time.perf_counter() - t)
    return {"load_s": loaded, "generate_s": timings, "results": [r.to_json() for r in results]}


def vllm_engine(root: Path, queries: list[str], repeat: int, python: Path, work: Path) -> dict:
    (work / "q.json").write_text(json.dumps(queries))
    env = {**os.environ, "SEE_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT)}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    run = subprocess.run([str(python), "-m", "see.vllm_engine", str(root), str(work / "q.json"),
                          str(work / "out.json"), "--max-new-tokens", str(MAX_NEW_TOKENS), "--repeat", str(repeat)],
                         capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit(f"the vllm engine failed:\n{run.stderr[-3000:]}")
    return json.loads((work / "out.json").read_text())


def agreement(a: list[dict], b: list[dict]) -> dict:
    diffs = [abs(x["scores"][k] - y["scores"].get(k, float("inf"))) for x, y in zip(a, b) for k in x["scores"]]
    return {"experts_equal": sum(x["expert"] == y["expert"] for x, y in zip(a, b)),
            "answers_equal": sum(x["answer"] == y["answer"] for x, y in zip(a, b)), "queries": len(a),
            "max_score_diff": max(diffs, default=0.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serving/vllm-vs-torch")
    parser.add_argument("--work", type=Path, default=Path("/tmp/see-vllm-vs-torch"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--vllm-python", type=Path, default=ROOT / ".venv-vllm/bin/python")
    args = parser.parse_args()
    queries = [ex.input for k, family in enumerate(list(FAMILIES)[:8])
               for ex in make_task(family, 2, seed=100 + k).examples][:BATCH]
    rows = []
    started = time.time()
    for n in EXPERT_COUNTS:
        root = build(args.work / f"n{n}" / "ens", n)
        t = torch_engine(root, queries, args.repeat)
        v = vllm_engine(root, queries, args.repeat, args.vllm_python, args.work / f"n{n}")
        row = {"experts": n, "torch_s": statistics.median(t["generate_s"]), "vllm_s": statistics.median(v["generate_s"]),
               "torch_load_s": t["load_s"], "vllm_load_s": v["load_s"], **agreement(t["results"], v["results"])}
        row["torch_over_vllm"] = row["torch_s"] / row["vllm_s"]
        rows.append(row)
        print(strict_json(row))
    args.out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {"command": "python " + " ".join(sys.argv), "commit": commit, "batch": BATCH,
            "max_new_tokens": MAX_NEW_TOKENS, "repeat": args.repeat, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "wall_s": round(time.time() - started, 1),
            "load_average": os.getloadavg()}
    (args.out / "results.json").write_text(strict_json({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# torch engine vs vllm engine", "",
             f"Produced by `{meta['command']}` at commit `{commit}` in {meta['wall_s']} s, on {meta['cpu_count']} CPU "
             f"cores ({meta['platform']}); load average at the end {meta['load_average'][0]:.2f}.", "",
             f"One batch of {BATCH} queries (two from each of eight embedded families), greedy, up to "
             f"{MAX_NEW_TOKENS} new tokens, on ensembles of N experts on the embedded base; median of "
             f"{args.repeat} batches after one warm-up. The vllm engine is vllm-cpu 0.32.0 in `.venv-vllm`.", "",
             "| experts | torch s/batch | vllm s/batch | torch / vllm | torch load s | vllm start s | same expert | "
             "same answer | max P(<<pos>>) diff |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['experts']} | {r['torch_s']:.3f} | {r['vllm_s']:.3f} | {r['torch_over_vllm']:.2f} | "
                     f"{r['torch_load_s']:.1f} | {r['vllm_load_s']:.1f} | {r['experts_equal']}/{r['queries']} | "
                     f"{r['answers_equal']}/{r['queries']} | {r['max_score_diff']:.1e} |")
    lines += ["", "A ratio above 1 means the vllm engine answered the batch faster. vLLM's start (engine "
              "process, KV cache, warm-up) is paid once per server, not per batch."]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(args.out / "report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
