"""The Sequential Ensemble of Experts as a Python object: it loads and serves, and never writes.

    from see import Ensemble
    ens = Ensemble.load("my-ensemble")
    results = ens.generate(["query 1", "query 2"], max_new_tokens=64)
    results[0].answer, results[0].expert, results[0].scores

The writers (``init_ensemble``, ``add_expert``, ``calibrate``) live in
:mod:`see.lifecycle`.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Sequence

import torch

from see.data import Task
from see.engine.decode import SamplingParams
from see.engine.multilora import MultiLoraModel
from see.errors import ConfigError, StoreError
from see.loading import load_base, prompt_format
from see.metrics import FALLBACK, SCORERS, score_answers
from see.modeling import load_causal_lm, load_tokenizer, model_context
from see.prompt import PromptFormat, Query
from see.routing.fallback import Fallback
from see.routing.layouts import RouteRequest, route
from see.results import GenerationResult, RouteDecision
from see.routing.rule import Routed, expert_thresholds
from see.vllm_engine import VllmEnsemble
from see.store import EnsembleStore, Manifest


def _adapter_problem(exc: Exception) -> str:
    """The cause of an adapter that does not load, in words: a wrong shape keeps its sizes (PEFT puts them
    after a long preamble), an unreadable file says so instead of "no such file"."""
    if isinstance(exc, PermissionError) or isinstance(exc.__cause__, PermissionError) or "Permission denied" in str(exc):
        return "permission denied while reading its files"
    text = str(exc)
    shapes = [line.strip() for line in text.splitlines() if "size mismatch" in line or "shape" in line]
    if shapes:
        return f"its weights do not fit this base model ({'; '.join(shapes[:2])[:400]})"
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


#: Fewest prompt tokens a query keeps: ``max_new_tokens`` may not take the context below this.
MIN_PROMPT_TOKENS = 32


class Ensemble:
    """A loaded ensemble: the base, every expert's adapter, and the fallback."""

    def __init__(self, store: EnsembleStore, manifest: Manifest, model, prompt: PromptFormat, fallback: Fallback,
                 device: torch.device, multilora: MultiLoraModel | None = None):
        self.store = store
        self.manifest = manifest
        self.model = model
        self.prompt = prompt
        self.tokenizer = prompt.tokenizer
        self.fallback = fallback
        self.device = device
        self.multilora = multilora
        self._lock = threading.RLock()

    # -- loading
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, engine: str = "torch",
             **engine_args) -> "Ensemble | VllmEnsemble":
        """Load the ensemble at ``path``. ``engine="vllm"`` serves it on vLLM instead (``see.vllm_engine``):
        the same rule and answers, with vLLM's multi-LoRA batching; ``engine_args`` go to ``vllm.LLM``."""
        from peft import PeftModel

        if engine == "vllm":
            return VllmEnsemble.load(path, **engine_args)
        if engine != "torch":
            raise ConfigError(f"unknown engine {engine!r}; choose torch or vllm", field="engine")
        store = EnsembleStore(path)
        manifest = store.read()
        device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_base(store, manifest)
        prompt = prompt_format(manifest, tokenizer, model)
        for k, rec in enumerate(manifest.experts):
            adapter = str(store.root / rec.path)
            trained_on = rec.extra.get("base_fingerprint")
            if trained_on and trained_on != manifest.base.fingerprint:
                raise StoreError(f"expert '{rec.name}' was trained on another base model (fingerprint {trained_on}, "
                                 f"this ensemble's base is {manifest.base.fingerprint})",
                                 file=store.manifest_path, field=f"experts.{rec.name}.base_fingerprint")
            try:
                if k == 0:
                    model = PeftModel.from_pretrained(model, adapter, adapter_name=rec.name)
                else:
                    model.load_adapter(adapter, adapter_name=rec.name)
            except Exception as exc:  # noqa: BLE001 - a damaged adapter is the user's file
                raise StoreError(f"cannot load expert '{rec.name}': {_adapter_problem(exc)}", file=adapter) from None
        model.to(device).eval()
        multilora = None
        if manifest.experts:
            alora = manifest.model.expert_kind == "alora"
            multilora = MultiLoraModel(model, len(prompt.invocation_ids()) if alora else 0)
        if manifest.fallback:
            settings = manifest.model
            fb_tok = load_tokenizer(manifest.fallback, settings.trust_remote_code)
            fb_model = load_causal_lm(manifest.fallback, settings.dtype, settings.trust_remote_code,
                                      settings.allow_pickle, device=device)
            fallback = Fallback(fb_model, PromptFormat(fb_tok, None, model_context(fb_model)),
                                name=manifest.fallback)
        else:
            fallback = Fallback(multilora or model, prompt, block_ids=manifest.indicator.ids)
        return cls(store, manifest, model, prompt, fallback, device, multilora)

    # -- properties
    @property
    def experts(self) -> list[str]:
        """Expert names in the order they were added (oldest first)."""
        return [e.name for e in self.manifest.experts]

    @property
    def indicator(self):
        return self.manifest.indicator

    def thresholds(self, threshold: float | None = None) -> dict[str, float | None]:
        """Each expert's acceptance threshold on P(<<pos>>); None means argmax (see ``expert_thresholds``)."""
        return expert_thresholds(self.manifest, threshold)

    def prompt_for(self, query: Query) -> str:
        """The prompt text the experts were trained on, for any accepted query form."""
        return self.prompt.text(query)

    # -- routing and generation
    def _route(self, encoded: list[list[int]], params: SamplingParams | None, threshold: float | None,
               mode: str | None) -> list[Routed]:
        mode = mode or self.manifest.routing.mode
        if mode not in ("batched", "sequential"):
            raise ConfigError(f"routing mode must be 'batched' or 'sequential', got {mode!r}", field="routing.mode")
        request = RouteRequest(list(reversed(self.experts)), self.indicator.pos_id, self.thresholds(threshold), params,
                               self.prompt.stop_id, self.indicator.ids, int(self.manifest.routing.max_rows_per_forward))
        alora = self.manifest.model.expert_kind == "alora"
        return route(self.multilora, self.tokenizer, encoded, request, kind=self.manifest.model.expert_kind, mode=mode,
                     invocation=self.prompt.invocation_ids() if alora and self.experts else ())

    def generate(self, queries: Sequence[Query] | Query, max_new_tokens: int | None = None, *,
                 temperature: float = 0.0, top_p: float = 1.0, stop: Sequence[str] = (), seed: int | None = None,
                 threshold: float | None = None, mode: str | None = None,
                 ignore_eos: bool = False) -> list[GenerationResult]:
        """Answer each query: the newest expert that says ``<<pos>>`` answers, else the fallback.

        ``ignore_eos`` generates exactly ``max_new_tokens`` (for fixed-length serving benchmarks).
        """
        if isinstance(queries, (str, dict)):
            queries = [queries]
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}", field="threshold")
        if not 0.0 <= top_p <= 1.0 or temperature < 0:
            raise ConfigError("temperature must be >= 0 and top_p in [0, 1]", field="sampling")
        texts = [self.prompt.text(q) for q in queries]
        if max_new_tokens is None:
            max_new_tokens = int(self.manifest.routing.max_new_tokens)
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}", field="max_new_tokens")
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                stop=tuple(stop), seed=seed, ignore_eos=ignore_eos)
        whole = self.prompt.encode_all(texts)  # once, uncut: the cut below is what encode would do
        full = [len(ids) for ids in whole]
        encoded = [self.prompt.truncate(ids, self.prompt.limit(max_new_tokens)) for ids in whole]
        cut = [k for k, (ids, n) in enumerate(zip(encoded, full)) if len(ids) < n]
        if cut:
            k = cut[0]
            what = (f"{len(cut)} quer{'y is' if len(cut) == 1 else 'ies are'} longer than the model's "
                    f"{self.prompt.context}-token context leaves with max_new_tokens={max_new_tokens} (query {k + 1}: "
                    f"{full[k]} tokens, room for {len(encoded[k])})")
            if self.prompt.limit(max_new_tokens) < MIN_PROMPT_TOKENS:
                # cut to a handful of tokens, the query routing judges is another one
                raise ConfigError(what, field="max_new_tokens",
                                  hint=f"lower max_new_tokens to at most {max(1, self.prompt.context - 1 - full[k])}")
            warnings.warn(what + "; they keep only their last tokens", stacklevel=2)
        with self._lock, torch.no_grad():
            routed = self._route(encoded, params, threshold, mode)
            rest = [k for k, r in enumerate(routed) if r.expert is None]
            for k, d in zip(rest, self.fallback.answer([texts[k] for k in rest], params)):
                routed[k].decoded = d
        return [GenerationResult(query=q if isinstance(q, str) else t, answer=r.decoded.text, expert=r.expert,
                                 scores=r.scores, prompt_tokens=len(ids),
                                 completion_tokens=len(r.decoded.token_ids) + (r.expert is not None),
                                 finish_reason=r.decoded.finish_reason)
                for q, t, ids, r in zip(queries, texts, encoded, routed)]

    def route(self, queries: Sequence[Query] | Query, *, threshold: float | None = None,
              mode: str | None = None) -> list[RouteDecision]:
        """Routing decisions only: which expert would answer, and every consulted expert's P(<<pos>>)."""
        if isinstance(queries, (str, dict)):
            queries = [queries]
        texts = [self.prompt.text(q) for q in queries]
        encoded = self.prompt.encode_all(texts, 1)
        with self._lock, torch.no_grad():
            routed = self._route(encoded, None, threshold, mode)
        return [RouteDecision(q if isinstance(q, str) else t, r.expert, r.scores)
                for q, t, r in zip(queries, texts, routed)]

    def evaluate(self, task: Task, max_new_tokens: int | None = None, batch_size: int = 32,
                 scorer: str = "exact_match", progress: bool = False) -> dict:
        """Score ``task`` through the whole ensemble: accuracy and where its queries were routed."""
        from tqdm.auto import tqdm

        if scorer not in SCORERS:
            raise ConfigError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}", field="scorer")
        if max_new_tokens is None:
            longest = max(len(self.prompt.answer_ids(a)) for ex in task.examples for a in ex.outputs)
            max_new_tokens = longest + 2
        queries = [{"instruction": task.instruction, "input": ex.input} for ex in task.examples]
        results: list[GenerationResult] = []
        for i in tqdm(range(0, len(queries), batch_size), disable=not progress, desc=f"eval {task.name}", leave=False):
            results += self.generate(queries[i:i + batch_size], max_new_tokens=max_new_tokens)
        scores = score_answers([r.answer for r in results], task.examples, scorer)
        routed: dict[str, int] = {}
        for r in results:
            key = r.expert if r.expert is not None else FALLBACK
            routed[key] = routed.get(key, 0) + 1
        return {"task": task.name, "examples": len(task), "metric": scorer,
                "score": sum(scores) / max(1, len(scores)),
                "routed": {k: v / len(results) for k, v in sorted(routed.items())},
                "results": results}
