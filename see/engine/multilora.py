"""Forward calls for serving, with an adapter chosen per row, at a cost that stays flat as experts grow.

PEFT mixes adapters in one batch through ``adapter_names``. It splits the
batch by adapter in every LoRA layer: two index operations and two small
matmuls per adapter, per layer. Every call to ``PeftModel.forward`` also
walks all modules to register and remove hooks. With N experts that is N
times the per-layer work, whatever the rows hold.

A :class:`MultiLoraModel` keeps PEFT's adapters, and their weights and semantics,
but computes a mixed batch the way multi-LoRA servers do (S-LoRA, punica):
- every expert's A and B matrices are stacked once, at load;
- each LoRA layer adds ``B[idx] @ A[idx] @ x`` for all rows in two batched
  matmuls, where ``idx`` is each row's expert;
- the indicator tokens' embedding and output rows are swapped in per row in
  the same way;
- the base layers run with PEFT's adapters switched off.
Expert ``"__base__"`` is a zero adapter (the base model).

For aLoRA experts the model also supplies the activation offsets: every
prompt ends with the invocation tokens, so a forward over ``T`` new tokens
adapts its last ``min(T, k)`` positions (the invocation in a prefill, the new
token in a decode step).

Anything the fast path does not cover (DoRA, LoRA biases, other adapter
types) falls back to PEFT's own mixed-batch forward.
"""
from __future__ import annotations

import threading
from typing import Sequence

import torch

BASE = "__base__"


class _StackedLora:
    """All experts' LoRA matrices of one layer, stacked; slot E is the zero (base) adapter."""

    def __init__(self, layer, adapters: Sequence[str]):
        ranks = [layer.lora_A[a].weight.shape[0] for a in adapters if a in layer.lora_A]
        r = max(ranks)
        ref = next(layer.lora_A[a].weight for a in adapters if a in layer.lora_A)
        d_in = ref.shape[1]
        d_out = next(layer.lora_B[a].weight for a in adapters if a in layer.lora_B).shape[0]
        A = torch.zeros(len(adapters) + 1, d_in, r, dtype=ref.dtype, device=ref.device)
        B = torch.zeros(len(adapters) + 1, r, d_out, dtype=ref.dtype, device=ref.device)
        with torch.no_grad():
            for e, a in enumerate(adapters):
                if a not in layer.lora_A:
                    continue
                a_w = layer.lora_A[a].weight  # (r_e, d_in)
                b_w = layer.lora_B[a].weight * layer.scaling[a]  # (d_out, r_e)
                A[e, :, : a_w.shape[0]] = a_w.t()
                B[e, : a_w.shape[0], :] = b_w.t()
        self.A, self.B = A, B

    def delta(self, x: torch.Tensor, idx: torch.Tensor, groups: int | None, first: int) -> torch.Tensor:
        shape = x.shape
        x = x.to(self.A.dtype)
        if groups == 1:  # one expert for every row: two plain matmuls
            return (x @ self.A[first]) @ self.B[first]
        x3 = x.reshape(shape[0], -1, shape[-1])
        if groups:  # rows come in `groups` equal, contiguous blocks of one expert each
            g_idx = idx.view(groups, -1)[:, 0]
            xs = x3.reshape(groups, -1, shape[-1])
            out = torch.bmm(torch.bmm(xs, self.A[g_idx]), self.B[g_idx])
        else:
            out = torch.bmm(torch.bmm(x3, self.A[idx]), self.B[idx])
        return out.reshape(*shape[:-1], -1)


class _StackedTokens:
    """Each expert's rows of the indicator tokens, for an embedding or an output layer."""

    def __init__(self, wrapper, adapters: Sequence[str]):
        layer = wrapper.token_adapter
        original = wrapper.original_module
        weight = original.weight
        token_ids = None
        for a in adapters:
            if a in layer.token_indices:
                token_ids = list(layer.token_indices[a])
                break
        self.token_ids = token_ids or []
        self.is_embedding = isinstance(original, torch.nn.Embedding)
        n = len(self.token_ids)
        rows = weight[self.token_ids].detach().clone().unsqueeze(0).repeat(len(adapters) + 1, 1, 1)
        with torch.no_grad():
            for e, a in enumerate(adapters):
                if a in layer.token_indices:
                    if list(layer.token_indices[a]) != self.token_ids:
                        raise ValueError("experts train different token rows")
                    rows[e] = layer.trainable_tokens_delta[a].detach().to(rows)
        self.rows = rows  # (E + 1, n, d)
        self.scale = getattr(original, "embed_scale", None)
        bias = getattr(original, "bias", None)
        self.bias = bias[self.token_ids].detach() if bias is not None and n else None
        self.cols = torch.tensor(self.token_ids, dtype=torch.long, device=weight.device)

    def patch(self, inp: torch.Tensor, out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if not self.token_ids:
            return out
        if self.is_embedding:
            for j, tok in enumerate(self.token_ids):
                hit = inp == tok
                if hit.any():
                    row_ids = idx.view(-1, *([1] * (inp.dim() - 1))).expand_as(inp)[hit]
                    value = self.rows[row_ids, j].to(out.dtype)
                    if self.scale is not None:
                        value = value * self.scale.to(out.dtype)
                    out[hit] = value
            return out
        # output layer: recompute the indicator tokens' logits with each row's expert rows
        h = inp.reshape(inp.shape[0], -1, inp.shape[-1])
        logits = torch.bmm(h.to(self.rows.dtype), self.rows[idx].transpose(1, 2))  # (R, T, n)
        if self.bias is not None:
            logits = logits + self.bias
        out = out.clone() if out.is_inference() is False and out.requires_grad else out
        out[..., self.cols] = logits.reshape(*out.shape[:-1], -1).to(out.dtype)
        return out


class MultiLoraModel:
    """A PEFT model with several adapters whose forward takes an adapter name per row."""

    #: aLoRA activation offsets come from the invocation length, not from the caller.
    supplies_alora_offsets = True

    def __init__(self, peft_model, invocation_length: int = 0):
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import AuxiliaryTrainingWrapper, TrainableTokensWrapper

        self.peft_model = peft_model
        self.base = peft_model.get_base_model()
        self.invocation_length = invocation_length
        self.adapters = list(peft_model.peft_config)
        self.index = {a: e for e, a in enumerate(self.adapters)}
        self.index[BASE] = len(self.adapters)
        self._state = threading.local()
        self._handles = []
        self._toggled = []
        lora_layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
        wrappers = [m for m in peft_model.modules() if isinstance(m, AuxiliaryTrainingWrapper)]
        self.fast = (all(self._fast_lora_ok(m) for m in lora_layers)
                     and all(isinstance(w, TrainableTokensWrapper) for w in wrappers))
        if self.fast:
            for m in lora_layers:
                if any(a in m.lora_A for a in self.adapters):
                    stacked = _StackedLora(m, self.adapters)
                    self._handles.append(m.register_forward_hook(self._lora_hook(stacked)))
                    self._toggled.append(m)
            for w in wrappers:
                stacked = _StackedTokens(w, self.adapters)
                self._handles.append(w.register_forward_hook(self._tokens_hook(stacked)))
                self._toggled.append(w)
        else:
            for m in lora_layers + wrappers:
                self._handles.append(m.register_forward_pre_hook(self._inject, with_kwargs=True))

    def _fast_lora_ok(self, layer) -> bool:
        for a in self.adapters:
            if a not in layer.lora_A:
                continue
            if layer.use_dora.get(a, False) or getattr(layer, "lora_bias", {}).get(a, False):
                return False
            if not isinstance(layer.lora_A[a], torch.nn.Linear):
                return False
        return True

    # ---- fast path hooks
    def _lora_hook(self, stacked: _StackedLora):
        def hook(module, args, output):
            idx = getattr(self._state, "idx", None)
            if idx is None:  # a call that did not come through this wrapper: PEFT's own forward ran
                return output
            st = self._state
            if st.all_base:
                return output
            x = args[0]
            off = st.offset
            if off is None or off >= x.shape[1]:
                return output + stacked.delta(x, idx, st.groups, st.first).to(output.dtype)
            out = output.clone()
            out[:, -off:] += stacked.delta(x[:, -off:], idx, st.groups, st.first).to(output.dtype)
            return out
        return hook

    def _tokens_hook(self, stacked: _StackedTokens):
        def hook(module, args, output):
            idx = getattr(self._state, "idx", None)
            return output if idx is None else stacked.patch(args[0], output, idx)
        return hook

    # ---- PEFT mixed-batch path
    def _inject(self, module, args, kwargs):
        from peft.utils.other import AuxiliaryTrainingWrapper

        names = getattr(self._state, "names", None)
        if names is not None:
            kwargs["adapter_names"] = names
        offsets = getattr(self._state, "offsets", None)
        if offsets is not None and not isinstance(module, AuxiliaryTrainingWrapper):
            kwargs["alora_offsets"] = offsets
        return args, kwargs

    def __call__(self, adapter_names: Sequence[str] | None = None, **inputs):
        ids = inputs["input_ids"]
        rows, width = ids.shape[0], ids.shape[1]
        offset = min(width, self.invocation_length) if self.invocation_length else None
        if not self.fast:
            self._state.names = list(adapter_names) if adapter_names is not None else None
            self._state.offsets = [offset] * rows if offset is not None else None
            try:
                return self.base(**inputs)
            finally:
                self._state.names = self._state.offsets = None
        if adapter_names is None:
            adapter_names = [self.peft_model.active_adapter] * rows
        positions = [self.index[n] for n in adapter_names]
        idx = torch.tensor(positions, dtype=torch.long, device=ids.device)
        self._state.idx = idx
        self._state.offset = offset
        self._state.groups = _equal_blocks(adapter_names)
        self._state.first = positions[0]
        self._state.all_base = all(p == self.index[BASE] for p in positions)
        for m in self._toggled:
            m._disable_adapters = True
        try:
            return self.base(**inputs)
        finally:
            for m in self._toggled:
                m._disable_adapters = False
            self._state.idx = None

    # ---- what the routing code needs from a model
    def get_base_model(self):
        return self.base

    def parameters(self):
        return self.peft_model.parameters()

    def set_adapter(self, name: str) -> None:
        self.peft_model.set_adapter(name)

    @property
    def peft_config(self):
        return self.peft_model.peft_config


def _equal_blocks(names: Sequence[str]) -> int | None:
    """Number of equal contiguous one-expert blocks the rows form (None if they do not)."""
    n = len(names)
    first_change = next((i for i in range(1, n) if names[i] != names[0]), n)
    if first_change == n:
        return 1
    if n % first_change:
        return None
    size = first_change
    for start in range(0, n, size):
        block = names[start:start + size]
        if any(b != block[0] for b in block):
            return None
    return n // size


def base_rows(n: int) -> list[str]:
    """Adapter names that turn every adapter off for ``n`` rows."""
    return [BASE] * n
