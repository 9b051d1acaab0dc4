"""Calibrated acceptance: a per-expert threshold on P(<<pos>>).

The paper accepts when ``<<pos>>`` is the argmax of the first token. A
threshold chosen on each expert's held-out positives trades a small, known
false-rejection rate for stricter acceptance, so that queries unlike any
task more often reach the fallback.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

from see.data import format_prompt
from see.store import read_jsonl


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


def rates(scores: Sequence[float], threshold: float) -> float:
    """Share of scores at or above the threshold (accepted)."""
    return sum(s >= threshold for s in scores) / len(scores) if scores else float("nan")


def calibrate(path: str | Path, target_frr: float = 0.05, log: Callable[[str], None] = print) -> list[dict]:
    """Choose and store a threshold for every expert; returns one report row per expert."""
    from see.ensemble import Ensemble
    from see.routing.decode import first_token_scores

    ens = Ensemble.load(path)
    store = ens.store
    rows = []
    template = ens.template
    for k, rec in enumerate(ens.manifest.experts):
        folder = store.root / rec.path
        held = read_jsonl(folder / "heldout.jsonl")
        positives = [format_prompt(r["input"], r.get("instruction"), template) for r in held if r["kind"] == "pos"]
        negatives = [format_prompt(r["input"], r.get("instruction"), template) for r in held if r["kind"] == "neg"]
        for older in ens.manifest.experts[:k]:  # what this expert was trained to reject
            negatives += [format_prompt(r["input"], r.get("instruction"), template)
                          for r in read_jsonl(store.root / older.path / "rehearsal.jsonl")]
        if not positives:
            log(f"{rec.name}: no held-out positives (train.eval_fraction=0?); left uncalibrated")
            continue
        ens.model.set_adapter(rec.name)
        pos_scores, pos_argmax = first_token_scores(ens.model, ens.tokenizer, positives, ens.pos_id, ens.neg_id,
                                                    template=template)
        neg_scores, neg_argmax = first_token_scores(ens.model, ens.tokenizer, negatives, ens.pos_id, ens.neg_id,
                                                    template=template) if negatives else ([], [])
        threshold = choose_threshold(pos_scores, target_frr)
        rows.append({
            "expert": rec.name, "threshold": threshold, "positives": len(positives), "negatives": len(negatives),
            "accept_own_before": sum(pos_argmax) / len(pos_argmax), "accept_own_after": rates(pos_scores, threshold),
            "reject_neg_before": 1 - sum(neg_argmax) / len(neg_argmax) if neg_argmax else None,
            "reject_neg_after": 1 - rates(neg_scores, threshold) if neg_scores else None,
        })
    with store.lock(message=log):
        manifest = store.read()
        by_name = {r["expert"]: r for r in rows}
        for rec in manifest.experts:
            if rec.name in by_name:
                rec.threshold = by_name[rec.name]["threshold"]
                rec.extra["calibration"] = {"target_frr": target_frr, **{k: v for k, v in by_name[rec.name].items()
                                                                          if k != "expert"}}
        store.write(manifest)
    return rows
