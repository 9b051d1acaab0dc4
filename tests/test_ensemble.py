"""A two-expert ensemble trained end to end on a tiny model, then served."""
import json
import threading
from collections import Counter

import pytest
import torch

from conftest import TINY_TRAIN, tree_hash
from see.embedded.families import FAMILIES, general_negatives, make_task
from see.ensemble import Ensemble
from see.lifecycle import add_expert, init_ensemble
from see.errors import DataError, StoreError
from see.store import EnsembleStore

# Near misses (default 0.5) cost this randomly initialised two-layer model answer accuracy (5 of 12 sentiment
# answers right instead of 6 or more); what this module tests is storing, routing and serving. Near misses are
# tested in test_reconstruction.py and test_training.py and measured in benchmarks/user-tasks.
TRAIN = TINY_TRAIN + ["train.epochs=12", "reconstruction.near_miss_ratio=0"]


def _queries(family, n=24, split="test"):
    t = make_task(family, n, split=split)
    return [{"instruction": t.instruction, "input": ex.input} for ex in t.examples], t


@pytest.fixture(scope="module")
def two_experts(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    negatives = root / "negatives.jsonl"
    negatives.write_text("".join(json.dumps({"instruction": i, "input": x}) + "\n"
                                 for i, x in general_negatives(120, seed=5)))
    path = root / "ensemble"
    init_ensemble(path, base=str(tiny_llama), log=lambda m: None)
    for family in ("sentiment", "topic"):
        add_expert(path, family, make_task(family, 200), overrides=TRAIN, negatives=str(negatives), progress=False,
                   log=lambda m: None)
    return path


@pytest.fixture(scope="module")
def ens(two_experts):
    return Ensemble.load(two_experts)


def test_store_layout_and_manifest(two_experts):
    m = json.loads((two_experts / "manifest.json").read_text())
    assert m["format_version"] == 1 and [e["name"] for e in m["experts"]] == ["sentiment", "topic"]
    assert m["base"]["fingerprint"] and m["indicator"]["pos"] == "<<pos>>"
    for e in m["experts"]:
        folder = two_experts / e["path"]
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        assert len((folder / "rehearsal.jsonl").read_text().splitlines()) == 100
        assert e["data"]["sha256"] and e["config"]["lora"]["r"] == 8
        assert e["metrics"]["steps"] > 0 and "heldout_accept_rate" in e["metrics"]
    topic = m["experts"][1]["metrics"]["reconstruction"]
    # 0.2 x 200 rehearsal negatives (above the floor of 30); the whole 120-query pool, fewer than the 200 asked
    assert topic["topic"] == 200 and topic["rehearsal:sentiment"] == 40 and topic["general"] == 120
    # what the newer expert takes of the older task's routing, on sentiment's kept queries it did not train on:
    # 100 kept, of which the 40 negatives above minus those held out were trained on
    assert "earlier_tasks_taken" not in m["experts"][0]["metrics"]
    taken = m["experts"][1]["metrics"]["earlier_tasks_taken"]
    assert set(taken) == {"sentiment"} and 60 <= taken["sentiment"]["queries"] < 100
    assert taken["sentiment"]["accepted"] <= 0.1 and not taken["sentiment"]["all_trained_on"]
    assert (two_experts / "tokenizer" / "tokenizer.json").is_file()
    assert not (two_experts / ".staging").exists() or not any((two_experts / ".staging").iterdir())


def test_each_expert_accepts_its_own_task_and_rejects_the_other(ens):
    from see.routing.rule import active_adapter_scores, expert_thresholds

    # Decided at each expert's own threshold, the rule the ensemble serves with. The first expert never saw a
    # topic query (its negatives are the general pool), and on this random two-layer model its P(<<pos>>) for
    # them sits at 0.1-0.7: under argmax the outcome changed with the machine (14 of 24 accepted on one, within
    # the 10% bound on the one before); its threshold (~0.92, from its held-out set) rejects them all.
    thresholds = expert_thresholds(ens.manifest)
    for expert, own, other in (("sentiment", "sentiment", "topic"), ("topic", "topic", "sentiment")):
        ens.model.set_adapter(expert)
        own_q, _ = _queries(own)
        other_q, _ = _queries(other)
        assert thresholds[expert] is not None and 0.5 < thresholds[expert] < 1
        p_own, _ = active_adapter_scores(ens.model, ens.prompt, [ens.prompt_for(q) for q in own_q],
                                         ens.indicator.pos_id)
        p_other, _ = active_adapter_scores(ens.model, ens.prompt, [ens.prompt_for(q) for q in other_q],
                                           ens.indicator.pos_id)
        acc_own = [p >= thresholds[expert] for p in p_own]
        acc_other = [p >= thresholds[expert] for p in p_other]
        assert sum(acc_own) >= 0.9 * len(acc_own), (expert, acc_own)
        assert sum(acc_other) <= 0.1 * len(acc_other), (expert, acc_other)


def test_routing_newest_first_and_fallback(ens):
    for family in ("sentiment", "topic"):
        q, _ = _queries(family)
        decisions = ens.route(q)
        assert Counter(d.expert for d in decisions)[family] >= 0.9 * len(q)
        # newest first: the topic expert is always consulted; the sentiment expert only after it rejects
        assert all("topic" in d.scores for d in decisions)
        assert all(("sentiment" in d.scores) == (d.expert != "topic") for d in decisions)
    # an unrelated query (a family the experts learned to reject) reaches the fallback
    unrelated, _ = _queries("capital")
    results = ens.generate(unrelated[:6], max_new_tokens=4)
    assert all(r.expert is None for r in results)
    assert all(set(r.scores) == {"topic", "sentiment"} for r in results)


def test_generate_answers_exclude_indicator_and_are_deterministic(ens):
    q, task = _queries("sentiment", 12)
    a = ens.generate(q, max_new_tokens=4)
    b = ens.generate(q, max_new_tokens=4)
    assert [(r.answer, r.expert, r.scores) for r in a] == [(r.answer, r.expert, r.scores) for r in b]
    assert all("<<" not in r.answer for r in a)
    correct = sum(r.answer == ex.output for r, ex in zip(a, task.examples))
    assert correct >= 6, [r.answer for r in a]
    assert all(0.0 <= s <= 1.0 for r in a for s in r.scores.values())
    assert all(r.prompt_tokens > 0 and r.completion_tokens >= 1 for r in a)


def test_batched_and_sequential_give_identical_results(ens):
    qs = _queries("sentiment", 8)[0] + _queries("topic", 8)[0] + _queries("capital", 4)[0]
    seq = ens.generate(qs, max_new_tokens=5, mode="sequential")
    bat = ens.generate(qs, max_new_tokens=5, mode="batched")
    assert [(r.answer, r.expert) for r in seq] == [(r.answer, r.expert) for r in bat]
    for s, b in zip(seq, bat):
        assert s.scores.keys() == b.scores.keys()
        for k in s.scores:
            assert s.scores[k] == pytest.approx(b.scores[k], abs=1e-5)


def test_thresholds_change_acceptance(ens):
    q, _ = _queries("topic", 6)
    strict = ens.route(q, threshold=1.0)
    assert all(d.expert is None or d.scores[d.expert] >= 1.0 for d in strict)
    assert all(d.expert == "topic" for d in ens.route(q, threshold=0.0))  # the newest expert takes everything


def test_adapters_reload_with_peft(two_experts, tiny_llama, ens):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(two_experts / "tokenizer")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    base.resize_token_embeddings(len(tok))
    model = PeftModel.from_pretrained(base, two_experts / "experts" / "topic").eval()
    q, _ = _queries("topic", 4)
    prompts = [ens.prompt_for(x) for x in q]
    ens.model.set_adapter("topic")
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            ours = ens.model(input_ids=ids).logits[0, -1]
            theirs = model(input_ids=ids).logits[0, -1]
        assert torch.allclose(ours, theirs, atol=1e-5)
        assert int(theirs.argmax()) == ens.indicator.pos_id


def test_queries_as_dicts_and_chat_messages(ens):
    inst = FAMILIES["topic"].instruction
    text = "storm and rain in the news today"
    a = ens.generate([{"instruction": inst, "input": text}], max_new_tokens=3)[0]
    b = ens.generate([[{"role": "system", "content": inst}, {"role": "user", "content": text}]], max_new_tokens=3)[0]
    assert (a.answer, a.expert) == (b.answer, b.expert)
    with pytest.raises(DataError):
        ens.generate([42])


def test_concurrent_callers_get_the_same_answers(ens):
    q, _ = _queries("sentiment", 6)
    expected = [(r.answer, r.expert) for r in ens.generate(q, max_new_tokens=3)]
    got, errors = [], []

    def worker():
        try:
            got.append([(r.answer, r.expert) for r in ens.generate(q, max_new_tokens=3)])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == [expected] * 4


def test_failed_add_expert_leaves_the_ensemble_unchanged(two_experts, monkeypatch, tmp_path):
    before = tree_hash(two_experts)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "c"\n')
    from see.data import load_task

    with pytest.raises(DataError):
        add_expert(two_experts, "third", load_task(bad), progress=False)
    with pytest.raises(StoreError, match="already exists"):
        add_expert(two_experts, "topic", make_task("antonym", 20), progress=False)
    assert tree_hash(two_experts) == before

    # a failure in the middle of training: the manifest and experts stay as they were, no staging is left
    import see.lifecycle as training

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash during training")

    monkeypatch.setattr(training, "train_expert", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        add_expert(two_experts, "third", make_task("antonym", 20), overrides=TRAIN, progress=False,
                   log=lambda m: None)
    assert tree_hash(two_experts) == before
    assert [e.name for e in EnsembleStore(two_experts).read().experts] == ["sentiment", "topic"]


def test_named_fallback_model_answers_what_every_expert_rejects(two_experts, tiny_models, tmp_path):
    import shutil

    from see.store import EnsembleStore

    other = tiny_models("gpt2")
    path = tmp_path / "ens"
    shutil.copytree(two_experts, path)
    store = EnsembleStore(path)
    m = store.read()
    m.fallback = str(other)
    store.write(m)
    ens = Ensemble.load(path)
    assert ens.fallback.separate and ens.fallback.name == str(other)
    unrelated, _ = _queries("capital")
    results = ens.generate(unrelated[:3], max_new_tokens=4)
    assert all(r.expert is None for r in results)
    # the answers are the fallback model's own greedy continuation of the plain prompt
    from see.engine.decode import SamplingParams

    direct = ens.fallback.answer([ens.prompt_for(q) for q in unrelated[:3]], SamplingParams(max_new_tokens=4))
    assert [r.answer for r in results] == [d.text for d in direct]


def test_init_with_a_fallback_model(tiny_llama, tiny_models, tmp_path):
    manifest = init_ensemble(tmp_path / "e", base=str(tiny_llama), fallback=str(tiny_models("gpt2")),
                             log=lambda m: None)
    assert manifest.fallback == str(tiny_models("gpt2"))
    with pytest.raises(Exception, match="does not exist"):
        init_ensemble(tmp_path / "f", base=str(tiny_llama), fallback=str(tmp_path / "missing"), log=lambda m: None)


def test_queries_longer_than_the_context_are_cut_from_the_start(ens):
    long_query = {"instruction": FAMILIES["topic"].instruction, "input": "rain " * 600 + "storm in the news today"}
    for mode in ("batched", "sequential"):
        [r] = ens.generate([long_query], max_new_tokens=4, mode=mode)
        context = ens.model.config.max_position_embeddings
        assert r.prompt_tokens <= context - 4 - 1
    [d] = ens.route([long_query])
    assert set(d.scores) <= {"topic", "sentiment"}
