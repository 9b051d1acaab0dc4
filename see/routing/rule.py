"""The newest-first rule, once: how first-token scores become an expert, and how that expert answers.

Each expert decides by its first token: it accepts when ``<<pos>>`` is the
argmax (the paper's rule) or, with a threshold, when P(``<<pos>>``) reaches
it. A query goes to the newest expert that accepts, and that expert's answer
continues from its own row of the same forward (its KV cache). Every routing
layout (:mod:`see.routing.layouts`) applies this module to the rows it
computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from see.engine.decode import Decoded, SamplingParams, decode, model_inputs, pad_left, positions, select_cache


@dataclass
class Routed:
    """What routing decided for one query."""

    expert: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    decoded: Decoded | None = None


def accept(logits: torch.Tensor, pos_id: int, thresholds: Sequence[float | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(<<pos>>), accepted) per row; ``thresholds[r]`` None means argmax for row r."""
    p_pos = torch.softmax(logits, dim=-1)[:, pos_id]
    argmax = logits.argmax(dim=-1) == pos_id
    thr = torch.tensor([float("nan") if t is None else t for t in thresholds], device=logits.device)
    return p_pos, torch.where(torch.isnan(thr), argmax, p_pos >= thr.to(p_pos.dtype))


@dataclass
class Rows:
    """One forward's rows: the expert of each row and the row of (query, expert)."""

    names: list[str]
    row: Callable[[int, int], int]  # (query position in the chunk, expert position newest first) -> row


def choose_newest(results: list[Routed], chunk: Sequence[int], experts: Sequence[str], rows: Rows,
                  logits: torch.Tensor, pos_id: int, thresholds: dict[str, float | None]
                  ) -> tuple[list[tuple[int, int]], list[int]]:
    """Apply the rule to a forward's last logits: -> ([(row, query)] accepted, [query] rejected by all)."""
    p_pos, accepted = accept(logits, pos_id, [thresholds.get(n) for n in rows.names])
    chosen, rejected = [], []
    for qi, q in enumerate(chunk):
        for ei, name in enumerate(experts):  # newest first: stop at the first acceptance
            r = rows.row(qi, ei)
            results[q].scores[name] = float(p_pos[r])
            if accepted[r]:
                results[q].expert = name
                chosen.append((r, q))
                break
        else:
            rejected.append(q)
    return chosen, rejected


def continue_chosen(model, tokenizer, results: list[Routed], chosen: list[tuple[int, int]], names: Sequence[str],
                    cache, mask: torch.Tensor, last_pos: torch.Tensor, params: SamplingParams, pos_id: int,
                    stop_id: int, block_ids: Sequence[int], mixed: bool = True) -> None:
    """Each accepting row answers from its own row of the routing forward's cache, after its ``<<pos>>``."""
    if not chosen:
        return
    device = mask.device
    sel = torch.tensor([r for r, _ in chosen], device=device)
    extra = {"adapter_names": [names[r] for r, _ in chosen] if mixed else None}
    first = torch.full((len(chosen),), pos_id, dtype=torch.long, device=device)
    decoded = decode(model, tokenizer, select_cache(cache, sel), mask[sel], last_pos[sel], first, None, params,
                     stop_id, block_ids, extra_fn=lambda step: extra)
    for d, (_, q) in zip(decoded, chosen):
        results[q].decoded = d


@torch.no_grad()
def active_adapter_scores(model, prompt, texts: Sequence[str], pos_id: int, batch_size: int = 32
                          ) -> tuple[list[float], list[bool]]:
    """P(<<pos>>) and the argmax decision of a PEFT model's active adapter for each prompt text."""
    device = next(model.parameters()).device
    enc = prompt.encode_all(texts, 1)
    scores, accepts = [], []
    for i in range(0, len(enc), batch_size):
        ids, mask = pad_left(enc[i:i + batch_size], prompt.tokenizer.pad_token_id, device)
        # the last position decides: logits over the whole vocabulary at every position would cost
        # batch x length x vocabulary floats (about 0.6 GB for a 30k vocabulary)
        kwargs = model_inputs(model, ids, mask, positions(mask), logits_to_keep=1)
        kwargs["use_cache"] = False
        logits = model(**kwargs).logits[:, -1].float()
        p, a = accept(logits, pos_id, [None] * len(logits))
        scores += p.tolist()
        accepts += a.tolist()
    return scores, accepts


def expert_thresholds(manifest, threshold: float | None = None) -> dict[str, float | None]:
    """Each expert's acceptance threshold on P(<<pos>>); None means argmax.

    An explicit ``threshold`` wins. Under ``routing.threshold: argmax`` every
    expert uses argmax (the paper's rule). Otherwise an expert's own
    threshold (set when it was added, or by ``see calibrate``) comes first,
    then a number in ``routing.threshold``, then argmax.
    """
    setting = manifest.routing.threshold
    if threshold is not None:
        return {e.name: threshold for e in manifest.experts}
    if setting == "argmax":
        return {e.name: None for e in manifest.experts}
    default = setting if isinstance(setting, (int, float)) else None
    return {e.name: e.threshold if e.threshold is not None else default for e in manifest.experts}
