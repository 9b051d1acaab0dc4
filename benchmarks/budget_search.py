"""Find, by measurement, the training budget at which a stream's per-task LoRA (the oracle) clearly learns.

For each task of a benchmark config, one plain LoRA (the oracle's training, ``Context.train_plain``) trains
for ``--steps`` optimizer steps; every ``--every`` steps it answers a validation set drawn from the task's
*training* split (disjoint from the examples it trains on; the test split is never read). The learning
curve, the majority-class share and the base model's zero-shot score on the same validation set go to
``OUT/results.json`` and ``OUT/report.md``.

"Clearly learns" is the issue's rule: a classification task (exact match) reaches the majority class + 15
points; a generation task (ROUGE-L) reaches twice the base's zero-shot score and at least 15 points above it,
and, when its answers form a closed set (one letter of five, say), the majority answer + 15 points too.
The floor matters when the base scores 0 zero-shot (minilm does on every generation task): "twice 0" is met
by any output at all, so without it a flat curve would count as learning.

    python benchmarks/budget_search.py benchmarks/cl-standard.yaml --steps 500 --every 50 \\
        --out benchmarks/results/budget/cl-standard

Tasks already in ``OUT/results.json`` are skipped, so an interrupted run resumes task by task.
"""
from __future__ import annotations

import argparse
import collections
import json
import shlex
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from see.bench.config import load_bench_config  # noqa: E402
from see.bench.methods import Context  # noqa: E402
from see.bench.runner import _versions, _with_new_defaults  # noqa: E402
from see.bench.tasks import stream_task  # noqa: E402
from see.data import Task  # noqa: E402
from see.engine.decode import SamplingParams, generate  # noqa: E402
from see.jsonio import strict_json  # noqa: E402
from see.metrics import score_answers  # noqa: E402


#: A generation task whose validation answers take at most this many distinct values is a classification
#: in disguise (commonsenseqa answers one letter of five: its ROUGE-L is its accuracy, and chance is 20%).
CLOSED_SET = 20


def learns_threshold(metric: str, majority: float | None, zero_shot: float) -> float:
    """The score a task must reach to count as learned (scores are fractions in [0, 1]). ``majority`` is
    the most frequent answer's share when the answers form a closed set, else None."""
    if metric == "exact_match":
        return (majority or 0.0) + 0.15
    generation = max(2 * zero_shot, zero_shot + 0.15)
    return generation if majority is None else max(generation, majority + 0.15)


def majority_share(examples) -> float:
    counts = collections.Counter(ex.outputs[0].strip().lower() for ex in examples)
    return counts.most_common(1)[0][1] / len(examples)


def answer(model, ctx: Context, task: Task, max_new_tokens: int, batch_size: int) -> list[str]:
    prompts = ctx.prompts([(task.instruction, ex.input) for ex in task.examples])
    encoded = ctx.prompt.encode_all(prompts, max_new_tokens)
    return [d.text for d in generate(model, ctx.prompt, encoded, SamplingParams(max_new_tokens),
                                     batch_size=batch_size)]


def search_task(cfg, spec, seed: int, steps: int, every: int, n_val: int, log) -> dict:
    n_train = int(cfg.budget.train_examples)
    budget = OmegaConf.merge(cfg.budget, {"train_examples": n_train + n_val})
    st = stream_task(spec, budget, seed)
    pool = list(st.train.examples)
    if len(pool) < n_val + 20:
        raise SystemExit(f"{spec.name}: only {len(pool)} training examples, too few for {n_val} validation ones")
    val = Task(spec.name, pool[-n_val:], st.train.instruction, st.train.source)
    train = Task(spec.name, pool[:-n_val], st.train.instruction, st.train.source)
    ctx = Context(cfg, seed, Path("/nonexistent"), [st], [], log)
    ctx.train_cfg = OmegaConf.merge(ctx.train_cfg, {"max_steps": steps, "eval_every": every, "patience": 0})
    b = cfg.budget
    base = ctx.base_model()
    zero = score_answers(answer(base, ctx, val, int(b.max_new_tokens), int(b.eval_batch_size)), val.examples,
                         spec.metric)
    zero_shot = sum(zero) / len(zero)
    closed = len({ex.outputs[0].strip().lower() for ex in val.examples}) <= CLOSED_SET
    majority = majority_share(val.examples) if spec.metric == "exact_match" or closed else None
    start = time.time()
    curve: list[dict] = []

    def evaluate(model) -> dict:
        scores = score_answers(answer(model, ctx, val, int(b.max_new_tokens), int(b.eval_batch_size)),
                               val.examples, spec.metric)
        score = sum(scores) / len(scores)
        curve.append({"seconds": round(time.time() - start, 1), "score": round(score, 4)})
        log(f"  {spec.name}: validation {spec.metric} {100 * score:.1f} after {time.time() - start:.0f}s")
        return {"heldout_score": score}

    from see.experts.training import encode_examples, train_lora

    encoded, _ = encode_examples(base, ctx.prompt, ctx.examples(train), None, ctx.train_cfg)
    _, result = train_lora(base, ctx.prompt, encoded, lora=cfg.lora, train=ctx.train_cfg, progress=False,
                           log=log, evaluate=evaluate)
    history = result.metrics.get("eval_history", [])
    for point, h in zip(curve, history):
        point["step"] = h["step"]
    return judge({"task": spec.name, "metric": spec.metric, "train_examples": len(train.examples),
                  "validation_examples": n_val, "majority": majority, "zero_shot": round(zero_shot, 4),
                  "curve": curve, "best": max((p["score"] for p in curve), default=None),
                  "seconds": round(time.time() - start, 1), "steps": result.steps,
                  "train_loss": result.metrics.get("train_loss"), "commit": _versions()["git"],
                  "source": spec.source, "max_new_tokens": int(b.max_new_tokens)})


# What one task's curve depends on. The stream, OOD and negative sets, the methods and SEE's own keys do
# not enter a plain LoRA's curve, so a config that swaps a stream task (or changes its epochs, which
# --steps overrides) still resumes the same search.
TRAIN_KEYS = ("batch_size", "grad_accum", "lr", "weight_decay", "warmup_ratio", "base_dropout", "max_length",
              "overlength", "mixed_precision", "group_by_length")
BUDGET_KEYS = ("train_examples",)  # max_new_tokens is kept on each task's record


def search_settings(config: dict) -> dict:
    return {"base": config["base"], "lora": config["lora"], "prompt": config.get("prompt"),
            "train": {k: config["train"].get(k) for k in TRAIN_KEYS},
            "budget": {k: config["budget"].get(k) for k in BUDGET_KEYS}}


def judge(record: dict) -> dict:
    """Set a task record's threshold and first learned step from its stored curve under the current rule,
    so that a report written after the rule changes never shows a verdict the rule no longer gives."""
    threshold = learns_threshold(record["metric"], record["majority"], record["zero_shot"])
    record["threshold"] = round(threshold, 4)
    record["first_step_learned"] = next((p["step"] for p in record["curve"] if p["score"] >= threshold), None)
    return record


def write_report(results: dict, out: Path) -> None:
    cfg = results["config"]
    lines = [f"# Budget search: `{results['name']}` on `{cfg['base']}`", "",
             f"Produced by `{results['command']}`.", "",
             f"- Last invocation: git `{results['versions']['git']}` (each task's own commit is in the table); versions: "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if k != "git") + ".",
             f"- One plain LoRA per task (the oracle's training): r={cfg['lora']['r']}, alpha={cfg['lora']['alpha']}, "
             f"batch {cfg['train']['batch_size']}, lr {cfg['train']['lr']}, max_length {cfg['train']['max_length']}, "
             f"{results['steps']} steps, seed {results['seed']}; validation every {results['every']} steps on "
             f"{results['validation_examples']} examples of the task's training split that it does not train on "
             "(the test split is never read).",
             "- Learned means: classification (exact match) at least the majority class + 15 points; generation "
             "(ROUGE-L) at least twice the base's zero-shot score and at least 15 points above it (the floor "
             "keeps a zero zero-shot from making any output count), and the majority answer + 15 points when "
             f"its answers form a closed set (at most {CLOSED_SET} distinct; searched since this rule).", "",
             "| task | metric | train ex. | majority | zero-shot | needed | best | first step that meets it | "
             "max new tokens | wall s | commit |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for r in results["tasks"].values():
        lines.append(f"| {r['task']} | {r['metric']} | {r['train_examples']} | {pct(r['majority'])} | "
                     f"{pct(r['zero_shot'])} | {pct(r['threshold'])} | {pct(r['best'])} | "
                     f"{r['first_step_learned'] if r['first_step_learned'] is not None else '**not reached**'} | "
                     f"{r['max_new_tokens']} | {r['seconds']:.0f} | `{r['commit']}` |")
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    lines += ["", "## Learning curves (validation score, percent, by step)", ""]
    for r in results["tasks"].values():
        lines.append(f"- `{r['task']}`: " + ", ".join(f"{p.get('step', '?')}: {pct(p['score'])}" for p in r["curve"]))
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--validation", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="*", help="only these stream tasks")
    p.add_argument("--note", action="append", default=[],
                   help="a line for the report's notes (kept with the results; repeat for more)")
    p.add_argument("overrides", nargs="*", help="key=value benchmark-config overrides (e.g. train.max_length=128)")
    args = p.parse_args()
    cfg = load_bench_config(args.config, args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    settings = {"steps": args.steps, "every": args.every, "validation_examples": args.validation, "seed": args.seed}
    results = json.loads(path.read_text()) if path.is_file() else {}
    config = OmegaConf.to_container(cfg, resolve=True)
    if results and (any(results.get(k) != v for k, v in settings.items())
                    # a search from before the schema gained a key ran at that key's default
                    or search_settings(_with_new_defaults(results["config"])) != search_settings(config)):
        raise SystemExit(f"{path} holds a search with other settings: use another --out")
    for name, record in results.get("tasks", {}).items():
        spec = next((s for s in config["stream"] if s["name"] == name), None)
        record.setdefault("source", spec["source"] if spec else None)
        if spec is not None and (record["source"], record["metric"]) != (spec["source"], spec["metric"]):
            raise SystemExit(f"{path}: task {name!r} was searched on {record['source']} ({record['metric']}), the "
                             f"config names {spec['source']} ({spec['metric']}): use another --out")
        # records from before commits were kept per task ran at the commit the file's versions name
        record.setdefault("commit", results["versions"]["git"])
        record.setdefault("max_new_tokens", results["config"]["budget"]["max_new_tokens"])
        judge(record)
    settings["config"] = config
    results.update({"name": cfg.name, "command": command, "versions": _versions(), **settings})
    results.setdefault("tasks", {})
    results["notes"] = list(dict.fromkeys([*results.get("notes", []), *args.note]))
    log = lambda m: print(m, flush=True)  # noqa: E731
    for spec in cfg.stream:
        if (args.tasks and spec.name not in args.tasks) or spec.name in results["tasks"]:
            continue
        log(f"{spec.name}: training {args.steps} steps")
        results["tasks"][spec.name] = search_task(cfg, spec, args.seed, args.steps, args.every, args.validation, log)
        path.write_text(strict_json(results, indent=2) + "\n")
        write_report(results, args.out)
    write_report(results, args.out)
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
