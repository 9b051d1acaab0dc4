"""How well an expert accepts its own task and rejects the rest, and a calibrated threshold on P(<<pos>>).

The paper accepts when ``<<pos>>`` is the argmax of the first token. A
threshold chosen on each expert's held-out positives trades a small, known
false-rejection rate for stricter acceptance, so that queries unlike any
task more often reach the fallback. Storing thresholds is a write, so it
lives with the other writers in :mod:`see.lifecycle`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from see.engine.decode import SamplingParams, generate
from see.experts.reconstruction import TrainingExample
from see.experts.training import collate, encode_example, target_loss
from see.metrics import exact_match
from see.prompt import Indicator, PromptFormat, format_prompt
from see.routing.rule import active_adapter_scores
from see.store import EnsembleStore, Manifest, read_jsonl


def choose_threshold(pos_scores: Sequence[float], target_frr: float) -> float:
    """The highest threshold that rejects at most ``target_frr`` of the positives.

    With scores sorted ascending, rejecting the ``floor(target * n)`` lowest is
    allowed, so the threshold is the next score: every positive at or above it
    is accepted.
    """
    if not pos_scores:
        raise ValueError("no held-out positives to calibrate on")
    if not 0.0 <= target_frr < 1.0:
        raise ValueError(f"target false-rejection rate must be in [0, 1), got {target_frr}")
    ordered = sorted(pos_scores)
    k = int(math.floor(target_frr * len(ordered) + 1e-9))
    return float(ordered[min(k, len(ordered) - 1)])


def acceptance_rate(scores: Sequence[float], threshold: float) -> float:
    """Share of scores at or above the threshold (accepted)."""
    return sum(s >= threshold for s in scores) / len(scores) if scores else float("nan")


def calibration_texts(store: EnsembleStore, manifest: Manifest, index: int) -> tuple[list[str], list[str]]:
    """(held-out positives, negatives) of expert ``index`` as prompt texts.

    The negatives are what it was trained to reject: its held-out negatives and
    the rehearsal queries of every older expert.
    """
    template = manifest.prompt.template
    rec = manifest.experts[index]
    held = read_jsonl(store.root / rec.path / "heldout.jsonl")
    positives = [format_prompt(r["input"], r.get("instruction"), template) for r in held if r["kind"] == "pos"]
    negatives = [format_prompt(r["input"], r.get("instruction"), template) for r in held if r["kind"] == "neg"]
    for older in manifest.experts[:index]:
        negatives += [format_prompt(r["input"], r.get("instruction"), template)
                      for r in read_jsonl(store.root / older.path / "rehearsal.jsonl")]
    return positives, negatives


def measure(peft_model, prompt, pos_id: int, positives: Sequence[str], negatives: Sequence[str],
            target_frr: float) -> dict:
    """Threshold of the active adapter and its effect on acceptance, argmax -> threshold."""
    pos_scores, pos_argmax = active_adapter_scores(peft_model, prompt, positives, pos_id)
    neg_scores, neg_argmax = active_adapter_scores(peft_model, prompt, negatives, pos_id) if negatives else ([], [])
    threshold = choose_threshold(pos_scores, target_frr)
    return {
        "threshold": threshold, "positives": len(positives), "negatives": len(negatives),
        "accept_own_before": sum(pos_argmax) / len(pos_argmax), "accept_own_after": acceptance_rate(pos_scores, threshold),
        "reject_neg_before": 1 - sum(neg_argmax) / len(neg_argmax) if neg_argmax else None,
        "reject_neg_after": 1 - acceptance_rate(neg_scores, threshold) if neg_scores else None,
    }


@torch.no_grad()
def evaluate_heldout(model, prompt: PromptFormat, indicator: Indicator, examples: Sequence[TrainingExample], *,
                     max_length: int, batch_size: int = 32) -> dict:
    """Held-out loss and decisions of one expert (the active adapter) on its held-out examples."""
    device = next(model.parameters()).device
    encoded = [encode_example(prompt, ex, indicator, max_length)[0] for ex in examples]
    loss_sum, tok_count = 0.0, 0
    for i in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in collate(encoded[i:i + batch_size], prompt.tokenizer.pad_token_id).items()}
        loss, n = target_loss(model, batch)
        loss_sum += loss.item() * n
        tok_count += n
    texts = [format_prompt(ex.input, ex.instruction, prompt.template) for ex in examples]
    _, accept = active_adapter_scores(model, prompt, texts, indicator.pos_id, batch_size=batch_size)
    pos = [k for k, ex in enumerate(examples) if ex.kind == "pos"]
    neg = [k for k, ex in enumerate(examples) if ex.kind == "neg"]
    out = {"heldout_loss": round(loss_sum / max(1, tok_count), 5), "heldout_examples": len(examples)}
    if pos:
        out["heldout_accept_rate"] = round(sum(accept[k] for k in pos) / len(pos), 4)
        params = SamplingParams(max_new_tokens=32)
        answers = generate(model, prompt, prompt.encode_all([texts[k] for k in pos], params.max_new_tokens), params,
                           batch_size=batch_size, first_token=indicator.pos_id, block_ids=indicator.ids)
        out["heldout_exact_match"] = round(sum(exact_match(a.text, [examples[k].answer]) for a, k in zip(answers, pos))
                                           / len(pos), 4)
    if neg:
        out["heldout_reject_rate"] = round(sum(not accept[k] for k in neg) / len(neg), 4)
    return out
