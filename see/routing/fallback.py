"""The general fallback model: answers the queries every expert rejected.

By default it is the base model with adapters disabled; ``see init
--fallback MODEL`` names another local model, which then gets the ensemble's
prompt text, tokenized by its own tokenizer.
"""
from __future__ import annotations

from typing import Sequence

from see.engine.decode import Decoded, SamplingParams, generate
from see.engine.multilora import MultiLoraModel, base_rows
from see.prompt import PromptFormat


class Fallback:
    def __init__(self, model, prompt: PromptFormat, *, block_ids: Sequence[int] = (), name: str = "base"):
        self.model = model
        self.prompt = prompt
        self.block_ids = list(block_ids)
        self.name = name
        # the ensemble's own model: every row with its adapters off
        self.adapters_off = isinstance(model, MultiLoraModel)

    @property
    def separate(self) -> bool:
        """A model of its own (``see init --fallback``), rather than the ensemble's base."""
        return self.prompt.template is None

    def answer(self, texts: Sequence[str], params: SamplingParams, batch_size: int = 32) -> list[Decoded]:
        if not texts:
            return []
        encoded = self.prompt.encode_all(texts, params.max_new_tokens)
        names = base_rows(len(encoded)) if self.adapters_off else None
        return generate(self.model, self.prompt, encoded, params, batch_size=batch_size, block_ids=self.block_ids,
                        adapter_names=names)
