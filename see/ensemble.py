"""The Sequential Ensemble of Experts as a Python object.

    from see import Ensemble
    ens = Ensemble.load("my-ensemble")
    results = ens.generate(["query 1", "query 2"], max_new_tokens=64)
    results[0].answer, results[0].expert, results[0].scores

``init_ensemble`` creates an ensemble directory; ``add_expert`` grows it by
one expert, atomically; ``Ensemble.load`` serves it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig

from see import __version__
from see.config import ENSEMBLE_SECTIONS, load_config, to_dict
from see.data import Task, encode_prompt, format_prompt, load_queries, template_tail
from see.embedded import EMBEDDED
from see.errors import ConfigError, DataError, StoreError
from see.experts.reconstruction import RehearsalBuffer, TrainingExample, count_by_origin, reconstruct_task
from see.modeling import (add_indicator_tokens, base_fingerprint, fit_embeddings, load_causal_lm, load_tokenizer,
                          quiet_transformers, resolve_model_ref)
from see.routing.cascade import Routed, route_batched, route_sequential
from see.routing.decode import SamplingParams, prompt_limit
from see.routing.fallback import Fallback
from see.store import (STAGING, EnsembleStore, ExpertRecord, Manifest, fault_point, file_sha256, now, validate_name,
                       write_jsonl)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class GenerationResult:
    """One query's answer and how it was routed."""

    query: str
    answer: str
    #: The expert that answered, or None when the fallback answered.
    expert: str | None
    #: P(<<pos>>) of each consulted expert.
    scores: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"

    def to_json(self) -> dict:
        return {"query": self.query, "answer": self.answer, "expert": self.expert,
                "scores": {k: round(v, 6) for k, v in self.scores.items()},
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "finish_reason": self.finish_reason}


@dataclass
class RouteDecision:
    query: str
    expert: str | None
    scores: dict[str, float] = field(default_factory=dict)


Query = Any  # str, {"instruction": ..., "input": ...}, or chat messages [{"role":..., "content":...}]


# ----------------------------------------------------------------------------- init

def _stored_ref(info: dict) -> str:
    """Named bases stay names (their files move with the package); local dirs become absolute paths."""
    from see.modeling import NAMED_BASES

    if info["ref"] == EMBEDDED or info["ref"] in NAMED_BASES or not info["local"]:
        return info["ref"]
    return info["path"]


def init_ensemble(path: str | Path, base: str | None = None, fallback: str | None = None,
                  config: str | Path | None = None, overrides: Sequence[str] = (), log: Log = _stderr) -> Manifest:
    """Create an ensemble directory: tokenizer with the indicator tokens, and an empty manifest."""
    root = Path(path)
    store = EnsembleStore(root)
    cfg = load_config(config, overrides)
    if base is not None:
        cfg.model.base = base
    if fallback is not None:
        cfg.model.fallback = fallback
    if root.exists() and not root.is_dir():
        raise StoreError("exists and is not a directory", file=root)
    if store.exists():
        raise StoreError("already an ensemble (manifest.json exists)", file=root,
                         hint="pick a new directory, or add experts to this one with see add-expert")
    if root.is_dir() and any(p.name not in ("tokenizer", STAGING, ".lock") for p in root.iterdir()):
        raise StoreError("directory is not empty", file=root, hint="see init needs a new or empty directory")
    quiet_transformers()
    base_info = resolve_model_ref(cfg.model.base)
    tokenizer = load_tokenizer(base_info, cfg.model.trust_remote_code)
    model = load_causal_lm(base_info, "float32", cfg.model.trust_remote_code, cfg.model.allow_pickle)
    base_vocab = model.get_input_embeddings().weight.shape[0]
    fingerprint = base_fingerprint(model)
    fallback_info = None
    if cfg.model.fallback:
        fb = resolve_model_ref(cfg.model.fallback)
        load_tokenizer(fb, cfg.model.trust_remote_code)
        load_causal_lm(fb, "float32", cfg.model.trust_remote_code, cfg.model.allow_pickle)
        fallback_info = {"ref": _stored_ref(fb)}
    pos_id, neg_id = add_indicator_tokens(tokenizer, cfg.prompt.pos_token, cfg.prompt.neg_token)
    root.mkdir(parents=True, exist_ok=True)
    with store.lock():
        if store.exists():
            raise StoreError("already an ensemble (manifest.json exists)", file=root)
        staged = root / STAGING / "init-tokenizer"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        tokenizer.save_pretrained(staged)
        shutil.rmtree(store.tokenizer_dir, ignore_errors=True)
        os.rename(staged, store.tokenizer_dir)
        shutil.rmtree(root / STAGING, ignore_errors=True)
        manifest = Manifest(
            base={"ref": _stored_ref(base_info),
                  "fingerprint": fingerprint, "model_type": model.config.model_type, "vocab_size": base_vocab},
            fallback=fallback_info,
            settings={**to_dict(cfg, ENSEMBLE_SECTIONS), "routing": to_dict(cfg)["routing"]},
            indicator={"pos": cfg.prompt.pos_token, "neg": cfg.prompt.neg_token, "pos_id": pos_id, "neg_id": neg_id},
            see_version=__version__,
        )
        store.write(manifest)
    log(f"initialised ensemble {root} on base '{manifest.base['ref']}' "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    return manifest


# ----------------------------------------------------------------------------- shared loading

def _stored_config(manifest: Manifest) -> dict:
    return {k: v for k, v in manifest.settings.items() if k in ("model", "prompt", "routing")}


def expert_config(manifest: Manifest, config: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Defaults <- the ensemble's stored settings <- the user's YAML and overrides.

    The ``model`` and ``prompt`` sections are fixed at init: changing them per
    expert would make experts see different prompts.
    """
    stored = _stored_config(manifest)
    cfg = load_config(config, overrides, base=stored)
    for section in ENSEMBLE_SECTIONS:
        if to_dict(cfg)[section] != stored.get(section, to_dict(cfg)[section]):
            changed = [k for k, v in to_dict(cfg)[section].items() if stored[section].get(k) != v]
            raise ConfigError(f"'{section}' settings are fixed for the whole ensemble at see init",
                              file=str(config) if config else "<command line>",
                              field=f"{section}.{changed[0]}" if changed else section)
    return cfg


def load_base_for(store: EnsembleStore, manifest: Manifest, device=None, dtype: str | None = None):
    """The base model and the ensemble's tokenizer, embeddings fitted, fingerprint checked."""
    quiet_transformers()
    settings = manifest.settings.get("model", {})
    tokenizer = load_tokenizer({"ref": "ensemble", "path": str(store.tokenizer_dir), "local": True})
    model = load_causal_lm(manifest.base["ref"], dtype or settings.get("dtype", "auto"),
                           settings.get("trust_remote_code", False), settings.get("allow_pickle", False))
    fingerprint = base_fingerprint(model)
    if manifest.base.get("fingerprint") and fingerprint != manifest.base["fingerprint"]:
        raise StoreError(f"the base model at {manifest.base['ref']!r} is not the one this ensemble was built on "
                         f"(fingerprint {fingerprint} != {manifest.base['fingerprint']})",
                         file=store.manifest_path, field="base.fingerprint")
    fit_embeddings(model, tokenizer)
    if device is not None:
        model.to(device)
    return model, tokenizer


def check_new_expert(store: EnsembleStore, name: str) -> Manifest:
    """The ensemble's manifest, after checking that ``name`` is a valid, unused expert name."""
    manifest = store.read()
    validate_name(name)
    if manifest.expert(name):
        raise StoreError(f"an expert named '{name}' already exists", file=store.manifest_path, field="name",
                         hint="choose another --name")
    return manifest


def _preflight(store: EnsembleStore, manifest: Manifest, task: Task, cfg: DictConfig) -> None:
    """Checks that need the tokenizer, before the ensemble is touched."""
    from transformers import AutoConfig

    from see.experts.training import check_lengths
    from see.modeling import model_context

    tokenizer = load_tokenizer({"ref": "ensemble", "path": str(store.tokenizer_dir), "local": True})
    settings = manifest.settings.get("model", {})
    base = resolve_model_ref(manifest.base["ref"])
    context = model_context(AutoConfig.from_pretrained(base["path"],
                                                       trust_remote_code=settings.get("trust_remote_code", False)))
    check_lengths(task, tokenizer, manifest.settings["prompt"]["template"], manifest.indicator["pos_id"],
                  manifest.indicator["neg_id"], min(int(cfg.train.max_length), context), cfg.train.overlength)


def _general_negatives(cfg: DictConfig, manifest: Manifest, negatives: str | None, n_pos: int, seed: int,
                       log: Log) -> tuple[list[tuple[str | None, str]], str]:
    source = negatives if negatives is not None else cfg.reconstruction.general_negatives
    want = int(round(cfg.reconstruction.general_negative_ratio * n_pos))
    if source in ("none", "") or want == 0:
        return [], "none"
    if source is None:
        if manifest.base.get("ref") == EMBEDDED:
            from see.embedded.families import general_negatives

            return general_negatives(max(want, 50), seed=seed), "embedded-pool"
        log("warning: no general negatives (pass --negatives FILE): this expert learns to reject only "
            "earlier tasks and may accept queries of tasks it has never seen")
        return [], "none"
    return load_queries(source, input_field=cfg.data.input_field), str(source)


def _rehearsal(store: EnsembleStore, manifest: Manifest) -> RehearsalBuffer:
    buffer = RehearsalBuffer()
    for rec in manifest.experts:
        buffer.add(rec.name, RehearsalBuffer.load_queries(store.root / rec.path / "rehearsal.jsonl"))
    return buffer


def _split_heldout(examples: list[TrainingExample], fraction: float, cap: int
                   ) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Hold out a share of positives and of negatives (capped), keeping the order otherwise."""
    held_ids: set[int] = set()
    for kind in ("pos", "neg"):
        ids = [k for k, ex in enumerate(examples) if ex.kind == kind]
        n = min(cap, int(round(len(ids) * fraction)))
        if fraction > 0 and len(ids) >= 4:
            n = max(1, n)
        held_ids.update(ids[:n])  # examples are already shuffled by reconstruct_task
    train = [ex for k, ex in enumerate(examples) if k not in held_ids]
    held = [ex for k, ex in enumerate(examples) if k in held_ids]
    return train, held


# ----------------------------------------------------------------------------- add an expert

def add_expert(path: str | Path, name: str, task: Task, *, config: str | Path | None = None,
               overrides: Sequence[str] = (), negatives: str | None = None, resume: bool = False,
               wait: bool = True, progress: bool = True, log: Log = _stderr, data_info: dict | None = None
               ) -> ExpertRecord:
    """Train an expert for ``task`` and add it to the ensemble at ``path``, atomically.

    Everything that can fail on user input is checked before the ensemble is
    touched. Training happens in ``.staging/<name>``; the manifest is replaced
    last. Runs under ``accelerate launch`` too: every process trains, the main
    process writes.
    """
    from accelerate import Accelerator

    from see.experts.training import _mixed_precision

    store = EnsembleStore(path)
    manifest = check_new_expert(store, name)
    cfg = expert_config(manifest, config, overrides)
    if len(task) < 2:
        raise DataError(f"the task has {len(task)} example(s); an expert needs at least 2", file=task.source)
    seed = int(cfg.train.seed)
    _preflight(store, manifest, task, cfg)
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.train.mixed_precision),
                              gradient_accumulation_steps=int(cfg.train.grad_accum),
                              # without CUDA, processes started by `accelerate launch` talk over gloo
                              cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    if not main:
        log = lambda msg: None  # noqa: E731 - one voice under accelerate launch
    general, general_source = _general_negatives(cfg, manifest, negatives, len(task), seed, log)
    lock = store.lock(wait=wait, message=log) if main else contextlib.nullcontext()
    with lock:
        manifest = check_new_expert(store, name)  # another writer may have finished while we waited
        staged = store.root / STAGING / name
        if main:
            store.clean_orphans(manifest, keep=staged if resume else None)
            if not resume:
                shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()

        rehearsal = _rehearsal(store, manifest)
        examples = reconstruct_task(task, rehearsal, general,
                                    negative_ratio=cfg.reconstruction.negative_ratio,
                                    min_negatives_per_task=cfg.reconstruction.min_negatives_per_task,
                                    general_negative_ratio=cfg.reconstruction.general_negative_ratio, seed=seed)
        train_examples, heldout = _split_heldout(examples, float(cfg.train.eval_fraction), int(cfg.train.eval_max))
        counts = count_by_origin(train_examples)
        if main:
            log(f"expert '{name}': {sum(e.kind == 'pos' for e in train_examples)} positives, "
                f"{sum(e.kind == 'neg' for e in train_examples)} negatives "
                f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()) if k != task.name) or 'none'}), "
                f"{len(heldout)} held out")

        try:
            record = _train_and_commit(store, manifest, name, task, cfg, examples, train_examples, heldout,
                                       general_source, staged, accelerator, resume, progress, log, data_info)
        except BaseException:
            # Keep a resumable checkpoint (see add-expert --resume); drop anything else half-made.
            if main and not (staged / "checkpoint" / "state.pt").is_file():
                shutil.rmtree(staged, ignore_errors=True)
            elif main:
                log(f"interrupted: resume with see add-expert {store.root} --name {name} ... --resume")
            raise
        accelerator.wait_for_everyone()
    return record


def _train_and_commit(store: EnsembleStore, manifest: Manifest, name: str, task: Task, cfg: DictConfig,
                      examples, train_examples, heldout, general_source: str, staged: Path, accelerator,
                      resume: bool, progress: bool, log: Log, data_info: dict | None) -> ExpertRecord | None:
    from see.experts.training import train_expert

    main = accelerator.is_main_process
    seed = int(cfg.train.seed)
    model, tokenizer = load_base_for(store, manifest, device=accelerator.device)
    settings = manifest.settings
    ind = manifest.indicator
    kind = settings["model"].get("expert_kind", "lora")
    peft_model, result = train_expert(
        model, tokenizer, train_examples, template=settings["prompt"]["template"], pos_id=ind["pos_id"],
        neg_id=ind["neg_id"], lora=cfg.lora, train=cfg.train, kind=kind,
        invocation_ids=invocation_ids(tokenizer, settings["prompt"]["template"]) if kind == "alora" else None,
        heldout=heldout, checkpoint_dir=staged / "checkpoint", resume=resume, progress=progress,
        accelerator=accelerator, log=log, where=task.source)

    record = None
    if main:
        peft_model.save_pretrained(staged, save_embedding_layers=False)
        fault_point("adapter-saved")
        shutil.rmtree(staged / "checkpoint", ignore_errors=True)
        kept = RehearsalBuffer.sample_task(task, int(cfg.reconstruction.rehearsal_size), seed)
        RehearsalBuffer.save_queries(staged / "rehearsal.jsonl", kept)
        write_jsonl(staged / "heldout.jsonl", [ex.__dict__ for ex in heldout])
        data = {"source": task.source, "examples": len(task), "sha256": task.fingerprint(),
                "instruction": task.instruction, **(data_info or {})}
        if task.source and Path(task.source).is_file():
            data["file_sha256"] = file_sha256(Path(task.source))
        metrics = {**result.metrics, "reconstruction": count_by_origin(examples),
                   "general_negatives": general_source, "rehearsal_kept": len(kept)}
        record = ExpertRecord(name=name, path=f"experts/{name}", created=now(),
                              config={k: v for k, v in to_dict(cfg).items() if k not in ENSEMBLE_SECTIONS},
                              data=data, metrics=metrics, extra={"base_fingerprint": manifest.base.get("fingerprint")})
        store.commit_expert(manifest, record, staged)
    return record


def invocation_ids(tokenizer, template: str) -> list[int]:
    """aLoRA invocation sequence: the template's tail (e.g. "\\nAnswer:"), tokenized as :func:`encode_prompt` does."""
    tail = template_tail(template)
    if not tail.strip():
        raise ConfigError("alora experts need text after {input} in the template to activate on",
                          field="prompt.template")
    return tokenizer(tail, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------- serving

class Ensemble:
    """A loaded ensemble: the base, every expert's adapter, and the fallback."""

    def __init__(self, store: EnsembleStore, manifest: Manifest, model, tokenizer, fallback: Fallback,
                 device: torch.device, runner=None):
        self.store = store
        self.runner = runner
        self.manifest = manifest
        self.model = model
        self.tokenizer = tokenizer
        self.fallback = fallback
        self.device = device
        self._lock = threading.RLock()

    # -- loading
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "Ensemble":
        from peft import PeftModel

        store = EnsembleStore(path)
        manifest = store.read()
        device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_base_for(store, manifest)
        for k, rec in enumerate(manifest.experts):
            adapter = str(store.root / rec.path)
            trained_on = rec.extra.get("base_fingerprint")
            if trained_on and trained_on != manifest.base.get("fingerprint"):
                raise StoreError(f"expert '{rec.name}' was trained on another base model (fingerprint {trained_on}, "
                                 f"this ensemble's base is {manifest.base.get('fingerprint')})",
                                 file=store.manifest_path, field=f"experts.{rec.name}.base_fingerprint")
            try:
                if k == 0:
                    model = PeftModel.from_pretrained(model, adapter, adapter_name=rec.name)
                else:
                    model.load_adapter(adapter, adapter_name=rec.name)
            except Exception as exc:  # noqa: BLE001 - a damaged adapter is the user's file
                raise StoreError(f"cannot load expert '{rec.name}': {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:300]}", file=adapter) from None
        model.to(device).eval()
        kind = manifest.settings["model"].get("expert_kind", "lora")
        runner = None
        if manifest.experts:
            from see.routing.runner import Runner

            runner = Runner(model, len(invocation_ids(tokenizer, manifest.settings["prompt"]["template"]))
                            if kind == "alora" else 0)
        ind = manifest.indicator
        block = [ind["pos_id"], ind["neg_id"]]
        if manifest.fallback:
            settings = manifest.settings["model"]
            fb_tok = load_tokenizer(manifest.fallback["ref"], settings.get("trust_remote_code", False))
            fb_model = load_causal_lm(manifest.fallback["ref"], settings.get("dtype", "auto"),
                                      settings.get("trust_remote_code", False), settings.get("allow_pickle", False),
                                      device=device)
            fallback = Fallback(fb_model, fb_tok, separate=True, name=manifest.fallback["ref"])
        else:
            fallback = Fallback(runner or model, tokenizer, separate=False, block_ids=block,
                                template=manifest.settings["prompt"]["template"])
        return cls(store, manifest, model, tokenizer, fallback, device, runner)

    # -- properties
    @property
    def experts(self) -> list[str]:
        """Expert names in the order they were added (oldest first)."""
        return [e.name for e in self.manifest.experts]

    @property
    def template(self) -> str:
        return self.manifest.settings["prompt"]["template"]

    @property
    def pos_id(self) -> int:
        return self.manifest.indicator["pos_id"]

    @property
    def neg_id(self) -> int:
        return self.manifest.indicator["neg_id"]

    def thresholds(self, threshold: float | None = None) -> dict[str, float | None]:
        """Per expert: an explicit threshold wins, then the calibrated one, then the config's (None = argmax)."""
        default = self.manifest.settings.get("routing", {}).get("threshold")
        return {e.name: threshold if threshold is not None else
                (e.threshold if e.threshold is not None else default) for e in self.manifest.experts}

    # -- queries
    def prompt_for(self, query: Query) -> str:
        """Turn a query into the prompt text the experts were trained on."""
        if isinstance(query, str):
            return format_prompt(query, None, self.template)
        if isinstance(query, dict) and "input" in query:
            return format_prompt(query["input"], query.get("instruction"), self.template)
        if isinstance(query, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in query):
            system = [m["content"] for m in query if m.get("role") == "system"]
            users = [m["content"] for m in query if m.get("role", "user") == "user"]
            if not users:
                raise DataError("chat messages have no user message", field="messages")
            return format_prompt(users[-1], "\n".join(system) or None, self.template)
        raise DataError(f"a query must be a string, an {{'instruction', 'input'}} dict or chat messages; "
                        f"got {type(query).__name__}", field="queries")

    # -- routing and generation
    def _encode(self, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
        limit = prompt_limit(self.model, max_new_tokens)
        return [encode_prompt(self.tokenizer, p, self.template, limit) for p in prompts]

    def _route(self, encoded: list[list[int]], params: SamplingParams | None, threshold: float | None,
               mode: str | None) -> list[Routed]:
        from see.experts.training import stop_token_id

        if not self.experts:
            return [Routed() for _ in encoded]
        routing = self.manifest.settings.get("routing", {})
        mode = mode or routing.get("mode", "batched")
        kwargs = dict(pos_id=self.pos_id, thresholds=self.thresholds(threshold), params=params,
                      stop_id=stop_token_id(self.tokenizer), block_ids=[self.pos_id, self.neg_id],
                      max_rows=int(routing.get("max_rows_per_forward", 256)))
        newest_first = list(reversed(self.experts))
        if mode == "batched":
            kind = self.manifest.settings["model"].get("expert_kind", "lora")
            return route_batched(self.runner, self.tokenizer, encoded, newest_first, kind=kind,
                                 invocation=invocation_ids(self.tokenizer, self.template) if kind == "alora" else (),
                                 **kwargs)
        if mode != "sequential":
            raise ConfigError(f"routing mode must be 'batched' or 'sequential', got {mode!r}", field="routing.mode")
        return route_sequential(self.runner, self.tokenizer, encoded, newest_first, **kwargs)

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
        prompts = [self.prompt_for(q) for q in queries]
        if max_new_tokens is None:
            max_new_tokens = int(self.manifest.settings.get("routing", {}).get("max_new_tokens", 64))
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}", field="max_new_tokens")
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                stop=tuple(stop), seed=seed, ignore_eos=ignore_eos)
        encoded = self._encode(prompts, max_new_tokens)
        with self._lock, torch.no_grad():
            routed = self._route(encoded, params, threshold, mode)
            rest = [k for k, r in enumerate(routed) if r.expert is None]
            for k, d in zip(rest, self.fallback.answer([prompts[k] for k in rest], params)):
                routed[k].decoded = d
        out = []
        for q, p, ids, r in zip(queries, prompts, encoded, routed):
            out.append(GenerationResult(query=q if isinstance(q, str) else p, answer=r.decoded.text,
                                        expert=r.expert, scores=r.scores, prompt_tokens=len(ids),
                                        completion_tokens=len(r.decoded.token_ids) + (r.expert is not None),
                                        finish_reason=r.decoded.finish_reason))
        return out

    def route(self, queries: Sequence[Query] | Query, *, threshold: float | None = None,
              mode: str | None = None) -> list[RouteDecision]:
        """Routing decisions only: which expert would answer, and every consulted expert's P(<<pos>>)."""
        if isinstance(queries, (str, dict)):
            queries = [queries]
        prompts = [self.prompt_for(q) for q in queries]
        encoded = self._encode(prompts, 1)
        with self._lock, torch.no_grad():
            routed = self._route(encoded, None, threshold, mode)
        return [RouteDecision(q if isinstance(q, str) else p, r.expert, r.scores)
                for q, p, r in zip(queries, prompts, routed)]

    def evaluate(self, task: Task, max_new_tokens: int | None = None, batch_size: int = 32,
                 scorer: str = "exact_match", progress: bool = False) -> dict:
        """Score ``task`` through the whole ensemble: accuracy and where its queries were routed."""
        from tqdm.auto import tqdm

        from see.metrics import SCORERS

        score_fn = SCORERS[scorer]
        if max_new_tokens is None:
            longest = max(len(self.tokenizer(" " + a, add_special_tokens=False)["input_ids"])
                          for ex in task.examples for a in ex.outputs)
            max_new_tokens = longest + 2
        queries = [{"instruction": task.instruction, "input": ex.input} for ex in task.examples]
        results: list[GenerationResult] = []
        for i in tqdm(range(0, len(queries), batch_size), disable=not progress, desc=f"eval {task.name}", leave=False):
            results += self.generate(queries[i:i + batch_size], max_new_tokens=max_new_tokens)
        scores = [score_fn(r.answer, ex.outputs) for r, ex in zip(results, task.examples)]
        routed: dict[str, int] = {}
        for r in results:
            key = r.expert if r.expert is not None else "<fallback>"
            routed[key] = routed.get(key, 0) + 1
        return {"task": task.name, "examples": len(task), "metric": scorer,
                "score": sum(scores) / max(1, len(scores)),
                "routed": {k: v / len(results) for k, v in sorted(routed.items())},
                "results": results}
