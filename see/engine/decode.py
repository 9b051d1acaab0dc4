"""Prefill and decode: the inference floor every expert, router, fallback and baseline stands on.

We decode with our own loop rather than ``generate`` because routing needs
the first-token distribution of every consulted expert, and the accepting
expert must continue from its own prefill (its KV cache) in the same
generation. :func:`generate` is the one batch loop for plain answering.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    #: 0 means greedy (deterministic).
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    #: Generate exactly max_new_tokens (EOS does not stop): fixed-length runs for serving benchmarks.
    ignore_eos: bool = False


@dataclass
class Decoded:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@functools.lru_cache(maxsize=None)
def _forward_params(cls) -> frozenset:
    return frozenset(inspect.signature(cls.forward).parameters)


def _params(model) -> frozenset:
    model = getattr(model, "module", model)  # DistributedDataParallel under accelerate launch
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_params(type(base))


def cache_kwarg(model) -> str:
    """transformers >= 5 calls the KV cache ``cache``; older releases ``past_key_values``."""
    return "cache" if "cache" in _params(model) else "past_key_values"


def takes_position_ids(model) -> bool:
    return "position_ids" in _params(model)


def output_cache(out):
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def select_cache(cache, rows: torch.Tensor):
    """A new cache holding only ``rows`` (the source cache is left unchanged)."""
    import copy

    new = copy.copy(cache)
    if hasattr(cache, "layers"):
        new.layers = []
        for layer in cache.layers:
            lay = copy.copy(layer)
            lay.keys = layer.keys.index_select(0, rows)
            lay.values = layer.values.index_select(0, rows)
            new.layers.append(lay)
        return new
    return tuple((k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache)  # legacy tuples


def model_inputs(model, ids, mask, pos, cache=None, **extra) -> dict:
    kw = {"input_ids": ids, "attention_mask": mask, "use_cache": True,
          **{k: v for k, v in extra.items() if v is not None}}
    if takes_position_ids(model):
        kw["position_ids"] = pos
    if cache is not None:
        kw[cache_kwarg(model)] = cache
    return kw


@torch.no_grad()
def prefill(model, ids, mask, **extra):
    """Forward the prompts; -> (last-position logits in float32, cache, last positions)."""
    pos = positions(mask)
    out = model(**model_inputs(model, ids, mask, pos, logits_to_keep=1, **extra))
    return out.logits[:, -1].float(), output_cache(out), pos[:, -1:]


def _choose(logits: torch.Tensor, params: SamplingParams, generator) -> torch.Tensor:
    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < params.top_p
        keep[..., 0] = True  # the most likely token always stays: top_p=0 means greedy, not an empty set
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def decode(model, tokenizer, cache, mask: torch.Tensor, last_pos: torch.Tensor, first: torch.Tensor | None,
           first_logits: torch.Tensor | None, params: SamplingParams, stop_id: int,
           block_ids: Sequence[int] = (), extra_fn=None) -> list[Decoded]:
    """Continue a prefilled batch.

    Either ``first`` holds a token to feed before answering (the ``<<pos>>``
    an expert said) or ``first_logits`` holds the prefill's last logits to
    sample the first answer token from (the fallback). ``extra_fn(step)``
    returns extra forward kwargs (adapter names, aLoRA offsets).
    """
    device = mask.device
    n = mask.shape[0]
    generator = None
    if params.temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(params.seed if params.seed is not None else torch.seed() % (2 ** 63))
    block = torch.tensor(list(block_ids), dtype=torch.long, device=device)
    out_ids: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    reasons = ["length"] * n
    texts: list[str | None] = [None] * n  # set when a stop string cut the text
    step = 0

    def pick(logits):
        if len(block):
            logits = logits.clone()
            logits[:, block] = float("-inf")
        return _choose(logits, params, generator)

    if first is not None:
        token = first.to(device)
    else:
        token = pick(first_logits)
        step_tokens = token
        _append(out_ids, step_tokens, done, stop_id, reasons, tokenizer, params, texts)
        if params.max_new_tokens <= 1:
            return [_decoded(tokenizer, ids, texts[i], reasons[i]) for i, ids in enumerate(out_ids)]
    budget = params.max_new_tokens - (0 if first is not None else 1)
    for _ in range(budget):
        if bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(n, 1)], dim=-1)
        last_pos = last_pos + 1
        extra = extra_fn(step) if extra_fn else {}
        out = model(**model_inputs(model, token.view(n, 1), mask, last_pos, cache, **extra))
        cache = output_cache(out)
        token = pick(out.logits[:, -1].float())
        token = torch.where(done, torch.full_like(token, stop_id), token)
        _append(out_ids, token, done, stop_id, reasons, tokenizer, params, texts)
        step += 1
    return [_decoded(tokenizer, ids, texts[i], reasons[i]) for i, ids in enumerate(out_ids)]


def _decoded(tokenizer, ids, text, reason) -> Decoded:
    if text is None:
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return Decoded(ids, text, reason)


def _append(out_ids, token, done, stop_id, reasons, tokenizer, params, texts):
    for i, t in enumerate(token.tolist()):
        if done[i]:
            continue
        if t == stop_id and not params.ignore_eos:
            done[i] = True
            reasons[i] = "stop"
            continue
        out_ids[i].append(t)
        if params.stop:
            text = tokenizer.decode(out_ids[i], skip_special_tokens=True)
            cut = min((text.find(s) for s in params.stop if s and s in text), default=-1)
            if cut >= 0:
                texts[i] = text[:cut].strip()
                done[i] = True
                reasons[i] = "stop"


def is_alora(model) -> bool:
    """Whether a PEFT model's adapters are activated LoRA (they switch on at an invocation sequence)."""
    configs = getattr(model, "peft_config", {}) or {}
    return any(getattr(c, "alora_invocation_tokens", None) for c in configs.values())


@torch.no_grad()
def generate(model, prompt, encoded: Sequence[Sequence[int]], params: SamplingParams, *, batch_size: int = 32,
             first_token: int | None = None, block_ids: Sequence[int] = (),
             adapter_names: Sequence[str] | None = None) -> list[Decoded]:
    """Answer encoded prompts in batches: prefill, then decode.

    ``prompt`` is the model's :class:`see.prompt.PromptFormat`. ``first_token``
    is fed before answering (an expert's ``<<pos>>``); without it the first
    answer token comes from the prefill. ``adapter_names`` picks each row's
    adapter on a :class:`see.engine.multilora.MultiLoraModel`.
    """
    device = next(model.parameters()).device
    tokenizer = prompt.tokenizer
    out: list[Decoded] = []
    for i in range(0, len(encoded), batch_size):
        ids, mask = pad_left(encoded[i:i + batch_size], tokenizer.pad_token_id, device)
        n = ids.shape[0]
        extra: dict = {}
        if adapter_names is not None:
            extra["adapter_names"] = list(adapter_names[i:i + batch_size])
        logits, cache, last = prefill(model, ids, mask, **extra)
        if is_alora(model) and not getattr(model, "supplies_alora_offsets", False):
            # a one-token decode step holds no invocation sequence for PEFT to find: keep the adapter on
            extra["alora_offsets"] = [1] * n
        first = None if first_token is None else torch.full((n,), first_token, dtype=torch.long, device=device)
        out += decode(model, tokenizer, cache, mask, last, first, None if first is not None else logits, params,
                      prompt.stop_id, block_ids, extra_fn=lambda step, kw=extra: kw)
    return out
