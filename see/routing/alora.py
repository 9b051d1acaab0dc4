"""Batched routing for activated-LoRA experts: one base prefill shared by every expert.

An aLoRA expert leaves every token before its invocation sequence (the
template's tail, e.g. "\\nAnswer:") to the base model, so the query's KV cache
is the same for all experts. Routing is then one base prefill of the query,
plus one short forward over the invocation tokens per expert (all experts as
rows of a single mixed-adapter forward over that shared cache). The accepting
expert continues decoding from its own row of that cache.
"""
from __future__ import annotations

from typing import Sequence

import torch

from see.routing.cascade import Routed
from see.routing.decode import (SamplingParams, decision, decode, model_inputs, output_cache, pad_left, positions,
                                select_cache)
from see.routing.runner import base_rows


def _repeat_cache(cache, times: int):
    """Each row repeated ``times`` times in a row (query-major)."""
    import copy

    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        lay = copy.copy(layer)
        lay.keys = layer.keys.repeat_interleave(times, dim=0)
        lay.values = layer.values.repeat_interleave(times, dim=0)
        new.layers.append(lay)
    return new


@torch.no_grad()
def route_alora(model, tokenizer, encoded: Sequence[Sequence[int]], experts_newest_first: Sequence[str], *,
                pos_id: int, thresholds: dict[str, float | None], params: SamplingParams | None, stop_id: int,
                block_ids: Sequence[int], invocation: Sequence[int], max_rows: int = 256) -> list[Routed]:
    """``model`` is a :class:`see.routing.runner.Runner` (it supplies the aLoRA offsets)."""
    device = next(model.parameters()).device
    experts = list(experts_newest_first)
    k = len(invocation)
    inv = list(invocation)
    for ids in encoded:
        if list(ids[-k:]) != inv:
            raise ValueError("an aLoRA prompt must end with the invocation tokens; encode it with encode_prompt")
    results = [Routed() for _ in encoded]
    n_exp = len(experts)
    # rows are query-major (row = q * n_exp + e); when all experts of one query exceed max_rows,
    # they still go together: the shared prefix is what makes aLoRA routing cheap
    per_forward = max(1, max_rows // n_exp)
    for start in range(0, len(encoded), per_forward):
        chunk = list(range(start, min(len(encoded), start + per_forward)))
        prefix_ids, prefix_mask = pad_left([encoded[q][:-k] for q in chunk], tokenizer.pad_token_id, device)
        out = model(**model_inputs(model, prefix_ids, prefix_mask, positions(prefix_mask), logits_to_keep=1,
                                   adapter_names=base_rows(len(chunk))))
        cache = _repeat_cache(output_cache(out), n_exp)
        rows = len(chunk) * n_exp
        mask = torch.cat([prefix_mask.repeat_interleave(n_exp, dim=0),
                          prefix_mask.new_ones(rows, k)], dim=1)
        pos = positions(mask)[:, -k:]
        inv_ids = torch.tensor([inv] * rows, dtype=torch.long, device=device)
        names = [e for _ in chunk for e in experts]
        out = model(**model_inputs(model, inv_ids, mask, pos, cache, adapter_names=names, logits_to_keep=1))
        cache = output_cache(out)
        logits = out.logits[:, -1].float()
        p_pos, accept = decision(logits, pos_id, None)
        for r, name in enumerate(names):
            thr = thresholds.get(name)
            if thr is not None:
                accept[r] = bool(p_pos[r] >= thr)
        chosen = []
        for qi, q in enumerate(chunk):
            for ei, name in enumerate(experts):  # newest first
                r = qi * n_exp + ei
                results[q].scores[name] = float(p_pos[r])
                if accept[r]:
                    results[q].expert = name
                    chosen.append((r, q))
                    break
        if params is not None and chosen:
            sel = torch.tensor([r for r, _ in chosen], device=device)
            row_names = [names[r] for r, _ in chosen]
            first = torch.full((len(sel),), pos_id, dtype=torch.long, device=device)
            extra = {"adapter_names": row_names}
            decoded = decode(model, tokenizer, select_cache(cache, sel), mask[sel], pos[sel, -1:], first, None,
                             params, stop_id, block_ids, extra_fn=lambda step: extra)
            for d, (_, q) in zip(decoded, chosen):
                results[q].decoded = d
    return results
