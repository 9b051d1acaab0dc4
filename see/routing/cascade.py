"""Newest-first routing, one expert at a time or many experts per forward.

Each expert decides by its first token: ``<<pos>>`` accepts (or P(<<pos>>)
reaches its threshold). A query goes to the newest expert that accepts, and
that expert's answer continues from its own prefill (its KV cache), in the
same generation.

* ``sequential`` (the paper's cascade): one expert per forward; the queries
  it rejects go on to the next older expert. Least memory.
* ``batched``: every expert's decision for a batch of queries comes from one
  mixed-adapter forward (PEFT ``adapter_names`` per row); the newest accepting
  expert then continues from its row of that forward's cache. Rows per forward
  are capped by ``max_rows``: when experts x queries exceeds it, experts go in
  groups, newest group first, exactly like a cascade of groups.

Both give the same decisions and answers: the decision rule is applied to the
same per-expert first-token distribution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from see.routing.decode import Decoded, SamplingParams, decision, decode, pad_left, prefill, select_cache


@dataclass
class Routed:
    """What routing decided for one query."""

    expert: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    decoded: Decoded | None = None


def _groups(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


@torch.no_grad()
def route(model, tokenizer, encoded: Sequence[Sequence[int]], experts_newest_first: Sequence[str], *,
          pos_id: int, thresholds: dict[str, float | None], params: SamplingParams | None, stop_id: int,
          block_ids: Sequence[int], group_size: int, max_rows: int = 256) -> list[Routed]:
    """Route (and, with ``params``, answer) each encoded prompt; ``params=None`` decides only.

    ``model`` is a :class:`see.routing.runner.Runner` over the ensemble's PEFT model.
    """
    device = next(model.parameters()).device
    results = [Routed() for _ in encoded]
    group_size = max(1, min(group_size, max_rows))
    per_forward = max(1, max_rows // group_size)
    pending = list(range(len(encoded)))
    for group in _groups(list(experts_newest_first), group_size):
        if not pending:
            break
        mixed = len(group) > 1
        if not mixed:
            model.set_adapter(group[0])
        still: list[int] = []
        for chunk in _groups(pending, per_forward):
            # rows: expert-major, so row = e * len(chunk) + q
            seqs = [encoded[q] for _ in group for q in chunk]
            ids, mask = pad_left(seqs, tokenizer.pad_token_id, device)
            names = [e for e in group for _ in chunk]
            logits, cache, last = prefill(model, ids, mask, adapter_names=names if mixed else None)
            p_pos, accept = decision(logits, pos_id, None)
            for e_idx, name in enumerate(group):
                thr = thresholds.get(name)
                if thr is not None:
                    sl = slice(e_idx * len(chunk), (e_idx + 1) * len(chunk))
                    accept[sl] = p_pos[sl] >= thr
            chosen_rows = []
            for q_idx, q in enumerate(chunk):
                for e_idx, name in enumerate(group):  # newest first: stop at the first acceptance
                    row = e_idx * len(chunk) + q_idx
                    results[q].scores[name] = float(p_pos[row])
                    if accept[row]:
                        results[q].expert = name
                        chosen_rows.append((row, q))
                        break
                else:
                    still.append(q)
            if params is not None and chosen_rows:
                rows = torch.tensor([r for r, _ in chosen_rows], device=device)
                row_names = [names[r] for r, _ in chosen_rows]
                first = torch.full((len(rows),), pos_id, dtype=torch.long, device=device)
                step_extra = {"adapter_names": row_names if mixed else None}
                decoded = decode(model, tokenizer, select_cache(cache, rows), mask[rows], last[rows], first, None,
                                 params, stop_id, block_ids, extra_fn=lambda step, kw=step_extra: kw)
                for d, (_, q) in zip(decoded, chosen_rows):
                    results[q].decoded = d
        pending = sorted(still)
    return results


def route_sequential(model, tokenizer, encoded, experts_newest_first, **kwargs) -> list[Routed]:
    return route(model, tokenizer, encoded, experts_newest_first, group_size=1, **kwargs)


def route_batched(model, tokenizer, encoded, experts_newest_first, kind: str = "lora",
                  invocation: Sequence[int] = (), **kwargs) -> list[Routed]:
    if kind == "alora":
        from see.routing.alora import route_alora

        return route_alora(model, tokenizer, encoded, experts_newest_first, invocation=invocation, **kwargs)
    return route(model, tokenizer, encoded, experts_newest_first, group_size=len(experts_newest_first), **kwargs)
