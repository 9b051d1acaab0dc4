"""The general fallback model: answers the queries every expert rejected.

By default it is the base model with adapters disabled; ``see init
--fallback MODEL`` names another local model, which then gets the plain prompt
with its own tokenizer.
"""
from __future__ import annotations

from typing import Sequence

import torch

from see.routing.decode import Decoded, SamplingParams, decode, encode_prompts, pad_left, prefill, prompt_limit
from see.routing.runner import Runner, base_rows


class Fallback:
    def __init__(self, model, tokenizer, *, separate: bool, block_ids: Sequence[int] = (), name: str = "base",
                 template: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.separate = separate
        self.block_ids = list(block_ids)
        self.name = name
        self.template = template  # the ensemble's template when the fallback shares its tokenizer
        # the ensemble's own model behind a Runner: turn its adapters off row by row
        self.adapters_off = isinstance(model, Runner)

    @torch.no_grad()
    def answer(self, prompts: Sequence[str], params: SamplingParams, batch_size: int = 32) -> list[Decoded]:
        from see.experts.training import stop_token_id

        if not prompts:
            return []
        device = next(self.model.parameters()).device
        enc = encode_prompts(self.tokenizer, prompts, None if self.separate else self.template,
                             prompt_limit(self.model, params.max_new_tokens))
        out: list[Decoded] = []
        for i in range(0, len(enc), batch_size):
            ids, mask = pad_left(enc[i:i + batch_size], self.tokenizer.pad_token_id, device)
            # the ensemble's own base: every row with adapters off
            extra = {"adapter_names": base_rows(len(ids))} if self.adapters_off else {}
            logits, cache, last = prefill(self.model, ids, mask, **extra)
            out += decode(self.model, self.tokenizer, cache, mask, last, None, logits, params,
                          stop_token_id(self.tokenizer), self.block_ids, extra_fn=lambda step, kw=extra: kw)
        return out
