"""The general fallback model: answers the queries every expert rejected.

By default it is the base model with adapters disabled; ``see init
--fallback MODEL`` names another local model, which then gets the plain prompt
with its own tokenizer.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from see.routing.decode import Decoded, SamplingParams, decode, encode_prompts, pad_left, prefill


class Fallback:
    def __init__(self, model, tokenizer, *, separate: bool, block_ids: Sequence[int] = (), name: str = "base"):
        self.model = model
        self.tokenizer = tokenizer
        self.separate = separate
        self.block_ids = list(block_ids)
        self.name = name

    def _context(self):
        if not self.separate and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    @torch.no_grad()
    def answer(self, prompts: Sequence[str], params: SamplingParams, batch_size: int = 32) -> list[Decoded]:
        from see.experts.training import stop_token_id

        if not prompts:
            return []
        device = next(self.model.parameters()).device
        enc = encode_prompts(self.tokenizer, prompts)
        out: list[Decoded] = []
        with self._context():
            for i in range(0, len(enc), batch_size):
                ids, mask = pad_left(enc[i:i + batch_size], self.tokenizer.pad_token_id, device)
                logits, cache, last = prefill(self.model, ids, mask)
                out += decode(self.model, self.tokenizer, cache, mask, last, None, logits, params,
                              stop_token_id(self.tokenizer), self.block_ids)
        return out
