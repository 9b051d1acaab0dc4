"""Serving: aLoRA experts, micro-batching, calibration, sampling options, and the serving benchmark's plumbing."""
import json

import pytest

from conftest import TINY_TRAIN, run_see
from see.embedded.families import general_negatives, make_task
from see.ensemble import Ensemble
from see.lifecycle import add_expert, init_ensemble
from see.routing.calibration import choose_threshold

TRAIN = TINY_TRAIN + ["train.epochs=8"]


def _queries(family, n=8):
    t = make_task(family, n, split="test")
    return [{"instruction": t.instruction, "input": ex.input} for ex in t.examples]


@pytest.fixture(scope="module")
def alora_ensemble(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("alora")
    negatives = root / "neg.jsonl"
    negatives.write_text("".join(json.dumps({"instruction": i, "input": x}) + "\n" for i, x in general_negatives(120)))
    path = root / "ens"
    init_ensemble(path, base=str(tiny_llama), overrides=["model.expert_kind=alora"], log=lambda m: None)
    for family in ("sentiment", "topic"):
        add_expert(path, family, make_task(family, 200), overrides=TRAIN, negatives=str(negatives), progress=False,
                   log=lambda m: None)
    return path


def test_alora_experts_route_and_answer(alora_ensemble):
    ens = Ensemble.load(alora_ensemble)
    cfg = ens.model.peft_config["topic"]
    assert cfg.alora_invocation_tokens and ens.multilora.invocation_length == len(cfg.alora_invocation_tokens)
    qs = _queries("sentiment") + _queries("topic")
    seq = ens.generate(qs, max_new_tokens=4, mode="sequential")
    bat = ens.generate(qs, max_new_tokens=4, mode="batched")
    assert [(r.answer, r.expert) for r in seq] == [(r.answer, r.expert) for r in bat]
    assert sum(r.expert == "sentiment" for r in bat[:8]) >= 6 and sum(r.expert == "topic" for r in bat[8:]) >= 6
    for s, b in zip(seq, bat):
        for k in s.scores:
            assert s.scores[k] == pytest.approx(b.scores[k], abs=1e-5)


def test_alora_batched_routing_is_one_base_prefill_plus_one_short_forward(alora_ensemble):
    ens = Ensemble.load(alora_ensemble)
    shapes = []
    forward = ens.multilora.base.forward

    def spy(*args, **kwargs):
        shapes.append((tuple(kwargs["input_ids"].shape), kwargs.get("cache") is not None))
        return forward(*args, **kwargs)

    ens.multilora.base.forward = spy
    qs = _queries("topic", 5)
    ens.route(qs)
    k = ens.multilora.invocation_length
    # 1) the 5 queries' prefix, base only; 2) the invocation tokens for 2 experts x 5 queries, over that cache
    assert len(shapes) == 2
    (rows0, width0), cached0 = shapes[0]
    (rows1, width1), cached1 = shapes[1]
    assert rows0 == 5 and not cached0
    assert rows1 == 2 * 5 and width1 == k and cached1


def test_micro_batching_by_rows_gives_identical_results(alora_ensemble, tmp_path):
    import shutil

    from see.store import EnsembleStore

    for kind_path in (alora_ensemble,):
        small = tmp_path / "small"
        shutil.copytree(kind_path, small)
        store = EnsembleStore(small)
        m = store.read()
        m.routing.max_rows_per_forward = 3
        store.write(m)
        qs = _queries("sentiment", 5) + _queries("capital", 3)
        a = Ensemble.load(kind_path).generate(qs, max_new_tokens=3)
        for mode in ("batched", "sequential"):
            b = Ensemble.load(small).generate(qs, max_new_tokens=3, mode=mode)
            assert [(r.answer, r.expert) for r in a] == [(r.answer, r.expert) for r in b]


def test_lora_micro_batching_and_groups(tiny_llama, tmp_path):
    """With more experts than rows per forward, experts go in groups, newest first: same answers."""
    path = tmp_path / "ens"
    init_ensemble(path, base=str(tiny_llama), log=lambda m: None)
    for family in ("sentiment", "topic", "antonym"):
        add_expert(path, family, make_task(family, 40), overrides=["train.max_steps=5", "lora.r=4"],
                   negatives="none", progress=False, log=lambda m: None)
    qs = _queries("sentiment", 4) + _queries("antonym", 4)
    ens = Ensemble.load(path)
    want = ens.generate(qs, max_new_tokens=3, mode="sequential")
    from see.store import EnsembleStore

    for rows in (1, 2, 5):
        store = EnsembleStore(path)
        m = store.read()
        m.routing.max_rows_per_forward = rows
        store.write(m)
        got = Ensemble.load(path).generate(qs, max_new_tokens=3, mode="batched")
        assert [(r.answer, r.expert) for r in got] == [(r.answer, r.expert) for r in want], rows


def test_choose_threshold_by_hand():
    scores = [0.9, 0.5, 0.99, 0.7, 0.95, 0.8, 0.85, 0.6, 0.97, 0.92]
    # sorted: .5 .6 .7 .8 .85 .9 .92 .95 .97 .99 ; 10% may be rejected -> reject only 0.5
    assert choose_threshold(scores, 0.10) == 0.6
    assert choose_threshold(scores, 0.0) == 0.5
    assert choose_threshold(scores, 0.25) == 0.7  # floor(2.5) = 2 rejected
    with pytest.raises(ValueError):
        choose_threshold([], 0.1)
    with pytest.raises(ValueError):
        choose_threshold(scores, 1.0)


def test_calibrate_cli_stores_thresholds_that_generate_uses(alora_ensemble, tmp_path):
    import shutil

    path = tmp_path / "ens"
    shutil.copytree(alora_ensemble, path)
    r = run_see("calibrate", path, "--target-fpr", "0.1", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {row["expert"] for row in rows} == {"sentiment", "topic"}
    for row in rows:
        assert 0.0 <= row["threshold"] <= 1.0
        assert row["accept_own_after"] >= 0.9 - 1e-9  # at most 10% of held-out positives rejected
    manifest = json.loads((path / "manifest.json").read_text())
    stored = {e["name"]: e["threshold"] for e in manifest["experts"]}
    assert stored == {row["expert"]: row["threshold"] for row in rows}
    ens = Ensemble.load(path)
    assert ens.thresholds() == stored
    # a stored threshold of 1.0 sends (almost) everything to the fallback; an explicit threshold overrides it
    from see.store import EnsembleStore

    store = EnsembleStore(path)
    m = store.read()
    for e in m.experts:
        e.threshold = 1.0
    store.write(m)
    ens = Ensemble.load(path)
    decisions = ens.route(_queries("topic", 6))
    assert all(d.expert is None or d.scores[d.expert] >= 1.0 for d in decisions)
    assert all(d.expert == "topic" for d in ens.route(_queries("topic", 6), threshold=0.0))
    assert run_see("calibrate", path, "--target-fpr", "1.5").returncode == 2
    r = run_see("calibrate", path, "--margin-odds", "0.5")
    assert r.returncode == 2 and "--margin-odds" in r.stderr


def test_sampling_options_and_stop_strings(alora_ensemble):
    ens = Ensemble.load(alora_ensemble)
    qs = _queries("capital", 3)  # these reach the fallback, which writes free text
    a = ens.generate(qs, max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    b = ens.generate(qs, max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    assert [r.answer for r in a] == [r.answer for r in b]
    greedy = ens.generate(qs, max_new_tokens=12)
    assert all(r.completion_tokens <= 12 for r in greedy)
    cut = ens.generate(qs, max_new_tokens=12, stop=[" "])
    assert all(" " not in r.answer for r in cut)
    assert all(r.finish_reason in ("stop", "length") for r in cut)


def test_bench_serve_quick_writes_its_report(tmp_path):
    r = run_see("bench-serve", "--quick", "--out", tmp_path / "out", "--work", tmp_path / "work", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {c["kind"] for c in results["cells"]} == {"lora", "alora"}
    for c in results["cells"]:
        assert c["reference"]["latency_per_batch_s"] > 0 and c["ratio_batched"] > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Targets" in report and "see bench-serve --quick" in report
    assert (tmp_path / "out" / "latency.png").stat().st_size > 1000


@pytest.mark.parametrize("pos, neg, margin_odds, odds", [
    # quantile 0.9 (odds 9), highest negative below it 0.5 (odds 1): halfway in log-odds is odds 3, which is
    # closer to the quantile than a factor of 10 below it (odds 0.9), so the negative decides
    ([0.9, 0.99, 0.999], [0.1, 0.5, 0.95], 10.0, 3.0),
    # no room asked for: the quantile itself
    ([0.9, 0.99, 0.999], [0.1, 0.5, 0.95], 1.0, 9.0),
    # easy negatives (odds 1/999 against 999): halfway would be odds 1; the margin keeps it at 999 / 10
    ([0.999], [0.001], 10.0, 99.9),
    # no negatives: 0.5 stands in for one; a confident expert keeps the margin (odds 9999 / 10), a weak one
    # stops halfway to 0.5 (odds 4 -> 2) rather than a factor of 10 below (odds 0.4, under argmax's 0.5)
    ([0.9999], [], 10.0, 999.9),
    ([0.8], [], 10.0, 2.0),
])
def test_auto_threshold_by_hand(pos, neg, margin_odds, odds):
    from see.routing.calibration import auto_threshold

    assert auto_threshold(pos, neg, 0.0, margin_odds) == pytest.approx(odds / (1 + odds))


@pytest.mark.parametrize("threshold, neg, margin_odds, odds", [
    # the first threshold at odds 999 (0.999), the refit's negatives far below: the room once more, odds 99.9
    (0.999, [0.001, 0.01], 10.0, 99.9),
    # a refit negative at odds 9 (0.9): halfway in log-odds, odds sqrt(999 * 9) = 94.8, is below the margin's
    # 99.9, so the margin decides
    (0.999, [0.9], 10.0, 99.9),
    # a refit negative at odds 99 (0.99): halfway, odds sqrt(999 * 99) = 314.5, is closer than 99.9
    (0.999, [0.99], 10.0, (999 * 99) ** 0.5),
    # a negative the refit accepts at the first threshold (odds 9999) does not bound it
    (0.999, [0.9999], 10.0, 99.9),
    # no room asked for: the first threshold
    (0.999, [0.001], 1.0, 999.0),
])
def test_refit_threshold_by_hand(threshold, neg, margin_odds, odds):
    from see.routing.calibration import refit_threshold

    assert refit_threshold(threshold, neg, margin_odds) == pytest.approx(odds / (1 + odds))


def test_auto_threshold_refuses_a_margin_below_one():
    from see.routing.calibration import auto_threshold

    with pytest.raises(ValueError, match="margin_odds"):
        auto_threshold([0.9], [], 0.0, 0.5)
