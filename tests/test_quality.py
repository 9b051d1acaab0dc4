"""An expert that did not learn is reported or refused; negatives and thresholds come with no flag."""
import json
import subprocess
import sys

import pytest

from conftest import family_jsonl, run_see, tree_hash

FAST = ["train.max_steps=6", "train.batch_size=8", "lora.r=4"]


def test_an_expert_that_did_not_learn_is_refused_under_min_score(tiny_llama, tmp_path):
    path = tmp_path / "ens"
    assert run_see("init", path, "--base", tiny_llama).returncode == 0
    data = family_jsonl(tmp_path / "antonym.jsonl", "antonym", 60)
    before = tree_hash(path)
    r = run_see("add-expert", path, "--name", "antonym", "--data", data, "--no-progress", *FAST,
                "train.min_score=0.99")
    assert r.returncode == 3, r.stderr
    assert "did not learn" in r.stderr and "train.min_score" in r.stderr and "Traceback" not in r.stderr
    assert tree_hash(path) == before


def test_defaults_give_negatives_a_threshold_and_a_warning_off_the_embedded_base(tiny_llama, tmp_path):
    path = tmp_path / "ens"
    assert run_see("init", path, "--base", tiny_llama).returncode == 0
    data = family_jsonl(tmp_path / "antonym.jsonl", "antonym", 60)
    r = run_see("add-expert", path, "--name", "antonym", "--data", data, "--no-progress", *FAST)
    assert r.returncode == 0, r.stderr
    assert "warning: expert 'antonym' did not learn" in r.stderr  # 6 steps on a random base learn nothing
    [expert] = json.loads((path / "manifest.json").read_text())["experts"]
    m = expert["metrics"]
    assert m["general_negatives"] == "shipped-pool" and m["reconstruction"]["general"] == 60  # 1.0 x 60
    assert 0.0 < expert["threshold"] < 1.0 and "base_exact_match" in m
    listing = run_see("list", path)
    assert listing.returncode == 0 and "base EM" in listing.stdout and f"{expert['threshold']:.3f}" in listing.stdout


def test_argmax_keeps_the_papers_rule(tiny_llama, tmp_path):
    from see.ensemble import Ensemble
    from see.lifecycle import add_expert, init_ensemble
    from see.data import load_task

    path = tmp_path / "ens"
    init_ensemble(path, base=str(tiny_llama), overrides=["routing.threshold=argmax"], log=lambda m: None)
    add_expert(path, "antonym", load_task(family_jsonl(tmp_path / "a.jsonl", "antonym", 40)), overrides=FAST,
               progress=False, log=lambda m: None)
    ens = Ensemble.load(path)
    assert ens.manifest.experts[0].threshold is None and ens.thresholds() == {"antonym": None}


def test_shipped_negatives_pool_is_what_its_builder_writes():
    r = subprocess.run([sys.executable, "-m", "see.negatives.build_pool", "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    from see.negatives import general_pool

    pool = general_pool()
    assert len(pool) == len({x for _, x in pool}) >= 600


def test_a_negatives_file_is_read_by_its_own_input_field(tiny_llama, tmp_path):
    """The task's CSV says `question`; the negatives file says `input` (or, as before, the task's field)."""
    path = tmp_path / "ens"
    assert run_see("init", path, "--base", tiny_llama).returncode == 0
    data = tmp_path / "t.csv"
    data.write_text("question,answer\n" + "".join(f"what is {i} plus one,{i + 1}\n" for i in range(20)))
    negatives = tmp_path / "neg.jsonl"
    negatives.write_text("".join(json.dumps({"input": f"tell me a story number {i}"}) + "\n" for i in range(20)))
    r = run_see("add-expert", path, "--name", "plus", "--data", data, "--input-field", "question",
                "--output-field", "answer", "--negatives", negatives, "--no-progress", *FAST)
    assert r.returncode == 0, r.stderr
    [expert] = json.loads((path / "manifest.json").read_text())["experts"]
    assert expert["metrics"]["reconstruction"]["general"] == 20  # the whole file: 1.0 x 20


def test_a_negatives_file_keeps_each_records_instruction(tmp_path):
    """A query is its instruction and its input: a pool's negatives keep both, or an expert learns to reject
    bare inputs and to accept anything with an instruction line."""
    from see.data import load_queries

    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"instruction": "Name the capital.", "input": "peru"}) + "\n"
                    + json.dumps({"input": "hello there"}) + "\n")
    assert load_queries(pool) == [("Name the capital.", "peru"), (None, "hello there")]


@pytest.mark.parametrize("metrics, warned", [
    # superni-cpu's seed 2 sst2 expert: every query accepted, every negative rejected, 46% answered right
    # where 60% of its held-out reviews are positive; the base scores 0% (it never says POS or NEG), so only
    # the majority bar catches it
    ({"heldout_exact_match": 0.46, "base_exact_match": 0.0, "majority_answer": "pos", "majority_exact_match": 0.6,
      "heldout_accept_rate": 1.0, "heldout_reject_rate": 1.0, "steps": 922},
     "no better than always answering 'pos' (60% of its held-out queries have that answer)"),
    ({"heldout_exact_match": 0.72, "base_exact_match": 0.0, "majority_answer": "neg", "majority_exact_match": 0.54,
      "heldout_accept_rate": 1.0, "heldout_reject_rate": 1.0, "steps": 922}, None),
    # open answers: no majority figure, the base is the bar
    ({"heldout_exact_match": 0.44, "base_exact_match": 0.0, "heldout_accept_rate": 1.0, "heldout_reject_rate": 1.0,
      "steps": 1000}, None),
    ({"heldout_exact_match": 0.0, "base_exact_match": 0.0, "majority_answer": "neg", "majority_exact_match": 0.5,
      "heldout_accept_rate": 1.0, "heldout_reject_rate": 1.0, "steps": 6},
     "no better than the base model's 0% on the same queries"),
])
def test_the_quality_gate_names_the_bar_an_expert_did_not_clear(metrics, warned):
    from omegaconf import OmegaConf

    from see.lifecycle import _quality_gate

    lines = []
    _quality_gate("sst2", metrics, OmegaConf.create({"train": {"min_score": None}}), lines.append)
    if warned is None:
        assert lines == []
    else:
        [line] = lines
        assert line.startswith("warning: expert 'sst2' did not learn") and warned in line, line


@pytest.mark.parametrize("metrics, advice, not_advised", [
    # the user-task suite's add_numbers on the embedded base (seed 1), its recorded metrics: it fits its training
    # answers and its held-out loss climbs, so training longer or faster is not the advice
    ({"heldout_exact_match": 0.0, "base_exact_match": 0.0, "train_loss": 0.0189, "steps": 1000, "lr": 0.003,
      "best_step": 400, "eval_history": [{"step": k * 100, "heldout_loss": v} for k, v in enumerate(
          [1.3156, 0.9194, 0.875, 0.9178, 1.0462, 1.1181, 1.3275, 1.5538, 1.6991, 1.7514], start=1)]},
     "By step 1000 its training loss had fallen to 0.0189, so it reproduced the answers it trained on but not "
     "held-out ones, and its held-out loss rose from 0.88 at step 300 to 1.75 at step 1000 (the weights kept are "
     "step 400's, its best held-out score): it memorised its examples", "Try more steps"),
    # fitted, held-out loss still falling at the end: no trend is claimed
    ({"heldout_exact_match": 0.3, "base_exact_match": 0.0, "majority_answer": "a", "majority_exact_match": 0.4,
      "train_loss": 0.05, "steps": 1000, "eval_history": [{"step": 500, "heldout_loss": 0.9},
                                                          {"step": 1000, "heldout_loss": 0.8}]},
     "so it reproduced the answers it trained on but not held-out ones: it memorised", "held-out loss rose"),
    # a rise of a few percent is noise, not a trend to report
    ({"heldout_exact_match": 0.0, "base_exact_match": 0.0, "train_loss": 0.05, "steps": 1000,
      "eval_history": [{"step": 500, "heldout_loss": 0.80}, {"step": 1000, "heldout_loss": 0.82}]},
     "it memorised", "held-out loss rose"),
    # synthetic: an expert that never fitted its training answers (loss as count_vowels' at twice the rate)
    ({"heldout_exact_match": 0.0, "base_exact_match": 0.0, "train_loss": 0.619, "steps": 1000, "lr": 0.006},
     "Try more steps (train.min_steps=N or train.epochs=N), a higher train.lr (it trained at 0.006)", "memorised"),
    # answers fine, acceptance poor: a low loss says nothing about routing, so training more is still the advice
    ({"heldout_exact_match": 0.9, "base_exact_match": 0.0, "train_loss": 0.01, "heldout_accept_rate": 0.5,
      "steps": 1000}, "Try more steps", "memorised"),
])
def test_the_quality_gate_does_not_advise_more_training_to_an_expert_that_memorised(metrics, advice, not_advised):
    from omegaconf import OmegaConf

    from see.lifecycle import _quality_gate

    lines = []
    _quality_gate("add_numbers", metrics, OmegaConf.create({"train": {"min_score": None}}), lines.append)
    [line] = lines
    assert advice in line and not_advised not in line, line


def test_earlier_tasks_taken_counts_the_unseen_kept_queries_at_the_routing_threshold(tiny_llama, monkeypatch):
    from see.prompt import format_prompt
    from see.routing import calibration
    from test_training import _prompt, _setup

    model, tok, pos, neg = _setup(tiny_llama)
    prompt, indicator = _prompt(model, tok, pos, neg)
    p = {format_prompt(x, i, prompt.template): s for i, x, s in [
        (None, "add 1 2", 0.99), (None, "add 3 4", 0.9), (None, "add 5 6", 0.3), (None, "add 7 8", 0.05),
        ("Reverse it.", "reverse ab", 0.7)]}

    def scores(model, prompt_, texts, pos_id, batch_size=32):  # looked up by the whole prompt text
        got = [p[t] for t in texts]
        return got, [s > 0.5 for s in got]

    monkeypatch.setattr(calibration, "active_adapter_scores", scores)
    kept = {"add": [(None, "add 1 2"), (None, "add 3 4"), (None, "add 5 6"), (None, "add 7 8")],
            "reverse": [("Reverse it.", "reverse ab")]}
    trained_on = {(None, "add 1 2"), ("Reverse it.", "reverse ab")}
    taken = lambda threshold: calibration.earlier_tasks_taken(model, prompt, indicator.pos_id, kept,  # noqa: E731
                                                              trained_on, threshold)
    # "add 1 2" was a training negative: left out; the reverse task's one kept query was too, so it is all there is
    assert taken(0.5) == {"add": {"accepted": round(1 / 3, 4), "queries": 3, "all_trained_on": False},
                          "reverse": {"accepted": 1.0, "queries": 1, "all_trained_on": True}}
    assert taken(0.2)["add"]["accepted"] == round(2 / 3, 4) and taken(0.95)["reverse"]["accepted"] == 0.0
    assert taken(None)["add"]["accepted"] == round(1 / 3, 4)  # argmax


@pytest.mark.parametrize("taken, named", [
    ({"add_numbers": {"accepted": 0.38, "queries": 70}, "count_vowels": {"accepted": 0.1, "queries": 70}},
     "'add_numbers' 38%"),
    ({"add_numbers": {"accepted": 0.4, "queries": 70}, "even_odd": {"accepted": 0.2, "queries": 70}},
     "'add_numbers' 40%, 'even_odd' 20%"),
    ({"add_numbers": {"accepted": 0.1, "queries": 70}}, None),  # one or two by chance: not a warning
])
def test_the_quality_gate_names_the_earlier_tasks_a_new_expert_takes(taken, named):
    from omegaconf import OmegaConf

    from see.lifecycle import _quality_gate

    lines = []
    metrics = {"heldout_exact_match": 0.9, "base_exact_match": 0.0, "heldout_accept_rate": 1.0,
               "heldout_reject_rate": 1.0, "steps": 1000, "earlier_tasks_taken": taken}
    cfg = OmegaConf.create({"train": {"min_score": None}, "reconstruction": {"min_negatives_per_task": 30}})
    _quality_gate("subtract_numbers", metrics, cfg, lines.append)
    if named is None:
        assert lines == []
    else:
        [line] = lines
        assert line.startswith("warning: expert 'subtract_numbers' accepts queries of earlier tasks (" + named + " ")
        assert "count_vowels" not in line and "min_negatives_per_task" in line


@pytest.mark.parametrize("after, em_lost, outcome", [
    (0.2, 0.0, "kept"),  # gives back 30% of the held-back half for nothing
    (0.2, 0.2, "kept"),  # 30% back for 20% of its own held-out answers
    (0.4, 0.2, "undone"),  # 10% back for 20%
    (0.6, 0.0, "undone"),  # takes more
    (None, 0.0, "failed"),  # the loss diverges during the repair
    (None, 0.0, "off"),  # train.repair_steps=0
])
def test_an_expert_that_takes_an_earlier_tasks_queries_trains_more_on_half_of_them(tiny_llama, tmp_path, monkeypatch,
                                                                                     after, em_lost, outcome):
    """The repair trains on half of the taken task's unseen kept queries (never its own held-out ones) and is
    judged on the other half against what it costs the expert's own held-out figures; a repair that does not
    pay, or fails, is undone, weight for weight, and the expert is added as it was."""
    import torch

    import see.lifecycle as lifecycle
    from see.data import load_task
    from see.errors import TrainingError
    from see.routing import calibration
    from see.store import read_jsonl

    real_taken, real_train, real_until = (calibration.earlier_tasks_taken, lifecycle.train_expert,
                                          lifecycle._train_until_not_collapsed)
    real_evaluate = calibration.evaluate_heldout
    calls, trained, first = [], [], []

    def taken(model, prompt, pos_id, kept, trained_on, threshold):
        out = real_taken(model, prompt, pos_id, kept, trained_on, threshold)
        calls.append({k: [q for q in v if q not in trained_on] for k, v in kept.items()})
        if len(calls) in (2, 3):  # on the held-back half: before the repair, after it
            out = {k: {**v, "accepted": 0.5 if len(calls) == 2 else after} for k, v in out.items()}
        return out

    def evaluate(model, *args, **kwargs):
        figures = real_evaluate(model, *args, **kwargs)
        own = 0.5 if kwargs.get("zero_shot") else 0.5 - em_lost  # the end of training; after the repair
        figures.update(heldout_exact_match=own, heldout_accept_rate=1.0, heldout_accept_rate_at_threshold=1.0)
        return figures

    def train_expert(model, prompt, indicator, examples, **kwargs):
        trained.append((list(examples), kwargs["train"]))
        if outcome == "failed" and len(trained) == 3:
            raise TrainingError("training diverged: the loss became nan at step 2", field="train.lr")
        return real_train(model, prompt, indicator, examples, **kwargs)

    def until(*args, **kwargs):
        peft_model, result = real_until(*args, **kwargs)
        first.append({n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad})
        return peft_model, result

    monkeypatch.setattr(calibration, "evaluate_heldout", evaluate)
    monkeypatch.setattr(calibration, "earlier_tasks_taken", taken)
    monkeypatch.setattr(lifecycle, "train_expert", train_expert)
    monkeypatch.setattr(lifecycle, "_train_until_not_collapsed", until)
    monkeypatch.setattr(lifecycle, "MAX_TAKEN", -1.0)  # whatever the tiny expert does, it counts as taking
    path, lines = tmp_path / "ens", []
    lifecycle.init_ensemble(path, base=str(tiny_llama), log=lambda m: None)
    steps = 0 if outcome == "off" else 3
    for name in ("antonym", "sentiment"):
        lifecycle.add_expert(path, name, load_task(family_jsonl(tmp_path / f"{name}.jsonl", name, 40)),
                             overrides=[*FAST, f"train.repair_steps={steps}", "train.restarts=0"], progress=False,
                             log=lines.append)
    experts = json.loads((path / "manifest.json").read_text())["experts"]
    assert "repair" not in experts[0]["metrics"]  # the first expert has no earlier task to take
    if outcome == "off":
        assert "repair" not in experts[1]["metrics"] and len(trained) == 2 and len(calls) == 1
        return
    repair = experts[1]["metrics"]["repair"]
    unseen = list(dict.fromkeys(calls[0]["antonym"]))  # antonym's kept queries the expert did not train on, once
    held_out = {(r["instruction"], r["input"]) for r in read_jsonl(path / "experts" / "sentiment" / "heldout.jsonl")}
    repair_examples, settings = trained[2]
    assert repair_examples[:len(trained[1][0])] == trained[1][0]  # what the expert trained on, then the half
    added = [(e.instruction, e.input) for e in repair_examples[len(trained[1][0]):]]
    assert all(e.kind == "neg" for e in repair_examples[len(trained[1][0]):])
    assert len(added) == len(unseen) // 2 == repair["negatives_added"] and not set(added) & held_out
    assert settings.max_steps == 3 and settings.negative_share is None and settings.patience == 0
    stored = lifecycle.Ensemble.load(path).model
    weights = {n: p for n, p in stored.named_parameters() if ".sentiment" in n}
    before = {n.replace(".default", ".sentiment"): w for n, w in first[1].items()}
    assert weights.keys() == before.keys() and any("token" in n for n in weights)  # LoRA and indicator rows
    same = all(torch.equal(weights[n], before[n]) for n in weights)
    listing = run_see("list", path)
    assert listing.returncode == 0
    if outcome == "failed":
        assert repair["kept"] is False and "nan" in repair["failed"] and same
        assert any("more steps failed" in line for line in lines)
        assert "3 more steps against antonym failed (training diverged" in listing.stdout, listing.stdout
        return
    held_back = calls[1]["antonym"]
    assert sorted(held_back + added, key=str) == sorted(unseen, key=str)  # the two halves split them
    assert repair["taken_before"] == {"antonym": 0.5} and repair["taken_after"] == {"antonym": after}
    kept = outcome == "kept"
    assert repair["kept"] is kept and repair["steps"] == 3 and same is not kept
    assert repair["heldout_exact_match_before"] == 0.5 and repair["heldout_exact_match_after"] == 0.5 - em_lost
    assert experts[1]["metrics"]["heldout_exact_match"] == (0.5 - em_lost if kept else 0.5)
    assert experts[1]["threshold"] == repair["threshold_after" if kept else "threshold_before"]
    assert any("training it 3 steps more" in line for line in lines)
    # kept: the stored measure leaves out the queries the repair trained on
    stored_taken = experts[1]["metrics"]["earlier_tasks_taken"]["antonym"]
    assert stored_taken["queries"] == len([q for q in calls[0]["antonym"] if q not in added] if kept
                                          else calls[0]["antonym"])
    assert (f"3 more steps against antonym (50% -> {100 * after:.0f}% of the held-back half): "
            + ("kept" if kept else "not kept")) in listing.stdout, listing.stdout


@pytest.mark.parametrize("repair, said", [
    ({"tasks": ["add_numbers"], "steps": 200, "kept": True}, "were kept; the shares are after them."),
    ({"tasks": ["add_numbers"], "steps": 200, "kept": False}, "gave back less than they cost and were undone."),
    ({"tasks": ["add_numbers"], "steps": 200, "kept": False, "failed": "training diverged"},
     "failed and were undone."),
])
def test_the_warning_says_what_the_repair_did(repair, said):
    from omegaconf import OmegaConf

    from see.lifecycle import _quality_gate

    lines = []
    metrics = {"heldout_exact_match": 0.9, "base_exact_match": 0.0, "steps": 1000, "repair": repair,
               "earlier_tasks_taken": {"add_numbers": {"accepted": 0.25, "queries": 38}}}
    cfg = OmegaConf.create({"train": {"min_score": None}, "reconstruction": {"min_negatives_per_task": 30}})
    _quality_gate("subtract_numbers", metrics, cfg, lines.append)
    [line] = lines
    assert f"so it will answer that share of theirs. 200 more steps against 'add_numbers' (train.repair_steps) {said} " \
           "Give it more" in line


def _yes_no_task(path, n=60):
    """A closed answer set: an untrained expert's answers are no better than always giving the commonest one."""
    from conftest import write_jsonl

    return write_jsonl(path, [{"input": f"is {i} an even number", "output": "yes" if i % 2 == 0 else "no"}
                              for i in range(n)])


@pytest.mark.parametrize("restarts, seeds", [(1, [0, 1000]), (2, [0, 1000, 2000]), (0, None)])
def test_collapsed_answers_train_the_expert_again_with_another_seed(tiny_llama, tmp_path, restarts, seeds):
    path = tmp_path / "ens"
    assert run_see("init", path, "--base", tiny_llama).returncode == 0
    r = run_see("add-expert", path, "--name", "parity", "--data", _yes_no_task(tmp_path / "p.jsonl"),
                "--no-progress", *FAST, f"train.restarts={restarts}")
    assert r.returncode == 0, r.stderr
    [expert] = json.loads((path / "manifest.json").read_text())["experts"]
    m = expert["metrics"]
    if seeds is None:
        assert "attempts" not in m and "training it again" not in r.stderr
        assert "times, seed" not in run_see("list", path).stdout
        return
    # 6 steps on a random base learn nothing: every attempt collapses, and all of them are made
    assert [a["seed"] for a in m["attempts"]] == seeds and all(a["answers_collapsed"] for a in m["attempts"])
    # a restart is not a second draw of the same odds: its answers weigh as in a plain LoRA
    assert [a["loss_weighting"] for a in m["attempts"]] == ["tokens"] + ["balanced"] * restarts
    assert "and train.loss_weighting=balanced (restart 1 of" in r.stderr
    assert r.stderr.count("training it again from the start") == restarts
    best = max(m["attempts"], key=lambda a: a["heldout_score"])
    assert m["kept_seed"] == best["seed"] and m["heldout_score"] == best["heldout_score"]
    assert expert["config"]["train"]["seed"] == 0  # the data split and rehearsal sample stay the run's own
    assert "did not learn" in r.stderr  # the gate still speaks about the kept attempt
    listing = run_see("list", path)
    assert listing.returncode == 0
    assert f"trained {restarts + 1} times, seed {best['seed']} kept: seed 0 EM" in listing.stdout, listing.stdout
    assert ", seed 1000 (balanced loss) EM" in listing.stdout, listing.stdout
    assert "(no better than the commonest answer)" in listing.stdout


def test_the_kept_attempt_is_the_better_one_even_when_it_came_first(tiny_llama, tmp_path, monkeypatch):
    """The first attempt scores higher on held-out: its weights, not the last attempt's, are the expert."""
    import torch

    import see.lifecycle as lifecycle
    from see.data import load_task
    from see.routing import calibration

    real_evaluate, real_train = calibration.evaluate_heldout, lifecycle.train_expert
    trained, returned = [], []

    def evaluate(model, *args, **kwargs):
        figures = real_evaluate(model, *args, **kwargs)
        if kwargs.get("zero_shot"):  # the end-of-training evaluation that chooses the attempt
            figures.update(heldout_exact_match=0.0, heldout_score=0.9 if len(trained) == 1 else 0.1)
        return figures

    def train_expert(*args, **kwargs):
        peft_model, result = real_train(*args, **kwargs)
        trained.append({n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad})
        return peft_model, result

    def until(*args, **kwargs):
        peft_model, result = real_until(*args, **kwargs)
        returned.append({n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad})
        return peft_model, result

    real_until = lifecycle._train_until_not_collapsed
    monkeypatch.setattr(calibration, "evaluate_heldout", evaluate)
    monkeypatch.setattr(lifecycle, "train_expert", train_expert)
    monkeypatch.setattr(lifecycle, "_train_until_not_collapsed", until)
    path = tmp_path / "ens"
    lifecycle.init_ensemble(path, base=str(tiny_llama), log=lambda m: None)
    rec = lifecycle.add_expert(path, "parity", load_task(_yes_no_task(tmp_path / "p.jsonl")), overrides=FAST,
                               progress=False, log=lambda m: None)
    assert len(trained) == 2 and rec.metrics["kept_seed"] == 0 and rec.metrics["heldout_score"] == 0.9
    [kept] = returned
    assert kept.keys() == trained[0].keys()
    assert all(torch.equal(kept[n], trained[0][n]) for n in kept)
    assert not all(torch.equal(kept[n], trained[1][n]) for n in kept)  # the two attempts differ


def test_a_restart_that_diverges_leaves_the_first_attempt_standing(tiny_llama, tmp_path, monkeypatch):
    import torch

    import see.lifecycle as lifecycle
    from see.data import load_task
    from see.errors import TrainingError

    real_train, trained, lines = lifecycle.train_expert, [], []

    def train_expert(*args, **kwargs):
        if trained:
            raise TrainingError("training diverged: the loss became nan at step 3", field="train.lr")
        peft_model, result = real_train(*args, **kwargs)
        trained.append({n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad})
        return peft_model, result

    monkeypatch.setattr(lifecycle, "train_expert", train_expert)
    path = tmp_path / "ens"
    lifecycle.init_ensemble(path, base=str(tiny_llama), log=lambda m: None)
    rec = lifecycle.add_expert(path, "parity", load_task(_yes_no_task(tmp_path / "p.jsonl")), overrides=FAST,
                               progress=False, log=lines.append)
    assert rec.metrics["kept_seed"] == 0 and rec.metrics["attempts"][1] == {
        "seed": 1000, "loss_weighting": "balanced", "failed": "training diverged: the loss became nan at step 3"}
    assert any("restart 1 (seed 1000) failed" in line for line in lines)
    # the saved adapter is the first attempt's weights, put into a fresh adapter on a fresh base
    from safetensors.torch import load_file

    saved = load_file(path / rec.path / "adapter_model.safetensors")
    lora = {n.replace(".default", ""): w for n, w in trained[0].items() if "lora_" in n}
    assert lora and all(torch.equal(saved[n], w) for n, w in lora.items())


@pytest.mark.parametrize("resume_overrides, retrained", [
    ([], [1000]),
    (["train.restarts=0"], []),  # the user gives up the restart: attempt 0, read back, becomes the expert
])
def test_resuming_during_a_restart_does_not_train_the_finished_attempt_again(tiny_llama, tmp_path, monkeypatch,
                                                                            resume_overrides, retrained):
    """Interrupted in restart 1: --resume takes attempt 0's saved figures and weights and trains only the restart;
    with other settings it refuses, naming the saved attempt's file."""
    import torch

    import see.lifecycle as lifecycle
    from see.data import load_task
    from see.errors import ConfigError
    from see.routing import calibration

    real_train, seeds, trained = lifecycle.train_expert, [], []

    def interrupted(*args, **kwargs):
        seeds.append(int(kwargs["train"].seed))
        if len(seeds) == 2:
            raise KeyboardInterrupt  # the user stops the run during the restart
        peft_model, result = real_train(*args, **kwargs)
        trained.append({n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad})
        return peft_model, result

    def evaluate(model, *args, **kwargs):  # attempt 0 collapses but scores higher, so its saved weights are kept
        figures = real_evaluate(model, *args, **kwargs)
        if kwargs.get("zero_shot"):
            figures.update(heldout_exact_match=0.0, heldout_score=0.9 if seeds[-1] == 0 else 0.1)
        return figures

    real_evaluate = calibration.evaluate_heldout
    monkeypatch.setattr(calibration, "evaluate_heldout", evaluate)
    monkeypatch.setattr(lifecycle, "train_expert", interrupted)
    path = tmp_path / "ens"
    task = load_task(_yes_no_task(tmp_path / "p.jsonl"))
    lifecycle.init_ensemble(path, base=str(tiny_llama), log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.add_expert(path, "parity", task, overrides=FAST, progress=False, log=lambda m: None)
    assert seeds == [0, 1000]
    saved = path / ".staging" / "parity" / "checkpoint" / "attempt-0.pt"
    assert saved.is_file() and lifecycle._has_checkpoint(saved.parent.parent)

    with pytest.raises(ConfigError, match="finished attempt was made with other settings.*train.lr") as err:
        lifecycle.add_expert(path, "parity", task, overrides=[*FAST, "train.lr=0.01"], resume=True, progress=False,
                             log=lambda m: None)
    assert str(saved) in str(err.value)

    seeds.clear()
    monkeypatch.setattr(lifecycle, "train_expert", interrupted)  # seeds is empty again: nothing interrupts now
    lines = []
    rec = lifecycle.add_expert(path, "parity", task, overrides=[*FAST, *resume_overrides], resume=True,
                               progress=False, log=lines.append)
    assert seeds == retrained  # attempt 0 is not trained again
    assert any("seed 0 finished before the interruption" in line for line in lines)
    assert not saved.exists()  # the staging folder, checkpoints included, goes once the expert is committed
    assert [a["seed"] for a in rec.metrics["attempts"]] == [0, *retrained]
    from safetensors.torch import load_file

    assert rec.metrics["kept_seed"] == 0 and rec.metrics["heldout_score"] == 0.9
    kept = trained[0]  # put back from the saved file into the restart's model, or into a fresh adapter
    if retrained:
        assert not all(torch.equal(kept[n], trained[1][n]) for n in kept)
    adapter = load_file(path / rec.path / "adapter_model.safetensors")
    lora = {n.replace(".default", ""): w for n, w in kept.items() if "lora_" in n}
    assert lora and all(torch.equal(adapter[n], w) for n, w in lora.items())


@pytest.mark.parametrize("files, resumable", [
    ([], False), (["checkpoint/other.txt"], False), (["checkpoint/state.pt"], True),
    (["checkpoint/restart-1/state.pt"], True),  # the first attempt stopped before its first checkpoint
    (["checkpoint/attempt-0.pt"], True),  # the first attempt finished; its restart had no checkpoint yet
])
def test_a_restarts_checkpoint_counts_as_something_to_resume(tmp_path, files, resumable):
    from see.lifecycle import _has_checkpoint

    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"")
    assert _has_checkpoint(tmp_path) is resumable


@pytest.mark.parametrize("setting, metrics, skipped", [
    (True, {"heldout_exact_match": 1.0}, None),
    (False, {"heldout_exact_match": 0.5, "base_exact_match": 0.0}, "off"),
    ("auto", {"heldout_exact_match": 0.5, "base_exact_match": 0.0}, None),
    ("auto", {"heldout_exact_match": 0.5}, None),  # no base figure: learned as far as anyone can tell
    ("auto", {"heldout_exact_match": 1.0, "base_exact_match": 0.0}, "every held-out answer is right already"),
    ("auto", {"heldout_exact_match": 0.1, "base_exact_match": 0.1}, "the first training did not learn the task"),
    ("auto", {"heldout_exact_match": 0.6, "base_exact_match": 0.0, "majority_exact_match": 0.6},
     "the first training did not learn the task"),  # one label for every query
    ("auto", {"heldout_exact_match": 0.7, "base_exact_match": 0.0, "majority_exact_match": 0.6}, None),
    ("auto", {}, "no held-out exact match"),
])
def test_refit_auto_trains_again_only_where_it_can_help(setting, metrics, skipped):
    from see.lifecycle import refit_skipped
    assert refit_skipped(setting, metrics) == skipped


@pytest.mark.parametrize("outcome", ["kept", "undone", "failed", "off", "auto-skipped", "repair-replayed",
                                     "early-stopped"])
def test_refit_trains_again_on_the_held_out_positives_and_keeps_the_first_figures(tiny_llama, tmp_path, monkeypatch,
                                                                                   outcome):
    """``train.refit``: a second training from the start on the training examples plus the held-out positives
    (never the held-out negatives), for the first training's step count, with a kept repair's extra steps
    replayed; the held-out figures stay the first training's, a kept refit routes at the first threshold with
    the room once more, and the first weights and threshold come back when the refit rejects more than one
    held-out negative fewer, or fails."""
    import torch
    from safetensors.torch import load_file

    import see.lifecycle as lifecycle
    from see.data import load_task
    from see.errors import TrainingError
    from see.experts.reconstruction import TrainingExample
    from see.experts.reconstruction import NEAR_MISS
    from see.routing import calibration
    from see.store import read_jsonl

    real_train, real_rejected, real_until, real_bounding = (
        lifecycle.train_expert, calibration.heldout_negatives_rejected, lifecycle._train_until_not_collapsed,
        calibration.bounding_negative_scores)
    trained, first, rejected, lines, stops, bounding = [], [], [], [], [], []

    def train_expert(model, prompt, indicator, examples, **kwargs):
        trained.append((list(examples), kwargs["train"], kwargs.get("peft_model") is not None))
        stops.append(kwargs.get("stop_at"))
        if outcome == "failed" and len(trained) == 2:
            raise TrainingError("training diverged: the loss became nan at step 2", field="train.lr")
        return real_train(model, prompt, indicator, examples, **kwargs)

    def negatives_rejected(model, prompt, indicator, examples, threshold, **kwargs):
        real = real_rejected(model, prompt, indicator, examples, threshold, **kwargs)
        rejected.append((threshold, real))
        n = sum(ex.kind == "neg" for ex in examples)
        if outcome == "undone":  # the refit rejects two held-out negatives fewer
            return 1.0 if len(rejected) == 1 else 1.0 - 2 / n
        return 1.0 if len(rejected) == 1 else 1.0 - 1 / n  # one fewer: within what the refit may give up

    def bounding_negative_scores(model, prompt, indicator, examples, **kwargs):
        scores = real_bounding(model, prompt, indicator, examples, **kwargs)
        n = sum(ex.kind == "neg" and ex.origin != NEAR_MISS for ex in examples)
        assert len(scores) == n and n < sum(ex.kind == "neg" for ex in examples)  # near misses apart
        bounding.append(scores)
        return scores

    def until(*args, **kwargs):
        peft_model, result = real_until(*args, **kwargs)
        first.append({n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad})
        return peft_model, result

    extra = [TrainingExample(None, f"an extra negative {k}", "neg", None, "rehearsal:x") for k in range(3)]
    monkeypatch.setattr(lifecycle, "train_expert", train_expert)
    monkeypatch.setattr(calibration, "heldout_negatives_rejected", negatives_rejected)
    monkeypatch.setattr(calibration, "bounding_negative_scores", bounding_negative_scores)
    monkeypatch.setattr(lifecycle, "_train_until_not_collapsed", until)
    monkeypatch.setattr(lifecycle, "_repair_taken", lambda *a, **k: list(extra))
    path = tmp_path / "ens"
    lifecycle.init_ensemble(path, base=str(tiny_llama), log=lambda m: None)
    overrides = [*FAST, "train.restarts=0", "train.repair_steps=2"] + {"off": ["train.refit=false"],
                                                                      "auto-skipped": ["train.refit=auto"]}.get(outcome,
                                                                                              ["train.refit=true"])
    if outcome == "early-stopped":
        overrides += ["train.eval_every=2", "train.patience=1"]
    # an earlier expert, so that the new one has rehearsal and the (stubbed) repair runs
    lifecycle.add_expert(path, "antonym", load_task(family_jsonl(tmp_path / "a.jsonl", "antonym", 40)),
                         overrides=[*FAST, "train.restarts=0"], progress=False, log=lambda m: None)
    trained.clear(), first.clear(), rejected.clear(), stops.clear()
    if outcome != "repair-replayed":
        monkeypatch.setattr(lifecycle, "_repair_taken", lambda *a, **k: [])
    if outcome == "auto-skipped":  # an expert that learned nothing, whatever six steps happen to answer
        real_evaluate = calibration.evaluate_heldout

        def evaluate(*args, **kwargs):
            figures = real_evaluate(*args, **kwargs)
            return {**figures, "heldout_exact_match": 0.0} if "heldout_exact_match" in figures else figures

        monkeypatch.setattr(calibration, "evaluate_heldout", evaluate)
    rec = lifecycle.add_expert(path, "sentiment", load_task(family_jsonl(tmp_path / "s.jsonl", "sentiment", 40)),
                               overrides=overrides, progress=False, log=lines.append)
    saved = load_file(path / rec.path / "adapter_model.safetensors")
    first_lora = {n.replace(".default", ""): w for n, w in first[0].items() if "lora_" in n}
    assert first_lora and first_lora.keys() <= saved.keys()
    same = all(torch.equal(saved[n], w) for n, w in first_lora.items())
    if outcome == "off":
        assert len(trained) == 1 and "refit" not in rec.metrics and "refit_skipped" not in rec.metrics and same
        return
    if outcome == "auto-skipped":  # no better than the base: `auto` does not spend a second training on that
        assert rec.metrics["heldout_exact_match"] <= rec.metrics["base_exact_match"], rec.metrics
        assert len(trained) == 1 and "refit" not in rec.metrics and same
        assert rec.metrics["refit_skipped"] == "the first training did not learn the task"
        assert any("not trained again on its held-out positives (the first training did not learn the task; "
                   "train.refit=auto)" in line for line in lines), lines
        listing = run_see("list", path)
        assert ("not trained again with its held-out positives (train.refit): the first training did not learn "
                "the task") in listing.stdout, listing.stdout
        return
    held_out = [ex for ex in read_jsonl(path / rec.path / "heldout.jsonl")]
    positives = [(r["instruction"], r["input"]) for r in held_out if r["kind"] == "pos"]
    first_examples, first_settings, _ = trained[0]
    refit_examples, refit_settings, continued = trained[1]
    stop_at = stops[1]
    assert refit_examples[:len(first_examples)] == first_examples and not continued
    assert [(e.instruction, e.input) for e in refit_examples[len(first_examples):]] == positives and positives
    # the first training's schedule, stopped where early stopping stopped it; else the budget as given
    assert refit_settings.max_steps == 6 and refit_settings.seed == first_settings.seed
    assert stop_at == rec.metrics.get("best_step") and refit_settings.patience == 0
    assert (outcome == "early-stopped") == ("best_step" in rec.metrics)
    refit = rec.metrics["refit"]
    assert refit["examples_added"] == len(positives) and refit.get("steps") in (None, stop_at or 6)
    # the threshold it is judged at, and the figures stored, are the first training's
    measured = 1 if outcome == "failed" else 2  # a failed refit has nothing to measure
    first_threshold = rec.metrics["threshold"]
    assert [t for t, _ in rejected] == [first_threshold] * measured
    kept = outcome not in ("undone", "failed")
    if kept:  # it routes at the first threshold with the room once more, bounded by its own held-out negatives
        assert len(bounding) == 1
        assert rec.threshold == refit["threshold"] == calibration.refit_threshold(first_threshold, bounding[0], 10.0)
    else:
        assert not bounding and rec.threshold == first_threshold and "threshold" not in refit
    listing = run_see("list", path)
    assert listing.returncode == 0
    if outcome == "failed":
        assert refit["kept"] is False and "nan" in refit["failed"] and same
        assert any("the refit failed" in line for line in lines)
        assert "(train.refit): failed (training diverged" in listing.stdout, listing.stdout
        return
    assert refit["kept"] is kept and same is not kept, refit
    after = refit["heldout_negatives_rejected_after"]
    assert refit["heldout_negatives_rejected_before"] == 1.0 and after < 1.0
    assert (f"(train.refit): held-out negatives rejected 100% -> {100 * after:.0f}%, "
            + (f"kept, threshold {first_threshold:.3f} -> {rec.threshold:.3f}" if kept
               else "not kept, first weights kept")) in listing.stdout, listing.stdout
    if outcome == "repair-replayed":
        repair_examples, repair_settings, continued = trained[2]  # the repair itself is stubbed: no call of its own
        assert continued and repair_examples == refit_examples + extra and repair_settings.max_steps == 2
        assert refit["repair_replayed"] is True
    if outcome == "kept":  # `see calibrate` gives a refit expert the room once more too; an older expert, not
        from see.ensemble import Ensemble
        from see.routing.rule import active_adapter_scores

        ens = Ensemble.load(path)
        expected = []
        for k, name in enumerate(["antonym", "sentiment"]):
            ens.model.set_adapter(name)
            pos, neg = calibration.calibration_texts(ens.store, ens.manifest, k)
            plain = calibration.measure(ens.model, ens.prompt, ens.indicator.pos_id, pos, neg, 0.02, 10.0)
            neg_scores = active_adapter_scores(ens.model, ens.prompt, neg, ens.indicator.pos_id)[0]
            expected.append(plain["threshold"] if name == "antonym"
                            else calibration.refit_threshold(plain["threshold"], neg_scores, 10.0))
        del ens
        rows = lifecycle.calibrate(path, log=lambda m: None)
        assert [r["threshold"] for r in rows] == pytest.approx(expected, rel=1e-6)


def test_the_held_out_evaluation_builds_no_autograd_graph(tiny_llama, tmp_path, monkeypatch):
    """Early stopping evaluates the held-out set during training, in grad mode; a held-out loss with a graph
    kept a whole eval batch's activations alive (minilm's add-expert peaked 480 MiB higher)."""
    import torch

    import see.lifecycle as lifecycle
    from see.data import load_task
    from see.routing import calibration

    real, losses = calibration.target_loss, []

    def target_loss(model, batch):
        loss, n = real(model, batch)
        losses.append((torch.is_grad_enabled(), loss.requires_grad))
        return loss, n

    monkeypatch.setattr(calibration, "target_loss", target_loss)
    path = tmp_path / "ens"
    lifecycle.init_ensemble(path, base=str(tiny_llama), log=lambda m: None)
    lifecycle.add_expert(path, "antonym", load_task(family_jsonl(tmp_path / "antonym.jsonl", "antonym", 40)),
                         overrides=[*FAST, "train.eval_every=2"], log=lambda m: None)
    assert losses and all(not grad and not requires for grad, requires in losses), losses
