"""`see bench`: a tiny end-to-end run writes every output, and a rerun skips finished cells."""
import json

import pytest

from see.cli import main as see_main
from see.bench.config import load_bench_config
from see.errors import ConfigError


def _config(tmp_path, tiny_llama, methods=("seq-lora", "see")):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
name: tiny
base: {tiny_llama}
stream:
  - {{name: sentiment, source: "embedded:sentiment"}}
  - {{name: topic, source: "embedded:topic", metric: rouge_l}}
ood:
  - {{name: larger, source: "embedded:larger"}}
negatives:
  - {{name: capital, source: "embedded:capital"}}
methods: [{", ".join(methods)}]
seeds: [0]
budget: {{train_examples: 24, test_examples: 6, ood_examples: 4, max_new_tokens: 3}}
lora: {{r: 4, alpha: 8}}
train: {{max_steps: 3, batch_size: 8}}
output: {tmp_path / "out"}
""")
    return cfg


def test_tiny_bench_end_to_end_and_resume(tmp_path, tiny_llama, capsys, monkeypatch):
    cfg = _config(tmp_path, tiny_llama)
    assert see_main(["bench", str(cfg), "--no-progress"]) == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"seq-lora", "see"}
    see = results["methods"]["see"]["per_seed"]["0"]
    assert len(see["R"]) == 2 and all(v is not None for row in see["R"] for v in row)
    assert see["confusion"] is not None and see["OOD TPR"] is not None and 0 <= see["OOD FPR"] <= 1
    assert results["methods"]["seq-lora"]["summary"]["Routing acc"]["mean"] is None
    assert results["zero_shot"]["0"][0] is not None
    assert results["versions"]["peft"] and results["command"].startswith("see bench")
    import torch
    assert results["versions"]["cpu"] == f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    report = (out / "report.md").read_text()
    for needle in ("## Results", "Base model", "BWT", "## Definitions", "see bench"):
        assert needle in report
    for png in ("accuracy_matrices.png", "routing_confusion.png", "ap_bwt.png"):
        assert (out / png).stat().st_size > 1000
    n_cells = len(list((out / "cells").rglob("*.json")))
    assert n_cells == 2 + 2 * 4 + 1  # zero-shot + two 2x2 matrices + SEE's OOD cell
    # each cell keeps its per-query scores, whose mean is the cell's score (the report pairs methods by them)
    cell = json.loads((out / "cells" / "see" / "seed0" / "r1_1.json").read_text())
    assert len(cell["scores"]) == cell["n"] == 6
    assert sum(cell["scores"]) / 6 == pytest.approx(cell["score"], abs=1e-3)
    # and every answer, in query order (the examples are the first five)
    assert len(cell["answers"]) == 6 and cell["answers"][:5] == [e["answer"] for e in cell["examples"]]

    # a rerun computes nothing: every cell exists (answering would now fail)
    from see.bench import methods

    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(methods.See, "answer", refuse)
    monkeypatch.setattr(methods.SequentialLora, "answer", refuse)
    monkeypatch.setattr(methods.BaseModel, "answer", refuse)
    assert see_main(["bench", str(cfg), "--no-progress"]) == 0
    # a deleted cell is recomputed, and only that one
    (out / "cells" / "see" / "seed0" / "r1_0.json").unlink()
    monkeypatch.undo()
    calls = []
    original = methods.See.answer

    def counting(self, *args, **kwargs):
        calls.append(args[:2])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(methods.See, "answer", counting)
    assert see_main(["bench", str(cfg), "--no-progress"]) == 0
    assert calls == [(1, 0)]
    assert "warning" not in capsys.readouterr().out  # the same code throughout
    # other code resuming from the experts in work/ is told they were not trained by it
    from see.bench import runner

    monkeypatch.setattr(runner, "_git_commit", lambda: "0000000")
    (out / "cells" / "see" / "seed0" / "r1_0.json").unlink()
    assert see_main(["bench", str(cfg), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "warning:" in printed and "this code is 0000000" in printed and "not retrained" in printed


def test_bench_status_counts_done_and_remaining_cells(tmp_path, tiny_llama, capsys, monkeypatch):
    from see.bench.runner import bench_status, expected_cells

    cfg_path = _config(tmp_path, tiny_llama)
    cfg = load_bench_config(cfg_path)
    out = tmp_path / "out"
    # nothing run yet: every cell remains and there is nothing to estimate from
    st = bench_status(cfg, out)
    assert (st["done"], st["total"]) == (0, 2 + 2 * 4 + 1) and st["estimate_left"] is None
    assert see_main(["bench", str(cfg_path), "--no-progress"]) == 0
    cells = sorted((out / "cells").rglob("*.json"))
    assert len(cells) == len(expected_cells(cfg))
    values = {p: json.loads(p.read_text()) for p in cells}
    assert all(v["seconds"] >= 0 and v["commit"] and v["finished"] for v in values.values())
    report = (out / "report.md").read_text()
    assert "| see | 0 | 5/5 |" in report and "| seq-lora | 0 | 4/4 |" in report
    # drop SEE's first row (after task 0, two cells): it costs what row 1's training cell (its slowest) cost,
    # plus one further cell at the median of row 1's other two
    see_cells = [p for p in cells if p.parent.parent.name == "see"]
    assert [p.name for p in see_cells] == ["r0_0.json", "r0_1.json", "r1_0.json", "r1_1.json", "r1_ood.json"]
    for p in see_cells[:2]:
        p.unlink()
    kept = sorted((values[p]["seconds"] for p in see_cells[2:]), reverse=True)
    st = bench_status(cfg, out)
    row = next(r for r in st["rows"] if r["method"] == "see")
    assert (st["done"], row["done"], row["total"]) == (9, 3, 5)
    assert row["estimate_left"] == pytest.approx(kept[0] + (kept[1] + kept[2]) / 2)
    assert st["estimate_left"] == pytest.approx(row["estimate_left"])
    assert see_main(["bench", str(cfg_path), "--status"]) == 0
    printed = capsys.readouterr().out
    assert "9/11 cells done" in printed and "see" in printed and "3/5" in printed

    # --report renders the partial run and computes nothing (answering would fail)
    from see.bench import methods

    def refuse(*args, **kwargs):
        raise AssertionError("--report must not compute a cell")

    for cls in (methods.See, methods.SequentialLora, methods.BaseModel):
        monkeypatch.setattr(cls, "answer", refuse)
    assert see_main(["bench", str(cfg_path), "--report"]) == 0
    assert len(list((out / "cells").rglob("*.json"))) == 9
    report = (out / "report.md").read_text()
    assert "Written from the cells done so far" in report and "| see | 0 | 3/5 |" in report
    assert json.loads((out / "results.json").read_text())["report_only"] is True
    empty = tmp_path / "empty"
    assert see_main(["bench", str(cfg_path), "--report", "--out", str(empty)]) == 2
    assert "no benchmark cells" in capsys.readouterr().err


def test_diagonal_against_the_oracle_by_hand():
    from see.bench.report import _diagonal_section, diagonal_against

    class Cells(dict):
        def get(self, *key):
            return dict.get(self, key)

    # seed 0: SEE 0.70 vs oracle 0.75 on task 0 (per-query scores stored), 0.9 vs 0.9 on task 1 (no scores);
    # seed 1: 0.80 vs 0.79 on task 0, task 1 missing for the oracle
    cells = Cells({("see", 0, 0, 0): {"score": 0.70, "scores": [1, 0, 1, 1]},
                   ("oracle", 0, 0, 0): {"score": 0.75, "scores": [1, 1, 1, 0]},
                   ("see", 0, 1, 1): {"score": 0.9}, ("oracle", 0, 1, 1): {"score": 0.9}})
    R = {"see": {"0": [[0.70, None], [None, 0.9]], "1": [[0.80, None], [None, 0.5]]},
         "oracle": {"0": [[0.75, None], [None, 0.9]], "1": [[0.79, None], [None, None]]}}
    results = {"tasks": ["a", "b"], "seeds": [0, 1],
               "methods": {m: {"per_seed": {s: {"R": r} for s, r in per.items()}} for m, per in R.items()}}
    d = diagonal_against(cells, results, "see", "oracle")
    assert d["per_seed"]["0"] == [pytest.approx(-0.05), pytest.approx(0.0)]
    assert d["per_seed"]["1"] == [pytest.approx(0.01), None]
    assert d["mean"][0] == pytest.approx(-0.02) and d["seeds"] == [2, 1]
    # task 1's columns average seed 0 only, the one seed where both methods have the cell
    assert d["ours_mean"][1] == pytest.approx(0.9) and d["reference_mean"][1] == pytest.approx(0.9)
    # paired by query: d = [0, -1, 0, 1], mean 0, sample sd sqrt(2/3): 95% half-width 1.96 * 0.8165 / 2 = 0.80
    assert d["paired"]["0"][0]["mean"] == 0 and d["paired"]["0"][1] is None and d["paired"]["1"] == [None, None]
    text = "\n".join(_diagonal_section({**results, "diagonal": {"see": d}}))
    assert "| a | 75.0 | 77.0 | -2.0 ± 4.2 | 2 | yes | seed 0: +0.0 ± 80.0 |" in text
    assert "| b | 90.0 | 90.0 | +0.0 ± 0.0 | 1 | yes | – |" in text


def test_routing_failures_are_counted_and_quoted():
    from see.bench.report import _routing_section, misrouted_examples

    names = ["a", "b"]
    chosen = [["a", "b", None, "b"], ["b", "b"]]
    inputs = [["q1", "q2  with\nspaces", "q3", "q4"], ["q5", "q6"]]
    failures = misrouted_examples(names, chosen, inputs, per_pair=1)
    assert failures == {"a -> b": ["q2 with spaces"], "a -> fallback": ["q3"]}
    results = {"tasks": names, "methods": {"see": {"per_seed": {
        "0": {"confusion": [[1, 2, 1], [0, 2, 0]], "failures": failures},
        "1": {"confusion": [[3, 0, 1], [1, 1, 0]], "failures": {}}}}}}
    text = "\n".join(_routing_section(results))
    # summed over seeds: a -> a 4, a -> b 2, a -> fallback 2 (of 8); b -> a 1 of 4
    assert "| a | 4 (50%) | 2 (25%) | 2 (25%) |" in text and "| b | 1 (25%) | 3 (75%) | 0 (0%) |" in text
    assert "`a -> b`: 2 queries (25% of a's); e.g. “q2 with spaces”" in text
    assert "`b -> a`: 1 queries (25% of b's)" in text


def test_ood_queries_kept_by_an_expert_are_counted_and_quoted():
    from see.bench.report import _routing_section, ood_routing

    routed = ood_routing(["rte", "rte", "rte", "mnli"], [None, "b", "b", None], ["o1", "o2", "o3", "o4"], per_pair=1)
    assert routed == {"counts": {"rte": {"fallback": 1, "b": 2}, "mnli": {"fallback": 1}}, "kept": {"rte -> b": ["o2"]}}
    clean = ood_routing(["mnli"], [None], ["o5"])
    results = {"tasks": ["a", "b"], "methods": {"see": {"per_seed": {
        "0": {"confusion": [[1, 0, 0], [0, 1, 0]], "ood_routing": routed},
        "1": {"confusion": [[1, 0, 0], [0, 1, 0]], "ood_routing": clean}}}}}
    text = "\n".join(_routing_section(results))
    # summed over seeds: rte 0 / 2 / 1 of 3; mnli 2 of 2 to the fallback
    assert "| rte | 0 (0%) | 2 (67%) | 1 (33%) |" in text and "| mnli | 0 (0%) | 0 (0%) | 2 (100%) |" in text
    assert "`rte -> b`: 2 queries; e.g. “o2”" in text
    assert "Every OOD query" not in text
    results["methods"]["see"]["per_seed"] = {"1": results["methods"]["see"]["per_seed"]["1"]}
    assert "Every OOD query reached the fallback." in "\n".join(_routing_section(results))


def test_every_baseline_runs_on_a_tiny_stream(tmp_path, tiny_llama):
    from see.bench.runner import run_bench

    cfg = load_bench_config(_config(tmp_path, tiny_llama, ("replay-lora", "mtl-lora", "oracle", "knn-router",
                                                           "arrow", "see-calibrated")),
                            ["knn.embedder=base"])
    results = run_bench(cfg, tmp_path / "out", log=lambda m: None, progress=False)
    m = results["methods"]
    assert m["mtl-lora"]["per_seed"]["0"]["R"][0] == [None, None] and m["mtl-lora"]["summary"]["AP"]["mean"] is not None
    assert m["oracle"]["summary"]["AP"]["mean"] is not None
    for routed in ("knn-router", "arrow", "see-calibrated"):
        assert m[routed]["summary"]["Routing acc"]["mean"] is not None, routed
    assert m["arrow"]["per_seed"]["0"]["OOD TPR"] == 0.0  # Arrow has no fallback


def test_bench_config_errors(tmp_path, tiny_llama):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstream:\n  - {name: a, source: 'embedded:topic', metrik: exact_match}\n")
    with pytest.raises(ConfigError) as err:
        load_bench_config(bad)
    assert "metrik" in str(err.value) and "bad.yaml:3" in str(err.value)
    bad.write_text("name: x\nstream:\n  - {name: a, source: 'embedded:topic'}\nmethods: [see, magic]\n")
    with pytest.raises(ConfigError, match="unknown method 'magic'"):
        load_bench_config(bad)
    bad.write_text("name: x\n")
    with pytest.raises(ConfigError, match="at least one task"):
        load_bench_config(bad)
    # the see sections get see's own field checks, not only their types
    bad.write_text("name: x\nstream:\n  - {name: a, source: 'embedded:topic'}\ntrain: {lr: fast}\n")
    with pytest.raises(ConfigError, match="train.lr.*auto or a number"):
        load_bench_config(bad)
    bad.write_text("name: x\nstream:\n  - {name: a, source: 'embedded:topic'}\ntrain: {lr: 2e-4}\n")
    assert load_bench_config(bad).train.lr == 2e-4
    with pytest.raises(ConfigError, match="lora.dropout"):
        load_bench_config(bad, ["lora.dropout=1.5"])


@pytest.mark.parametrize("name", ["embedded", "superni-cpu", "superni-15", "cl-standard",
                                  "cl-standard-order2", "user-tasks/parity"])
def test_shipped_configs_load(name):
    from conftest import REPO

    cfg = load_bench_config(REPO / "benchmarks" / f"{name}.yaml")
    assert cfg.stream and cfg.methods


def test_resuming_into_a_run_with_another_budget_is_refused(tmp_path, tiny_llama):
    from see.bench.runner import run_bench

    cfg = load_bench_config(_config(tmp_path, tiny_llama, ("seq-lora",)), ["seeds=[0]"])
    run_bench(cfg, tmp_path / "out", log=lambda m: None, progress=False)
    # more seeds or methods extend the same run; a different budget would mix incomparable cells
    changed = load_bench_config(_config(tmp_path, tiny_llama, ("seq-lora",)), ["budget.train_examples=12"])
    with pytest.raises(ConfigError, match="different config.*budget"):
        run_bench(changed, tmp_path / "out", log=lambda m: None, progress=False)
    # a run from before the schema gained a key did what that key's default does: it resumes; the key set
    # to something else is a different run
    saved = tmp_path / "out" / "config.yaml"
    old = saved.read_text()
    assert "group_by_length: false" in old
    saved.write_text(old.replace("  group_by_length: false\n", ""))
    run_bench(cfg, tmp_path / "out", log=lambda m: None, progress=False)
    saved.write_text(old.replace("  group_by_length: false\n", ""))
    grouped = load_bench_config(_config(tmp_path, tiny_llama, ("seq-lora",)), ["train.group_by_length=true"])
    with pytest.raises(ConfigError, match="different config.*train"):
        run_bench(grouped, tmp_path / "out", log=lambda m: None, progress=False)
    # a key whose default changed what runs do (near misses) reads as off in a config written before it
    saved.write_text(old.replace("  near_miss_ratio: auto\n", ""))
    assert saved.read_text() != old
    with pytest.raises(ConfigError, match="different config.*reconstruction"):
        run_bench(cfg, tmp_path / "out", log=lambda m: None, progress=False)
    saved.write_text(old.replace("  near_miss_ratio: auto\n", ""))
    without = load_bench_config(_config(tmp_path, tiny_llama, ("seq-lora",)), ["reconstruction.near_miss_ratio=0"])
    run_bench(without, tmp_path / "out", log=lambda m: None, progress=False)
    # likewise the negative share, `auto` since: a run from before it capped nothing
    assert "negative_share: auto" in old
    saved.write_text(old.replace("  negative_share: auto\n", ""))
    with pytest.raises(ConfigError, match="different config.*train"):
        run_bench(cfg, tmp_path / "out", log=lambda m: None, progress=False)
    saved.write_text(old.replace("  negative_share: auto\n", ""))
    uncapped = load_bench_config(_config(tmp_path, tiny_llama, ("seq-lora",)), ["train.negative_share=none"])
    run_bench(uncapped, tmp_path / "out", log=lambda m: None, progress=False)


@pytest.mark.parametrize("name", ["embedded", "superni-cpu"])
def test_a_committed_benchmark_folder_still_matches_its_config(name):
    """A default changed since the committed cells ran (`reconstruction.near_miss_ratio` 0.5 -> `auto`): the
    YAML writes out the value those cells ran with, so resuming or `--report` still reads the folder, and the
    new default, a different value, is refused rather than mixed into it."""
    from pathlib import Path

    from see.bench.runner import _check_same_run

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    _check_same_run(load_bench_config(root / f"{name}.yaml"), root / "results" / name)
    with pytest.raises(ConfigError, match="different config.*reconstruction"):
        _check_same_run(load_bench_config(root / f"{name}.yaml", ["reconstruction.near_miss_ratio=auto"]),
                        root / "results" / name)


def _benchmark_script(name: str):
    """A script of ``benchmarks/`` (not a package) as a module."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_skill_probes_state_true_answers_and_read_a_task_file(tmp_path):
    module = _benchmark_script("embedded-base/probe_skills")
    table = module.probes(20, seed=5)
    for prompt, answer in table["sum"]:
        a, b = prompt.rstrip(" =").split(" + ")
        assert int(a) + int(b) == int(answer)
    for prompt, answer in table["difference"]:
        a, b = prompt.rstrip(" =").split(" - ")
        assert int(a) - int(b) == int(answer) >= 0
    assert all(prompt == f"{answer[::-1]} reversed is" for prompt, answer in table["reversal"])
    task = tmp_path / "reverse.jsonl"
    task.write_text('{"input": "Spell falcon backwards", "output": "noclaf"}\n\n{"input": "x", "output": "ab"}\n')
    assert module.words_probe(task) == [("falcon reversed is", "noclaf"), ("ba reversed is", "ab")]
    numbers = tmp_path / "subtract.csv"
    numbers.write_text("input,output\nTake 591 away from 635,44\n982-652=,330\n")
    assert module.operands_probe(numbers, "difference") == [("635 - 591 =", "44"), ("982 - 652 =", "330")]
    assert module.operands_probe(numbers, "sum")[0] == ("591 + 635 =", "44")
    assert module.base_form("What do you get if you add 244 to 502?", "sum") == "244 + 502 ="
    with pytest.raises(ValueError, match="two numbers"):
        module.base_form("add seven to 3", "sum")
    assert [module.first_word(t) for t in ["372\nthe sum", "372 . the", " ahly .", "", "\n"]] == ["372", "372", "ahly", "", ""]


def test_arithmetic_only_batches_target_the_answer_alone():
    import random

    module = _benchmark_script("embedded-base/arithmetic_only")
    rng = random.Random(0)
    for _ in range(50):
        question, answer = module.problem(rng)
        a, op, b = question[:-1].partition("+") if "+" in question else question[:-1].partition("-")
        assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
    x, y = module.batch(random.Random(1), 4)
    for row, labels in zip(x.tolist(), y.tolist()):
        equals = row.index(module.INDEX["="])
        assert all(label == -100 for label in labels[:equals + 1])
        end = labels.index(module.EOS)
        assert labels[equals + 1:end] == row[equals + 1:end] and all(label == -100 for label in labels[end + 1:])


@pytest.mark.parametrize("metric,majority,zero_shot,needed", [
    ("exact_match", 0.505, 0.0, 0.655),   # sst2: majority + 15 points
    ("exact_match", None, 0.3, 0.15),     # no majority known: 15 points over nothing
    ("rouge_l", None, 0.0, 0.15),         # zero-shot 0: "twice" says nothing, the 15-point floor decides
    ("rouge_l", None, 0.1, 0.25),         # floor above twice (0.2)
    ("rouge_l", None, 0.4, 0.8),          # twice above the floor (0.55)
    ("rouge_l", 0.25, 0.0, 0.40),         # a closed answer set (one letter of five): the majority + 15 points
    ("rouge_l", 0.25, 0.2, 0.40),         # ... unless the generation rule asks more (0.35 < 0.40)
])
def test_budget_search_learned_rule(metric, majority, zero_shot, needed):
    assert _benchmark_script("budget_search").learns_threshold(metric, majority, zero_shot) == pytest.approx(needed)


def test_heldout_share_trains_the_oracle_on_a_subset_and_scores_the_bench_test_set(tmp_path, tiny_llama):
    """The oracle's training on 16 of a task's 24 bench examples: the record says so, its steps follow the
    config's budget (max_steps 3), it is scored on the bench's 6 test queries, and a second run appends."""
    module = _benchmark_script("heldout_share")
    cfg = _config(tmp_path, tiny_llama, ("oracle",))
    out = tmp_path / "hs"
    record = module.main([str(cfg), "--task", "sentiment", "--examples", "16", "--out", str(out)])
    assert (record["examples"], record["steps"], record["test_examples"]) == (16, 3, 6)
    assert 0 <= record["score"] <= 100 and record["metric"] == "exact_match"
    module.main([str(cfg), "--task", "topic", "--examples", "24", "--out", str(out), "train.max_steps=2"])
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["task"], r["examples"], r["steps"], r["metric"]) for r in lines] == [
        ("sentiment", 16, 3, "exact_match"), ("topic", 24, 2, "rouge_l")]
    with pytest.raises(SystemExit):
        module.main([str(cfg), "--task", "yahoo", "--examples", "16", "--out", str(out)])
    with pytest.raises(SystemExit):
        module.main([str(cfg), "--task", "topic", "--examples", "25", "--out", str(out)])


def test_compare_cells_pairs_one_task_across_runs_by_query(tmp_path):
    """Hand-computed: the reference answers queries 1-3 of 4 right (75%), the arm queries 1-2 (50%); per-query
    differences 0, 0, -1, 0 have mean -0.25 and sample std 0.5, so the 95% half-width is 1.96 * 0.5 / 2."""
    module = _benchmark_script("compare_cells")

    def cell(folder, method, seed, row, scores):
        path = tmp_path / folder / "cells" / method / f"seed{seed}" / f"r{row}_{row}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"score": sum(scores) / len(scores), "scores": scores, "commit": "abc1234"}))

    cell("bench", "oracle", 0, 2, [1.0, 1.0, 1.0, 0.0])
    cell("ablation", "see", 0, 0, [1.0, 1.0, 0.0, 0.0])
    table = module.main(["--seeds", "0", "1", "--reference", "oracle",
                         "--arm", f"oracle={tmp_path / 'bench'}:oracle:2",
                         "--arm", f"arm={tmp_path / 'ablation'}:see:0", "--out", str(tmp_path / "t.md")])
    rows = table.splitlines()
    assert rows[2].split(" | ")[1:4] == ["75.0", "–", "75.0 ± 0.0"]
    assert rows[3].split(" | ")[1:5] == ["50.0", "–", "50.0 ± 0.0", f"seed 0: -25.0 ± {100 * 1.96 * 0.5 / 2:.1f}"]
    assert (tmp_path / "t.md").read_text() == table
    with pytest.raises(SystemExit):  # the reference must be one of the arms
        module.main(["--seeds", "0", "--reference", "nope", "--arm", f"arm={tmp_path / 'ablation'}:see:0"])
    with pytest.raises(SystemExit):  # LABEL=FOLDER:METHOD:ROW
        module.main(["--seeds", "0", "--reference", "arm", "--arm", "arm=folder-only"])


def test_order_effects_pairs_seeds_and_matches_tasks_by_name(tmp_path):
    """Hand-computed: order A (x, y) R = [[.8, 0], [.6, .9]], AP .75, BWT -.2; order B (y, x) R = [[.7, 0],
    [.5, .8]], AP .65, BWT -.2. B - A on AP is -10 points; task x is first in A (own .8, last .6) and second
    in B (own and last .8); y is second in A (.9, .9) and first in B (own .7, last .5). Seed 1 is complete in
    A only and seed 2 in neither, so both are left out."""
    module = _benchmark_script("order_effects")

    def report(folder, tasks, R, ap, bwt, seeds):
        per_seed = {str(s): {"R": R, "AP": ap, "BWT": bwt, "complete": True} for s in seeds}
        per_seed["2"] = {"R": R, "AP": None, "BWT": None, "complete": False}  # cells missing in both
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "results.json").write_text(json.dumps(
            {"tasks": tasks, "methods": {"see": {"per_seed": per_seed, "seeds_counted": seeds + [2]}}}))

    report("a", ["x", "y"], [[0.8, 0.0], [0.6, 0.9]], 0.75, -0.2, [0, 1])
    report("b", ["y", "x"], [[0.7, 0.0], [0.5, 0.8]], 0.65, -0.2, [0])
    text = module.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o.md")])
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[1:-1]]
            for line in text.splitlines() if line.startswith("| see")}
    assert rows[("see", "0")][2:] == ["75.0 ± 0.0", "65.0 ± 0.0", "-10.0 (-10.0)", "-20.0 ± 0.0", "-20.0 ± 0.0"]
    assert rows[("see", "x")][2:] == ["1, 2", "80.0 ± 0.0", "80.0 ± 0.0", "60.0 ± 0.0", "80.0 ± 0.0"]
    assert rows[("see", "y")][2:] == ["2, 1", "90.0 ± 0.0", "70.0 ± 0.0", "90.0 ± 0.0", "50.0 ± 0.0"]
    assert (tmp_path / "o.md").read_text() == text
    report("c", ["x", "z"], [[0.8, 0.0], [0.6, 0.9]], 0.75, -0.2, [0])
    with pytest.raises(SystemExit):  # not the same tasks
        module.main([str(tmp_path / "a"), str(tmp_path / "c")])
    with pytest.raises(SystemExit):  # no report there
        module.main([str(tmp_path / "a"), str(tmp_path / "missing")])


def test_answer_confusion_counts_gold_against_answers():
    """Hand-computed: gold a, a, b, b, b; answers a, b, b, B (normalised to b), zzz (none of the labels)."""
    from see.metrics import answer_confusion

    assert answer_confusion(["a", "a", "b", "b", "b"], ["a", "b", "b", "B.", "zzz"], ["a", "b"]) == [[1, 1, 0],
                                                                                                   [0, 2, 1]]
    with pytest.raises(ValueError):  # a gold answer outside the labels is a caller's mistake, not "other"
        answer_confusion(["c"], ["a"], ["a", "b"])
    with pytest.raises(ValueError):  # one answer per gold answer
        answer_confusion(["a", "b"], ["a"], ["a", "b"])


def test_answer_confusion_script_reads_a_runs_cell_against_its_test_queries(tmp_path, tiny_llama):
    """The script reloads the run's test queries by seed; a cell that answers every query right but the first
    (given another label) puts that one off the diagonal and the rest on it."""
    from see.bench.config import load_bench_config
    from see.bench.runner import Cells, _stream

    module = _benchmark_script("answer_confusion")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(_config(tmp_path, tiny_llama).read_text())
    gold = [ex.outputs[0] for ex in _stream(load_bench_config(run / "config.yaml"), 0, [])[0].test.examples]
    labels = sorted(set(gold))
    assert len(labels) >= 2
    wrong = next(g for g in labels if g != gold[0])
    answers = [wrong] + gold[1:]
    Cells(run).put({"score": (len(gold) - 1) / len(gold), "answers": answers}, "see", 0, 1, 0)
    table = module.main([str(run), "--method", "see", "--seed", "0", "--row", "1", "--task", "sentiment"])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in table.splitlines()[2:]}
    assert int(rows[gold[0]][labels.index(wrong)]) == 1
    assert rows[gold[0]][-1].rstrip(" |") == f"{gold.count(gold[0]) - 1} of {gold.count(gold[0])}"
    assert sum(int(rows[g][k]) for k, g in enumerate(labels)) == len(gold) - 1
    with pytest.raises(SystemExit):  # a cell without stored answers
        Cells(run).put({"score": 1.0}, "oracle", 0, 1, 0)
        module.main([str(run), "--method", "oracle", "--seed", "0", "--row", "1", "--task", "sentiment"])
    with pytest.raises(SystemExit):  # a task outside the run's stream
        module.main([str(run), "--method", "see", "--seed", "0", "--row", "1", "--task", "yelp"])


def test_split_batches_times_the_first_expert_with_and_without_sub_batches(tmp_path, tiny_llama):
    """Both arms add the stream's first expert as the bench does (its negatives included) for --steps steps,
    alternating; the report and record give each run's seconds per step and the ratio of the medians."""
    module = _benchmark_script("split_batches")
    out = tmp_path / "speed"
    results = module.main([str(_config(tmp_path, tiny_llama)), "--task", "sentiment", "--steps", "2", "--rounds", "1",
                           "--out", str(out)])
    assert results["steps"] == 2 and results["general_negatives"] > 0
    assert results["training_examples"] > 24  # the task's own examples and negatives
    runs = results["seconds_per_step"]
    assert set(runs) == {"whole batches", "sub-batches"} and all(len(v) == 1 and v[0] > 0 for v in runs.values())
    assert results["ratio"] == pytest.approx(runs["whole batches"][0] / runs["sub-batches"][0])
    assert json.loads((out / "results.json").read_text())["ratio"] == pytest.approx(results["ratio"])
    assert f"**{results['ratio']:.2f}x**" in (out / "report.md").read_text()
    with pytest.raises(SystemExit):
        module.main([str(_config(tmp_path, tiny_llama)), "--task", "yahoo", "--out", str(out)])


def test_status_estimates_rows_from_the_slowest_seed_of_a_method(tmp_path, tiny_llama):
    """Seed 0's SEE cells were recomputed from saved experts (1 s each: no training); seed 1's first row
    trained (its first cell 10 s, its second 1 s). Seed 1's untouched row 1 (3 cells) is estimated at
    10 + 2 x 1 s: the training cell from the slowest seed, further cells at the median further cell."""
    from see.bench.runner import Cells, bench_status, expected_cells

    cfg = load_bench_config(_config(tmp_path, tiny_llama, ("see",)), ["seeds=[0,1]"])
    out = tmp_path / "out"
    cells = Cells(out, "abc1234")
    keys = [k for k in expected_cells(cfg) if k[0] == "see"]
    assert [k[1:] for k in keys] == [(s, i, j) for s in (0, 1) for i, j in ((0, 0), (0, 1), (1, 0), (1, 1), (1, "ood"))]
    seconds = {key: 1.0 for key in keys[:5]} | {keys[5]: 10.0, keys[6]: 1.0}
    for key, value in seconds.items():
        cells.put({"score": 1.0}, *key)
        path = cells.path(*key)
        path.write_text(json.dumps({**json.loads(path.read_text()), "seconds": value}))
    rows = {(r["method"], r["seed"]): r for r in bench_status(cfg, out)["rows"]}
    assert rows["see", 0]["estimate_left"] == 0
    assert rows["see", 1]["estimate_left"] == pytest.approx(10.0 + 2 * 1.0)
    # the base has no complete row: each of its missing cells takes the mean over every timed cell ((5 + 10 + 1) / 7 s)
    assert rows["base", 0]["estimate_left"] == pytest.approx(2 * 16 / 7)
    # a status of seed 2 alone (about to run, nothing of it timed) estimates it from the seeds the folder holds:
    # each of its two SEE rows costs the 10 s training cell plus 1 s a further cell
    alone = load_bench_config(_config(tmp_path, tiny_llama, ("see",)), ["seeds=[2]"])
    st = bench_status(alone, out)
    rows = {(r["method"], r["seed"]): r for r in st["rows"]}
    assert set(rows) == {("base", 2), ("see", 2)} and st["done"] == 0
    assert rows["see", 2]["estimate_left"] == pytest.approx((10.0 + 1.0) + (10.0 + 2 * 1.0))
    assert st["estimate_left"] == pytest.approx(23.0 + 2 * 16 / 7)


def test_a_partial_run_keeps_the_folder_config_whole(tmp_path, tiny_llama):
    """A run of one method and seed into a folder that holds others adds to the folder's methods and seeds."""
    from omegaconf import OmegaConf

    from see.bench.runner import _write_folder_config

    out = tmp_path / "out"
    out.mkdir()
    _write_folder_config(load_bench_config(_config(tmp_path, tiny_llama, ("oracle", "see")), ["seeds=[0]"]), out)
    _write_folder_config(load_bench_config(_config(tmp_path, tiny_llama, ("see", "seq-lora")), ["seeds=[1]"]), out)
    saved = OmegaConf.load(out / "config.yaml")
    assert list(saved.methods) == ["oracle", "see", "seq-lora"] and list(saved.seeds) == [0, 1]


def test_a_seed_still_running_is_left_out_of_the_averages():
    """AP, BWT and FWT of a partial matrix are other quantities than a finished seed's; averaging them in would
    move the mean toward whichever rows happen to be done."""
    from types import SimpleNamespace

    from see.bench.report import aggregate

    class Cells(dict):
        def get(self, *key):
            return dict.get(self, key)

    # seed 0 finished: R = [[0.8, 0.1], [0.7, 0.9]]; seed 1 has only its first row: [[0.6, 0.3]]
    cells = Cells({("seq-lora", 0, 0, 0): {"score": 0.8}, ("seq-lora", 0, 0, 1): {"score": 0.1},
                   ("seq-lora", 0, 1, 0): {"score": 0.7}, ("seq-lora", 0, 1, 1): {"score": 0.9},
                   ("seq-lora", 1, 0, 0): {"score": 0.6}, ("seq-lora", 1, 0, 1): {"score": 0.3},
                   ("base", 0, "zero", 0): {"score": 0.0}, ("base", 0, "zero", 1): {"score": 0.0},
                   ("base", 1, "zero", 0): {"score": 0.0}, ("base", 1, "zero", 1): {"score": 0.0}})
    cfg = SimpleNamespace(name="t", base="b", stream=[SimpleNamespace(name="a"), SimpleNamespace(name="b")],
                          seeds=[0, 1], methods=["seq-lora"], ood=[])
    data = aggregate(cfg, cells, [])["methods"]["seq-lora"]
    assert data["seeds_counted"] == [0]
    # seed 0 alone: AP (0.7 + 0.9) / 2, BWT 0.7 - 0.8, FWT R[0][1] - 0 = 0.1; seed 1's FWT (0.3) is not averaged in
    assert data["summary"]["AP"]["mean"] == pytest.approx(0.8)
    assert data["summary"]["BWT"]["mean"] == pytest.approx(-0.1)
    assert data["summary"]["FWT"]["mean"] == pytest.approx(0.1)
    assert data["mean_R"][0] == [pytest.approx(0.8), pytest.approx(0.1)]
    assert data["per_seed"]["1"]["complete"] is False and data["per_seed"]["1"]["FWT"] == pytest.approx(0.3)

    # while no seed is complete, the partial seeds are all there is to show
    del cells[("seq-lora", 0, 1, 1)]
    data = aggregate(cfg, cells, [])["methods"]["seq-lora"]
    assert data["seeds_counted"] == [0, 1]
    assert data["summary"]["FWT"]["mean"] == pytest.approx(0.2)


def test_a_task_with_its_own_test_file(tmp_path):
    """Users keep a train file and a test file: the test examples come from ``test_source``, all of them kept
    in order across seeds, the training examples only from ``source``; a run saved before the key existed
    still reads as the same run."""
    from omegaconf import OmegaConf

    from see.bench.runner import _check_same_run
    from see.bench.tasks import stream_task

    train = tmp_path / "t.train.jsonl"
    train.write_text("".join(json.dumps({"q": f"train {k}", "a": str(k)}) + "\n" for k in range(10)))
    test = tmp_path / "t.test.csv"
    test.write_text("q,a\n" + "".join(f"test {k},{k}\n" for k in range(4)))
    cfg_file = tmp_path / "b.yaml"
    cfg_file.write_text(f"stream:\n  - {{name: t, source: {train}, test_source: {test}, input_field: q, "
                        "output_field: a}\nbudget: {train_examples: 6, test_examples: 4}\n")
    cfg = load_bench_config(cfg_file)
    task = stream_task(cfg.stream[0], cfg.budget, seed=1)
    assert len(task.train) == 6 and {ex.input for ex in task.train.examples} <= {f"train {k}" for k in range(10)}
    assert sorted(ex.input for ex in task.test.examples) == [f"test {k}" for k in range(4)]
    assert stream_task(cfg.stream[0], cfg.budget, seed=2).test.examples == task.test.examples

    for bad in (f"ood:\n  - {{name: o, source: {train}, test_source: {test}}}\n",
                f"  - {{name: e, source: 'embedded:topic', test_source: {test}}}\n"):
        wrong = tmp_path / "wrong.yaml"
        wrong.write_text(cfg_file.read_text().replace("budget:", bad + "budget:"))  # an OOD set; a second stream task
        with pytest.raises(ConfigError, match="test_source is for stream tasks"):
            load_bench_config(wrong)

    out = tmp_path / "out"
    (out / "cells").mkdir(parents=True)
    one_file = tmp_path / "one-file.yaml"
    one_file.write_text(cfg_file.read_text().replace(f", test_source: {test}", ""))
    old = OmegaConf.to_container(load_bench_config(one_file), resolve=True)
    assert old["stream"][0].pop("test_source") is None
    (out / "config.yaml").write_text(OmegaConf.to_yaml(old))
    _check_same_run(load_bench_config(one_file), out)
    with pytest.raises(ConfigError, match="different config.*stream"):
        _check_same_run(cfg, out)


def test_eval_history_prints_every_attempt_a_failed_restart_included(tmp_path, monkeypatch, capsys):
    import sys

    module = _benchmark_script("eval_history")
    ens = tmp_path / "out" / "work" / "seed0" / "see" / "ensemble"
    ens.mkdir(parents=True)
    attempts = [{"seed": 0, "steps": 400, "heldout_exact_match": 0.5, "heldout_score": 0.61, "answers_collapsed": True},
                {"seed": 1000, "failed": "training diverged: the loss became nan at step 3"}]
    history = [{"step": 200, "heldout_exact_match": 0.5}]
    (ens / "manifest.json").write_text(json.dumps({"experts": [
        {"name": "sst2", "metrics": {"eval_history": history, "attempts": attempts, "kept_seed": 0}}]}))
    monkeypatch.setattr(sys, "argv", ["eval_history.py", str(tmp_path / "out"), "--seed", "0"])
    module.main()
    out = capsys.readouterr().out
    assert "sst2: attempt with seed 0: held-out exact match 50%, score 61.0 (kept)" in out
    assert "sst2: attempt with seed 1000: failed (training diverged" in out
    written = json.loads((tmp_path / "out" / "eval_history.json").read_text())
    assert written["sst2"]["eval_history"] == history and written["sst2"]["final"]["attempts"] == attempts


def test_user_task_runner_sends_ensemble_settings_to_init_and_the_rest_to_each_expert():
    module = _benchmark_script("user-tasks/run")
    assert module.split_overrides(["prompt.template={input}", "train.epochs=2", "model.dtype=float32",
                                   "routing.target_frr=0.05"]) == (
        ["prompt.template={input}", "model.dtype=float32"], ["train.epochs=2", "routing.target_frr=0.05"])
    assert module.split_overrides([]) == ([], [])


def test_one_more_copies_the_ensemble_as_it_stood_before_the_task(tmp_path):
    module = _benchmark_script("user-tasks/one_more")
    ens = tmp_path / "ensemble"
    experts = [{"name": n, "path": f"experts/{n}"} for n in ("reverse_word", "add_numbers", "subtract_numbers")]
    for e in experts:
        (ens / e["path"]).mkdir(parents=True)
        (ens / e["path"] / "rehearsal.jsonl").write_text("{}\n")
    (ens / "manifest.json").write_text(json.dumps({"format_version": 1, "experts": experts, "retired": []}))
    kept = module.truncated_copy(ens, "add_numbers", tmp_path / "copy")
    assert kept == ["reverse_word"]
    manifest = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert [e["name"] for e in manifest["experts"]] == ["reverse_word"] and manifest["retired"] == []
    assert sorted(p.name for p in (tmp_path / "copy" / "experts").iterdir()) == ["reverse_word"]
    assert (ens / "experts" / "subtract_numbers").is_dir()  # the finished run's ensemble is left as it was
    with pytest.raises(SystemExit, match="no expert 'count_vowels'"):
        module.truncated_copy(ens, "count_vowels", tmp_path / "other")


def test_one_more_names_an_unknown_task_before_training(tmp_path):
    """A key=value given after --eval is parsed as one more file to evaluate: say so before any add-expert."""
    module = _benchmark_script("user-tasks/one_more")
    with pytest.raises(SystemExit, match=r"no suite task or OOD file named 'train.seed=1'.*before --eval"):
        module.main([str(tmp_path), "last_letter", "--out", str(tmp_path / "o.json"), "--eval", "last_letter",
                     "train.seed=1"])
    assert not (tmp_path / "o.json").exists()


def test_refit_ood_counts_each_kept_refit_expert_at_both_thresholds(tiny_llama, tmp_path):
    """``benchmarks/user-tasks/refit_ood.py``: every kept refit expert, alone, on its own test file and each OOD
    file, counted under the first threshold and under the refit's; an expert without a kept refit is left out.
    The thresholds are set to the ends of [0, 1] so that the counts are known without scoring anything here."""
    from see.data import load_queries, load_task
    from see.lifecycle import add_expert, init_ensemble

    module = _benchmark_script("user-tasks/refit_ood")
    tasks = {t["name"]: t for t in json.loads((module.HERE / "tasks.json").read_text())["tasks"]}
    ens = tmp_path / "ens"
    init_ensemble(ens, base=str(tiny_llama), log=lambda m: None)
    add_expert(ens, "last_letter", load_task(module.HERE / tasks["last_letter"]["train"], max_examples=40),
               overrides=["train.max_steps=2", "train.batch_size=8", "lora.r=4", "train.restarts=0"],
               progress=False, log=lambda m: None)
    assert module.main([str(ens)]) == []  # trained once: nothing to compare
    manifest = json.loads((ens / "manifest.json").read_text())
    manifest["experts"][0]["metrics"].update(threshold=1.0, refit={"kept": True})  # first: rejects every query
    manifest["experts"][0]["threshold"] = 0.0                                         # refit's: accepts every one
    (ens / "manifest.json").write_text(json.dumps(manifest, indent=1))
    rows = module.main([str(ens), "--json", str(tmp_path / "rows.json")])
    ood = sorted(t for t in tasks if t.startswith("ood_"))
    assert [r["queries_of"] for r in rows] == ["last_letter", *ood] and {r["expert"] for r in rows} == {"last_letter"}
    for r in rows:
        n = len(load_queries(module.HERE / tasks[r["queries_of"]]["test"]))
        assert r["queries"] == n and r["under_first"] == n and r["under_refit"] == 0
    assert json.loads((tmp_path / "rows.json").read_text()) == rows


def test_peak_stack_adds_the_task_again_and_marks_where_memory_grew(tiny_llama, tmp_path, monkeypatch):
    """``benchmarks/user-tasks/peak_stack.py``: the copy holds the experts before the task and the task again,
    the finished run's ensemble is left as it was, and each mark is larger than the one before it."""
    from see.data import load_task
    from see.lifecycle import add_expert, init_ensemble

    module = _benchmark_script("user-tasks/peak_stack")
    tasks = {t["name"]: t for t in json.loads((module.HERE / "tasks.json").read_text())["tasks"]}
    ens = tmp_path / "work" / "ensemble"
    init_ensemble(ens, base=str(tiny_llama), log=lambda m: None)
    fast = ["train.max_steps=2", "train.batch_size=8", "lora.r=4", "train.restarts=0", "train.repair_steps=0"]
    for name in ("last_letter", "even_odd"):
        add_expert(ens, name, load_task(module.HERE / tasks[name]["train"], max_examples=40), overrides=fast,
                   progress=False, log=lambda m: None)
    before = (ens / "manifest.json").read_text()
    # a 1-byte step: every sample that grew is a mark, so a run of seconds leaves several
    marks = module.main([str(tmp_path / "work"), "even_odd", str(tmp_path / "copy"), "--step", "0.000001",
                         "--json", str(tmp_path / "marks.json"), *fast])
    copy = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert [e["name"] for e in copy["experts"]] == ["last_letter", "even_odd"]
    assert (ens / "manifest.json").read_text() == before
    assert len(marks) >= 2 and all(a["rss_mib"] <= b["rss_mib"] for a, b in zip(marks, marks[1:]))
    assert any(m["frames"] for m in marks) and all(f.split(":")[0].endswith(".py") for m in marks for f in m["frames"])
    assert json.loads((tmp_path / "marks.json").read_text()) == marks
