"""Layouts of the newest-first rule: which rows one forward computes, chosen in one place (:func:`route`).

* ``sequential`` (the paper's cascade): one expert per forward; the queries
  it rejects go on to the next older expert. Least memory.
* ``batched`` LoRA: every expert's decision for a batch of queries comes from
  one mixed-adapter forward; rows per forward are capped by ``max_rows``, and
  past it experts go in groups, newest group first, exactly like a cascade of
  groups.
* ``batched`` aLoRA: an aLoRA expert leaves every token before its invocation
  sequence (the template's tail) to the base model, so one base prefill of
  the query is shared by every expert, plus one short forward over the
  invocation tokens with all experts as rows.

All give the same decisions and answers: :mod:`see.routing.rule` is applied to
the same per-expert first-token distribution.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch

from see.engine.decode import SamplingParams, model_inputs, output_cache, pad_left, positions, prefill
from see.engine.multilora import base_rows
from see.routing.rule import Routed, Rows, choose_newest, continue_chosen


@dataclass
class RouteRequest:
    """Everything a layout needs besides the model and the prompts."""

    experts_newest_first: Sequence[str]
    pos_id: int
    thresholds: dict[str, float | None]
    #: None decides only; otherwise the accepting expert answers with these parameters.
    params: SamplingParams | None
    stop_id: int
    block_ids: Sequence[int]
    max_rows: int = 256


def route(model, tokenizer, encoded: Sequence[Sequence[int]], request: RouteRequest, *, kind: str, mode: str,
          invocation: Sequence[int] = ()) -> list[Routed]:
    """The one place a layout is chosen. ``model`` is a :class:`see.engine.multilora.MultiLoraModel`."""
    if not request.experts_newest_first:
        return [Routed() for _ in encoded]
    if mode == "sequential":
        return _groups_layout(model, tokenizer, encoded, request, group_size=1)
    if kind == "alora":
        return _alora_layout(model, tokenizer, encoded, request, invocation)
    return _groups_layout(model, tokenizer, encoded, request, group_size=len(request.experts_newest_first))


def _chunks(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


@torch.no_grad()
def _groups_layout(model, tokenizer, encoded, req: RouteRequest, group_size: int) -> list[Routed]:
    device = next(model.parameters()).device
    results = [Routed() for _ in encoded]
    group_size = max(1, min(group_size, req.max_rows))
    per_forward = max(1, req.max_rows // group_size)
    pending = list(range(len(encoded)))
    for group in _chunks(list(req.experts_newest_first), group_size):
        if not pending:
            break
        mixed = len(group) > 1
        if not mixed:
            model.set_adapter(group[0])
        still: list[int] = []
        for chunk in _chunks(pending, per_forward):
            # expert-major rows: row = e * len(chunk) + q
            ids, mask = pad_left([encoded[q] for _ in group for q in chunk], tokenizer.pad_token_id, device)
            names = [e for e in group for _ in chunk]
            logits, cache, last = prefill(model, ids, mask, adapter_names=names if mixed else None)
            rows = Rows(names, lambda qi, ei, n=len(chunk): ei * n + qi)
            chosen, rejected = choose_newest(results, chunk, group, rows, logits, req.pos_id, req.thresholds)
            still += rejected
            if req.params is not None:
                continue_chosen(model, tokenizer, results, chosen, names, cache, mask, last, req.params, req.pos_id,
                                req.stop_id, req.block_ids, mixed=mixed)
        pending = sorted(still)
    return results


def _repeat_cache(cache, times: int):
    """Each row repeated ``times`` times in a row (query-major)."""
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        lay = copy.copy(layer)
        lay.keys = layer.keys.repeat_interleave(times, dim=0)
        lay.values = layer.values.repeat_interleave(times, dim=0)
        new.layers.append(lay)
    return new


@torch.no_grad()
def _alora_layout(model, tokenizer, encoded, req: RouteRequest, invocation: Sequence[int]) -> list[Routed]:
    device = next(model.parameters()).device
    experts = list(req.experts_newest_first)
    inv = list(invocation)
    k = len(inv)
    for ids in encoded:
        if list(ids[-k:]) != inv:
            raise ValueError("an aLoRA prompt must end with the invocation tokens; encode it with PromptFormat")
    results = [Routed() for _ in encoded]
    n_exp = len(experts)
    # query-major rows (row = q * n_exp + e); all experts of one query always go together,
    # since the shared prefix is what makes aLoRA routing cheap
    per_forward = max(1, req.max_rows // n_exp)
    for chunk in _chunks(range(len(encoded)), per_forward):
        prefix_ids, prefix_mask = pad_left([encoded[q][:-k] for q in chunk], tokenizer.pad_token_id, device)
        out = model(**model_inputs(model, prefix_ids, prefix_mask, positions(prefix_mask), logits_to_keep=1,
                                   adapter_names=base_rows(len(chunk))))
        cache = _repeat_cache(output_cache(out), n_exp)
        n_rows = len(chunk) * n_exp
        mask = torch.cat([prefix_mask.repeat_interleave(n_exp, dim=0), prefix_mask.new_ones(n_rows, k)], dim=1)
        pos = positions(mask)[:, -k:]
        names = [e for _ in chunk for e in experts]
        out = model(**model_inputs(model, torch.tensor([inv] * n_rows, dtype=torch.long, device=device), mask, pos,
                                   cache, adapter_names=names, logits_to_keep=1))
        rows = Rows(names, lambda qi, ei: qi * n_exp + ei)
        chosen, _ = choose_newest(results, chunk, experts, rows, out.logits[:, -1].float(), req.pos_id,
                                  req.thresholds)
        if req.params is not None:
            continue_chosen(model, tokenizer, results, chosen, names, output_cache(out), mask, pos[:, -1:],
                            req.params, req.pos_id, req.stop_id, req.block_ids)
    return results
