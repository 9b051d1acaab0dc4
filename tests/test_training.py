"""One parametrized table over tiny Llama/Qwen/GPT-2 models (PEFT style)."""
import pytest
import torch

from see.config import load_config
from see.errors import ConfigError
from see.embedded.families import make_task
from see.experts.reconstruction import reconstruct_task
from see.experts.training import IGNORE, encode_example, lora_config, rows_only_trainable_tokens, set_train_mode, \
    train_expert
from see.modeling import add_indicator_tokens, fit_embeddings, load_causal_lm, load_tokenizer, model_context
from see.prompt import Indicator, PromptFormat

TEMPLATE = "{instruction}\n{input}\nAnswer:"
ARCHS = ["llama", "llama-untied", "qwen2", "gpt2"]


def _setup(model_dir):
    tok = load_tokenizer(str(model_dir))
    pos, neg = add_indicator_tokens(tok, "<<pos>>", "<<neg>>")
    model = load_causal_lm(str(model_dir), "float32")
    fit_embeddings(model, tok)
    return model, tok, pos, neg


def _prompt(model, tok, pos, neg):
    return PromptFormat(tok, TEMPLATE, model_context(model)), Indicator("<<pos>>", "<<neg>>", pos, neg)


def test_encode_masks_the_prompt_and_ends_answers(tiny_llama):
    model, tok, pos, neg = _setup(tiny_llama)
    prompt, indicator = _prompt(model, tok, pos, neg)
    task = make_task("sentiment", 4)
    [ex] = [e for e in reconstruct_task(task, None)][:1]
    enc, cut = encode_example(prompt, ex, indicator, 256)
    target = [t for t in enc.labels if t != IGNORE]
    assert not cut
    assert target[0] == pos and target[-1] == tok.eos_token_id
    assert tok.decode(target[1:-1]).strip() == ex.answer
    assert enc.input_ids[-len(target):] == target
    # a negative's target is the single <<neg>> token
    neg_ex = type(ex)(ex.instruction, ex.input, "neg", None, "general")
    enc, _ = encode_example(prompt, neg_ex, indicator, 256)
    assert [t for t in enc.labels if t != IGNORE] == [neg]


def test_overlong_examples_truncate_or_reject(tiny_llama):
    from see.errors import DataError

    model, tok, pos, neg = _setup(tiny_llama)
    prompt, indicator = _prompt(model, tok, pos, neg)
    ex = reconstruct_task(make_task("sentiment", 1), None)[0]
    long_ex = type(ex)(ex.instruction, " ".join(["word"] * 200), "pos", "positive", "t")
    enc, cut = encode_example(prompt, long_ex, indicator, 64)
    assert cut and len(enc.input_ids) == 64 and enc.input_ids[0] == tok.bos_token_id
    with pytest.raises(DataError, match="longer than train.max_length"):
        encode_example(prompt, long_ex, indicator, 64, overlength="reject")


@pytest.mark.parametrize("arch", ARCHS)
def test_only_lora_and_indicator_rows_train(tiny_models, arch):
    model, tok, pos, neg = _setup(tiny_models(arch))
    params_before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    emb = model.get_input_embeddings().weight
    rows_before = emb[[pos, neg]].detach().clone()
    cfg = load_config(None, ["train.max_steps=25", "train.lr=1e-2", "train.batch_size=8", "lora.r=4",
                             "lora.dropout=0.0", "train.warmup_ratio=0.0"])
    examples = reconstruct_task(make_task("sentiment", 64), None,
                                [(None, f"unrelated {i}") for i in range(40)], general_negative_ratio=0.3)
    peft_model, result = train_expert(model, *_prompt(model, tok, pos, neg), examples, lora=cfg.lora, train=cfg.train,
                                      progress=False)
    # base weights: the very same tensors, bit-identical
    for name, (param, before) in params_before.items():
        assert torch.equal(param.detach(), before), f"base weight {name} changed"
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    assert any("trainable_tokens" in n for n in trainable)
    # the expert's indicator rows moved; with adapters off they are the base's again
    delta = [p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n][0]
    assert not torch.allclose(delta.detach(), rows_before.to(delta.dtype))
    with peft_model.disable_adapter():
        ids = torch.tensor([[pos, neg]])
        assert torch.equal(peft_model.get_input_embeddings()(ids)[0], rows_before)
    # the loss fell (recipe-style check on the values)
    assert result.losses[-1] < 0.75 * result.losses[0], result.losses


@pytest.mark.parametrize("arch", ARCHS)
def test_rows_only_token_forward_matches_peft(tiny_models, arch):
    """Same logits and the same gradients as PEFT's whole-matrix forward, on tied and untied heads."""
    from peft import get_peft_model

    grads, logits = [], []
    for rows_only in (False, True):
        model, tok, pos, neg = _setup(tiny_models(arch))
        torch.manual_seed(0)
        peft_model = get_peft_model(model, lora_config(load_config(None, ["lora.dropout=0.0"]).lora, model, [pos, neg]))
        delta = [p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n]
        with torch.no_grad():  # rows unlike the base's, so a forward that ignored them would differ
            for d in delta:
                d.add_(torch.randn_like(d))
        if rows_only:
            rows_only_trainable_tokens(peft_model)
        ids = torch.tensor([[5, pos, 7, neg, 9], [pos, pos, 3, 4, neg]])
        out = peft_model(input_ids=ids).logits
        out[:, :, [pos, neg, 11]].sum().backward()
        logits.append(out.detach())
        grads.append([d.grad.clone() for d in delta])
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(grads[0], grads[1]):
        assert a.abs().sum() > 0 and torch.allclose(a, b, atol=1e-5)


def test_base_dropout_is_off_while_lora_dropout_trains(tiny_models):
    from peft import get_peft_model

    model, tok, pos, neg = _setup(tiny_models("llama"))
    peft_model = get_peft_model(model, lora_config(load_config(None, ["lora.dropout=0.1"]).lora, model, [pos, neg]))
    set_train_mode(peft_model, base_dropout=False)
    lora_dropouts = [m for n, m in peft_model.named_modules() if n.split(".")[-2:-1] == ["lora_dropout"]]
    assert lora_dropouts and all(m.training for m in lora_dropouts)
    assert not any(m.training for n, m in peft_model.named_modules() if "lora_dropout" not in n.split("."))
    set_train_mode(peft_model, base_dropout=True)
    assert all(m.training for m in peft_model.modules())


def test_lora_config_lists_untied_output_rows(tiny_models):
    model, tok, pos, neg = _setup(tiny_models("llama-untied"))
    cfg = lora_config(load_config().lora, model, [pos, neg])
    assert cfg.trainable_token_indices == {"embed_tokens": [pos, neg], "lm_head": [pos, neg]}
    model, tok, pos, neg = _setup(tiny_models("llama"))
    assert lora_config(load_config().lora, model, [pos, neg]).trainable_token_indices == [pos, neg]


@pytest.mark.parametrize("sampling", [[], ["train.group_by_length=true"], ["train.negative_share=0.2"]])
def test_training_is_seeded(tiny_llama, sampling):
    # 12 steps: past the first epoch (5 or 6 batches), so the per-epoch reseeding is part of what must repeat
    cfg = load_config(None, ["train.max_steps=12", "train.batch_size=8", *sampling])
    general = [(None, f"an unrelated request number {k}") for k in range(40)]
    examples = reconstruct_task(make_task("topic", 32), None, general, general_negative_ratio=1.0)
    losses = []
    for _ in range(2):
        model, tok, pos, neg = _setup(tiny_llama)
        _, result = train_expert(model, *_prompt(model, tok, pos, neg), examples, lora=cfg.lora, train=cfg.train,
                                 progress=False)
        losses.append(result.losses)
    assert losses[0] == losses[1]


@pytest.mark.parametrize("examples,batch,overrides,steps", [
    (50, 16, [], 1000),           # a tiny task: the floor, whatever its size
    (3000, 16, [], 1000),         # 188 updates per epoch x 3 epochs = 564: still the floor
    (6000, 16, [], 1125),         # 375 updates per epoch x 3 epochs
    (50_000, 16, [], 2000),       # a large task: the cap (about 0.64 epochs)
    (50, 16, ["train.epochs=2"], 8),
    (50, 16, ["train.max_steps=7"], 7),
    (50_000, 16, ["train.min_steps=100", "train.max_auto_steps=10000"], 9375),
])
def test_step_budget_rule(examples, batch, overrides, steps):
    import math

    from see.experts.training import step_budget

    cfg = load_config(None, [f"train.batch_size={batch}"] + overrides)
    assert step_budget(cfg.train, math.ceil(examples / batch)) == steps


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lr,expected", [("auto", 6e-3),   # 1e-3 x 384 / 64, the tiny models' width (GPT-2's n_embd)
                                         ("2e-4", 2e-4)])   # a number is used as given
def test_auto_learning_rate_scales_inversely_with_the_base_width(tiny_models, arch, lr, expected):
    from see.experts.training import learning_rate

    cfg = load_config(None, ["train.max_steps=2", "train.batch_size=8", f"train.lr={lr}"])
    model, tok, pos, neg = _setup(tiny_models(arch))
    assert learning_rate(cfg.train, model) == pytest.approx(expected)
    _, result = train_expert(model, *_prompt(model, tok, pos, neg), reconstruct_task(make_task("topic", 16), None),
                             lora=cfg.lora, train=cfg.train, progress=False)
    assert result.metrics["lr"] == pytest.approx(expected)


def test_auto_learning_rate_without_a_width_is_the_reference_rate():
    from types import SimpleNamespace

    from see.experts.training import learning_rate

    train = load_config(None, []).train
    assert train.lr == "auto"
    assert learning_rate(train, SimpleNamespace(config=SimpleNamespace())) == 1e-3
    assert learning_rate(train, SimpleNamespace(config=SimpleNamespace(hidden_size=768))) == pytest.approx(5e-4)

    class SeveralTextConfigs:  # transformers raises this when a multimodal config has no single text part
        hidden_size = 4096

        def get_text_config(self):
            raise ValueError("several text configs")

    assert learning_rate(train, SimpleNamespace(config=SeveralTextConfigs())) == 1e-3


@pytest.mark.parametrize("overrides,evaluated_at", [
    (["train.max_steps=20"], []),                                  # explicit budget: nothing to choose
    (["train.max_steps=20", "train.eval_every=5"], [5, 10, 15, 20]),  # unless asked for
    (["train.max_steps=20", "train.patience=0"], []),              # patience 0 is never
    (["train.max_steps=20", "train.patience=2"], [10, 20]),        # early stopping on: every max(10, 20 // 10)
    (["train.max_steps=20", "train.patience=2", "train.eval_every=0"], []),
])
def test_periodic_evaluations_run_only_when_something_uses_them(tiny_llama, overrides, evaluated_at):
    cfg = load_config(None, ["train.batch_size=8"] + overrides)
    examples = reconstruct_task(make_task("topic", 32), None)
    model, tok, pos, neg = _setup(tiny_llama)
    calls = []

    def evaluate(m):
        calls.append(len(calls))
        return {"heldout_score": 0.0, "heldout_loss": 1.0}

    _, result = train_expert(model, *_prompt(model, tok, pos, neg), examples, lora=cfg.lora, train=cfg.train,
                             progress=False, evaluate=evaluate)
    assert [h["step"] for h in result.metrics.get("eval_history", [])] == evaluated_at
    assert len(calls) == len(evaluated_at) and result.steps == 20


def test_no_checkpoint_at_the_step_where_early_stopping_ends_training(tiny_llama, tmp_path):
    """A checkpoint taken at the stopping step would resume past the stop; the one before it resumes to it."""
    from see.experts.training import load_checkpoint

    cfg = load_config(None, ["train.batch_size=8", "train.max_steps=40", "train.patience=1", "train.eval_every=5",
                             "train.checkpoint_every=5"])
    examples = reconstruct_task(make_task("topic", 32), None)
    model, tok, pos, neg = _setup(tiny_llama)
    scores = iter([0.5, 0.4, 0.3])  # the 2nd evaluation is worse: with patience 1 training stops at step 10

    _, result = train_expert(model, *_prompt(model, tok, pos, neg), examples, lora=cfg.lora, train=cfg.train,
                             progress=False, checkpoint_dir=tmp_path / "ck",
                             evaluate=lambda m: {"heldout_score": next(scores), "heldout_loss": 1.0})
    assert result.steps == 10
    assert load_checkpoint(tmp_path / "ck")["step"] == 5


def test_early_stopping_keeps_the_best_weights_and_stops_on_a_plateau():
    """The 3rd evaluation is no better (its loss is less than 1% lower), the 4th's score is lower, the 5th has
    the best score with a loss 2% lower, and the 6th to 8th are no better: with patience 3 training stops
    after the 8th, and the 5th's weights are kept."""
    from see.experts.training import EarlyStopping

    model = torch.nn.Linear(2, 2)
    figures = iter([(.2, 2.0), (.5, 1.0), (.5, .995), (.4, .5), (.5, .98), (.5, .975), (.45, .1), (.5, .975)])
    stopping = EarlyStopping(lambda m: dict(zip(("heldout_score", "heldout_loss"), next(figures))), every=10,
                             patience=3)
    stops = []
    for step in (10, 20, 30, 40, 50, 60, 70, 80):
        with torch.no_grad():
            model.weight.fill_(step)
        stops.append(stopping(model, step))
    assert stops == [False] * 7 + [True]
    assert stopping.best_step == 50 and stopping.best_score == 0.5 and stopping.best_loss == 0.98
    stopping.restore_best(model)
    assert torch.all(model.weight == 50)


def test_a_perfect_expert_stops_although_its_tiny_loss_keeps_falling():
    """Loss 0.0024 -> 0.0008 -> ... falls by far more than 1% each time, but by less than MIN_LOSS_GAIN: after
    the first perfect evaluation, three more end training."""
    from see.experts.training import EarlyStopping

    losses = iter([0.0024, 0.0008, 0.0006, 0.0004, 0.0003])
    stopping = EarlyStopping(lambda m: {"heldout_score": 1.0, "heldout_loss": next(losses)}, every=100, patience=3)
    model = torch.nn.Linear(2, 2)
    assert [stopping(model, s) for s in (100, 200, 300, 400)] == [False, False, False, True]
    assert stopping.best_step == 100


def test_before_the_floor_only_a_perfect_expert_stops():
    """An expert that learns its answers first sits on a plateau for a few evaluations: before ``not_before``
    that plateau does not end training, and after it the same plateau does; a perfect score ends it anywhere."""
    from see.experts.training import EarlyStopping

    model = torch.nn.Linear(2, 2)
    plateau = EarlyStopping(lambda m: {"heldout_score": 0.6, "heldout_loss": 1.0}, every=100, patience=3,
                            not_before=1000)
    assert [plateau(model, s) for s in range(100, 1100, 100)] == [False] * 9 + [True]
    perfect = EarlyStopping(lambda m: {"heldout_score": 1.0, "heldout_loss": 1.0}, every=100, patience=3,
                            not_before=1000)
    assert [perfect(model, s) for s in (100, 200, 300, 400)] == [False, False, False, True]


def test_length_grouped_batches_cover_every_example_once_with_similar_lengths():
    from see.experts.training import LengthGroupedBatches

    lengths = [3, 40, 7, 38, 5, 36, 9, 34, 11, 32, 2]
    # one group holds every example: batches are neighbours in length order (40 38 | 36 34 | 32 11 | 9 7 | 5 3 |
    # 2), whatever the shuffle, and only their order is random
    sampler = LengthGroupedBatches(lengths, batch_size=2, generator=torch.Generator().manual_seed(0), group=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6
    assert {frozenset(b) for b in batches} == {frozenset(b) for b in ([1, 3], [5, 7], [9, 8], [6, 2], [4, 0], [10])}
    # groups of 2 batches: every example once, as many batches as plain shuffling, only the last one short
    small = LengthGroupedBatches(lengths, batch_size=2, generator=torch.Generator().manual_seed(1), group=2)
    batches = list(small)
    assert sorted(i for b in batches for i in b) == list(range(11))
    assert sorted(len(b) for b in batches) == [1, 2, 2, 2, 2, 2]
    assert list(LengthGroupedBatches(lengths, 2, torch.Generator().manual_seed(1), group=2)) == batches  # seeded


def test_negative_capped_batches_keep_every_positive_and_walk_the_negatives():
    from see.experts.training import NegativeCappedBatches

    negative = [False] * 30 + [True] * 45
    sampler = NegativeCappedBatches(negative, 16, torch.Generator(), share=0.2, seed=0)
    assert sampler.per_epoch == 7  # floor(0.2 / 0.8 * 30): a fifth of the epoch
    seen: list[int] = []
    epochs = []
    for epoch in range(7):  # ceil(45 / 7) epochs see every negative
        sampler.generator.manual_seed(epoch)
        sampler.set_epoch(epoch)
        order = [i for batch in sampler for i in batch]
        assert len(list(sampler)) == len(sampler) == 3  # (30 + 7) / 16, rounded up
        assert len(order) == len(set(order)) == 37
        assert sorted(i for i in order if not negative[i]) == list(range(30))  # every positive, once
        drawn = [i for i in order if negative[i]]
        assert len(drawn) == 7
        seen += drawn
        epochs.append(order)
    assert set(seen) == set(range(30, 75))  # all 45 negatives within 7 epochs
    again = NegativeCappedBatches(negative, 16, torch.Generator().manual_seed(3), 0.2, seed=0)
    again.set_epoch(3)
    assert [i for b in again for i in b] == epochs[3]  # a resumed run sees the same epoch
    # float error at an exact boundary does not lose a negative: 0.45 / 0.55 * 33 = 27
    assert NegativeCappedBatches([False] * 33 + [True] * 40, 8, torch.Generator(), 0.45).per_epoch == 27
    # fewer negatives than the share allows: all kept; negatives alone (no positives): all kept
    assert len([i for b in NegativeCappedBatches([False] * 30 + [True] * 2, 16, torch.Generator(), 0.2)
                for i in b]) == 32
    assert len(NegativeCappedBatches([True] * 5, 2, torch.Generator(), 0.2)) == 3


def test_hard_negatives_lead_the_window_and_take_at_most_half_of_it():
    from see.experts.training import NegativeCappedBatches

    negative = [False] * 30 + [True] * 45
    sampler = NegativeCappedBatches(negative, 16, torch.Generator(), share=0.2, seed=0)
    sampler.set_epoch(2)
    plain = sampler.window()
    sampler.set_hard([74, 31, 50, 60, 33])
    assert sampler.hard == [74, 31, 50]  # 7 places an epoch: at most 3 hard ones, hardest first
    window = sampler.window()
    assert window[:3] == [74, 31, 50] and len(window) == len(set(window)) == 7
    # the rest is the seeded walk, which moves 4 places an epoch now: epoch 2 starts at its 8th negative
    assert window[3:] == [k for k in sampler.negatives[8:15] if k not in {74, 31, 50}][:4]
    sampler.set_hard([])
    assert sampler.window() == plain


def test_hard_negatives_leave_no_stretch_of_the_walk_unseen():
    """30 places an epoch divide 60 negatives: moving by 30 with 15 hard ones would drop the same 15 of every
    window for good; moving by the 15 places filled walks them all in 4 epochs."""
    from see.experts.training import NegativeCappedBatches

    negative = [False] * 30 + [True] * 60
    sampler = NegativeCappedBatches(negative, 8, torch.Generator(), share=0.5, seed=0)
    assert sampler.per_epoch == 30
    sampler.set_hard(list(range(30, 45)))
    seen = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        window = sampler.window()
        assert len(window) == len(set(window)) == 30
        seen |= set(window)
    assert seen == set(range(30, 90))


class _EchoLM(torch.nn.Module):
    """Predicts that the next token is the current one, with logit 5 (vocabulary of 8)."""

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, use_cache=None):
        from types import SimpleNamespace

        logits = 5.0 * torch.nn.functional.one_hot(input_ids, 8).float()
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def test_hard_negatives_are_the_ones_the_model_gets_wrong():
    """P(first target) is e^5 / (e^5 + 7) = 0.95 after the target's own id, 1 / (e^5 + 7) = 0.006 otherwise;
    prompts of different lengths check the left-padded column arithmetic."""
    from see.experts.training import EncodedExample, hard_negatives

    neg, eos = 3, 7
    encoded = [EncodedExample([1, 2, 3, neg, eos], [IGNORE] * 3 + [neg, eos]),        # right: after a 3
               EncodedExample([1, 4, neg, eos], [IGNORE] * 2 + [neg, eos]),           # wrong
               EncodedExample([5, 5, 5, 5, 2, neg, eos], [IGNORE] * 5 + [neg, eos]),  # wrong
               EncodedExample([6, 3, neg, eos], [IGNORE] * 2 + [neg, eos]),           # right
               EncodedExample([1, 1, neg], [IGNORE] * 2 + [neg])]                      # wrong, one target token
    assert hard_negatives(_EchoLM(), encoded, [0, 1, 2, 3, 4], 0, torch.device("cpu")) == [1, 2, 4]
    assert hard_negatives(_EchoLM(), encoded, [4, 3, 2], 0, torch.device("cpu"), batch_size=2) == [4, 2]


@pytest.mark.parametrize("share,per_epoch", [(None, 45), (0.2, 7)])
def test_negatives_added_batches_hold_a_plain_lora_batch_of_positives_each(share, per_epoch):
    """``train.negatives_in_batch=added``: 30 positives at batch 8 are the plain LoRA's 4 batches (8, 8, 8, 6),
    each with its share of the epoch's negatives on top, within one of the others."""
    from see.experts.training import NegativesAddedBatches

    negative = [False] * 30 + [True] * 45
    sampler = NegativesAddedBatches(negative, 8, torch.Generator().manual_seed(0), share=share, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4
    assert [sum(not negative[i] for i in b) for b in batches] == [8, 8, 8, 6]
    drawn = [sum(negative[i] for i in b) for b in batches]
    assert sum(drawn) == per_epoch and max(drawn) - min(drawn) <= 1
    order = [i for b in batches for i in b]
    assert len(order) == len(set(order)) and sorted(i for i in order if not negative[i]) == list(range(30))
    again = NegativesAddedBatches(negative, 8, torch.Generator().manual_seed(0), share=share, seed=0)
    assert list(again) == batches  # seeded: a resumed run sees the same epoch
    # negatives alone (no positives): batches of negatives
    assert [len(b) for b in NegativesAddedBatches([True] * 5, 2, torch.Generator(), None)] == [2, 2, 1]


@pytest.mark.parametrize("overrides,mined", [
    (["train.epochs=3", "train.negative_share=0.5"], 2),    # mined at the start of epochs 1 and 2
    (["train.epochs=3", "train.negatives_in_batch=added"], 0),  # no share: every negative in every epoch
    (["train.epochs=3", "train.negative_share=0.5", "train.hard_negatives=false"], 0),
])
def test_hard_negatives_are_mined_only_under_a_negative_share(tiny_llama, monkeypatch, overrides, mined):
    import see.experts.training as training

    calls = []
    real = training.hard_negatives
    monkeypatch.setattr(training, "hard_negatives", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = load_config(None, ["train.batch_size=4", "train.hard_negatives=true", *overrides])
    general = [(None, f"an unrelated request number {k}") for k in range(10)]
    model, tok, pos, neg = _setup(tiny_llama)
    examples = reconstruct_task(make_task("topic", 6), None, general, general_negative_ratio=1.0)
    train_expert(model, *_prompt(model, tok, pos, neg), examples, lora=cfg.lora, train=cfg.train, progress=False)
    assert len(calls) == mined


def test_negatives_added_train_one_positive_batch_a_step(tiny_llama):
    """3 epochs of 8 positives at batch 4 are 6 steps, whatever the negatives: an epoch is one pass over the
    positives, as for the task's own LoRA."""
    cfg = load_config(None, ["train.epochs=3", "train.batch_size=4", "train.negatives_in_batch=added"])
    general = [(None, f"an unrelated request number {k}") for k in range(10)]
    model, tok, pos, neg = _setup(tiny_llama)
    examples = reconstruct_task(make_task("topic", 8), None, general, general_negative_ratio=1.0)
    assert sum(ex.kind == "pos" for ex in examples) == 8 and sum(ex.kind == "neg" for ex in examples) >= 8
    _, result = train_expert(model, *_prompt(model, tok, pos, neg), examples, lora=cfg.lora, train=cfg.train,
                             progress=False)
    assert result.steps == 6
    with pytest.raises(ConfigError, match="cannot be combined"):
        bad = load_config(None, ["train.max_steps=2", "train.negatives_in_batch=added", "train.group_by_length=true"])
        train_expert(model, *_prompt(model, tok, pos, neg), examples, lora=bad.lora, train=bad.train, progress=False)


@pytest.mark.parametrize("overrides,share", [
    ([], 0.2),                                                   # auto under the auto budget
    (["train.epochs=3"], None),                                  # auto with explicit epochs: every example
    (["train.max_steps=50"], None),                              # ... or an explicit step count
    (["train.group_by_length=true"], None),                      # auto gives way to asked-for length grouping
    (["train.negative_share=none"], None),                       # the README's spelling of null
    (["train.negative_share=null"], None),
    (["train.negative_share=0.4", "train.epochs=3"], 0.4),       # a number applies under any budget
    (["train.negative_share=auto", "train.min_steps=10"], 0.2),
])
def test_negative_share_resolves(overrides, share):
    from see.experts.training import negative_share, run_signature

    cfg = load_config(None, overrides)
    assert negative_share(cfg.train) == share
    assert run_signature(cfg.lora, cfg.train, 10).get("train.negative_share") == share


def test_negative_share_is_checked(tiny_llama):
    for bad in ("0", "1", "1.5", "some"):
        with pytest.raises(ConfigError, match="negative_share"):
            load_config(None, [f"train.negative_share={bad}"])
    cfg = load_config(None, ["train.max_steps=2", "train.negative_share=0.5", "train.group_by_length=true"])
    general = [(None, f"an unrelated request number {k}") for k in range(10)]
    model, tok, pos, neg = _setup(tiny_llama)
    with pytest.raises(ConfigError, match="cannot be combined"):
        train_expert(model, *_prompt(model, tok, pos, neg),
                     reconstruct_task(make_task("topic", 8), None, general, general_negative_ratio=1.0),
                     lora=cfg.lora, train=cfg.train, progress=False)


def test_length_grouping_cuts_padding_on_mixed_lengths():
    import random

    from see.experts.training import LengthGroupedBatches

    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(10, 30), rng.randint(200, 256)]) for _ in range(800)]
    padded = lambda batches: sum(len(b) * max(lengths[i] for i in b) for b in batches)  # noqa: E731
    plain = torch.randperm(800, generator=torch.Generator().manual_seed(0)).tolist()
    random_cost = padded([plain[k:k + 8] for k in range(0, 800, 8)])
    grouped_cost = padded(list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(0))))
    assert grouped_cost < 0.75 * random_cost


@pytest.mark.parametrize("lengths,call_cost,chunks", [
    ([10, 10, 10, 10], 128, [[0, 1, 2, 3]]),  # nothing to drop
    ([60, 70, 80, 64], 128, [[0, 3, 1, 2]]),  # 128 + 4 x 80 = 448; [60, 64] + [70, 80] = 544
    # one passage among short queries: 128 + 256 + 128 + 7 x 20 = 652 against 128 + 8 x 256 = 2,176
    ([20, 256, 18, 20, 15, 20, 20, 19], 128, [[4, 2, 7, 0, 3, 5, 6], [1]]),
    ([20, 256, 18, 20, 15, 20, 20, 19], 10_000, [[4, 2, 7, 0, 3, 5, 6, 1]]),  # a call dearer than any padding
    # two groups and one apart: 3 x 10 + 3 x 100 + 1 x 250 + 3 x 50 beats any coarser split at cost 50
    ([100, 10, 250, 100, 10, 10, 100], 50, [[1, 4, 5], [0, 3, 6], [2]]),
])
def test_length_chunks_split_a_batch_where_the_padding_saved_pays_for_the_call(lengths, call_cost, chunks):
    from see.experts.training import length_chunks

    assert length_chunks(lengths, call_cost) == chunks


@pytest.mark.parametrize("arch,balanced", [(arch, False) for arch in ARCHS] + [("llama", True)])
def test_sub_batches_of_similar_length_give_the_whole_batch_loss_and_gradient(tiny_models, arch, balanced):
    """What makes splitting safe to do always: the step is the same one, only cheaper (with
    ``train.loss_weighting=balanced`` too, whose weights are normalised over the whole batch)."""
    from peft import get_peft_model

    from see.experts.training import EncodedExample, balanced_weights, collate, length_chunks, target_loss_backward

    model, tok, pos, neg = _setup(tiny_models(arch))
    cfg = load_config(None, ["lora.r=4", "lora.dropout=0.0"])
    peft_model = get_peft_model(model, lora_config(cfg.lora, model, [pos, neg]))
    peft_model.eval()  # no dropout: both runs see the same network
    g = torch.Generator().manual_seed(0)
    rows = []
    for n, answer in [(150, 3), (12, 1), (14, 2), (9, 1), (20, 4), (11, 1), (13, 1), (10, 2)]:
        ids = torch.randint(5, 100, (n,), generator=g).tolist()
        if balanced:  # a positive (<<pos>> answer) or, with one target token, a negative (<<neg>>)
            ids[n - answer] = pos if answer > 1 else neg
        rows.append(EncodedExample(ids, [IGNORE] * (n - answer) + ids[n - answer:]))
    assert len(length_chunks([len(r.input_ids) for r in rows])) > 1
    batch = collate(rows, tok.pad_token_id)
    if balanced:
        batch["weights"] = balanced_weights(batch["labels"], [pos, neg])
    results = []
    for split in (False, True):
        peft_model.zero_grad()
        loss = target_loss_backward(peft_model, batch, lambda x: x.backward(), split=split)
        grads = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}
        results.append((loss, grads))
    (loss, grads), (split_loss, split_grads) = results
    assert torch.allclose(loss, split_loss, atol=1e-5)
    assert grads.keys() == split_grads.keys() and any(g.abs().sum() > 0 for g in grads.values())
    for name in grads:
        assert torch.allclose(grads[name], split_grads[name], atol=1e-6, rtol=1e-4), name


def test_balanced_weights_by_hand():
    """Two positives (<<pos>> a b </s>, <<pos>> c </s>) and two negatives (<<neg>>): seven answer and stop
    tokens share one half of the loss, the four decision tokens the other. Under one mean over all eleven
    tokens each answer token would weigh 1/11; here 1/5, so adding negatives leaves the answers' weight alone."""
    from see.experts.training import balanced_weights

    P, N, S = 90, 91, 2
    labels = torch.tensor([[IGNORE, P, 10, 11, S],
                           [IGNORE, IGNORE, P, 12, S],
                           [IGNORE, IGNORE, IGNORE, IGNORE, N],
                           [IGNORE, IGNORE, IGNORE, IGNORE, N]])
    w = balanced_weights(labels, [P, N])
    a, d = 1 / 5, 1 / 4
    expected = torch.tensor([[0, d, a, a, a], [0, 0, d, a, a], [0, 0, 0, 0, d], [0, 0, 0, 0, d]])
    assert torch.allclose(w, expected)
    assert torch.isclose(w.sum(), torch.tensor(2.0))
    # no negatives, no positives' indicator: a plain example's tokens are one mean, as in a plain LoRA
    plain = torch.tensor([[IGNORE, 10, 11, S]])
    assert torch.allclose(balanced_weights(plain, [P, N]), torch.tensor([[0, 1 / 3, 1 / 3, 1 / 3]]))


@pytest.mark.parametrize("weighting", ["tokens", "balanced"])
def test_loss_weighting_reaches_every_training_step(tiny_llama, monkeypatch, weighting):
    """``balanced`` gives every step's batch its weights (answers and decisions a half each of the loss);
    ``tokens`` gives none, so that step is the one-mean loss it always was."""
    from see.experts import training

    seen = []
    real = training.target_loss_backward

    def spy(model, batch, backward, **kwargs):
        seen.append(batch.get("weights"))
        return real(model, batch, backward, **kwargs)

    monkeypatch.setattr(training, "target_loss_backward", spy)
    cfg = load_config(None, ["train.max_steps=3", "train.batch_size=8", f"train.loss_weighting={weighting}"])
    general = [(None, f"an unrelated request number {k}") for k in range(10)]
    model, tok, pos, neg = _setup(tiny_llama)
    train_expert(model, *_prompt(model, tok, pos, neg),
                 reconstruct_task(make_task("topic", 8), None, general, general_negative_ratio=1.0),
                 lora=cfg.lora, train=cfg.train, progress=False)
    assert len(seen) == 3
    if weighting == "tokens":
        assert all(w is None for w in seen)
    else:  # each batch mixes positives and negatives here, so both halves are there
        assert all(w is not None and torch.isclose(w.sum(), torch.tensor(2.0)) for w in seen)


def test_near_misses_are_reported_apart_from_the_negatives_the_gate_and_threshold_use(tiny_llama, monkeypatch):
    """A near miss that the expert accepts (a heuristic label that may be wrong) neither lowers the reject rate
    the quality gate reads nor moves the threshold; it is reported on its own and counts in the score."""
    from see.experts.reconstruction import NEAR_MISS, TrainingExample
    from see.routing import calibration

    model, tok, pos, neg = _setup(tiny_llama)
    prompt, indicator = _prompt(model, tok, pos, neg)
    held = ([TrainingExample(None, f"own {i}", "pos", "yes", "t") for i in range(4)]
            + [TrainingExample(None, f"other {i}", "neg", None, "general") for i in range(4)]
            + [TrainingExample(None, f"near {i}", "neg", None, NEAR_MISS) for i in range(2)])
    p_pos = [0.99, 0.98, 0.97, 0.96] + [0.01, 0.02, 0.2, 0.6] + [0.95, 0.9]
    monkeypatch.setattr(calibration, "active_adapter_scores",
                        lambda m, pr, texts, pos_id, batch_size=32: (p_pos[:len(texts)], [s > 0.5 for s in p_pos]))
    monkeypatch.setattr(calibration, "_answers_match", lambda *a, **k: 1.0)
    m = calibration.evaluate_heldout(model, prompt, indicator, held, max_length=64, target_frr=0.02)
    assert m["heldout_accept_rate"] == 1.0
    assert m["heldout_reject_rate"] == 0.75  # 3 of the 4 general negatives; the near misses are not in it
    assert m["heldout_near_miss_reject_rate"] == 0.0
    assert m["heldout_score"] == round((1.0 + 1.0 + 0.75 + 0.0) / 4, 4)
    assert m["threshold"] == calibration.auto_threshold(p_pos[:4], p_pos[4:8], 0.02, 10.0)
    assert m["threshold"] != calibration.auto_threshold(p_pos[:4], p_pos[4:], 0.02, 10.0)
