"""The writers: create an ensemble, add an expert, store calibrated thresholds.

Every writer checks what it can before touching the ensemble, takes the
writer lock, and publishes through the store's atomic manifest replace; the
reader (:class:`see.ensemble.Ensemble`) never writes. Adding an expert reads
in one direction: data (a :class:`~see.data.Task`) -> reconstruction ->
training -> store.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig

from see import __version__
from see.config import ENSEMBLE_SECTIONS, load_config, to_dict, typed
from see.data import Task, load_queries
from see.embedded import EMBEDDED
from see.embedded.families import general_negatives as generated_negatives
from see.ensemble import Ensemble
from see.errors import ConfigError, DataError, QualityError, StoreError
from see.experts.reconstruction import Reconstruction, RehearsalBuffer, count_by_origin, reconstruct
from see.experts.training import check_lengths, mixed_precision, train_expert
from see.loading import ensemble_tokenizer, load_base, prompt_format
from see.modeling import add_indicator_tokens, base_fingerprint, load_causal_lm, load_tokenizer, quiet_transformers, \
    resolve_model_ref
from see.negatives import general_pool
from see.prompt import Indicator
from see.routing import calibration
from see.store import (STAGING, BaseRecord, EnsembleStore, ExpertRecord, Manifest, fault_point, file_sha256, now,
                       read_queries, validate_name, write_jsonl, write_queries)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- init

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
    model_cfg = typed(cfg, "model")
    base_ref = resolve_model_ref(model_cfg.base)
    tokenizer = load_tokenizer(base_ref, model_cfg.trust_remote_code)
    model = load_causal_lm(base_ref, "float32", model_cfg.trust_remote_code, model_cfg.allow_pickle)
    base_vocab = model.get_input_embeddings().weight.shape[0]
    fingerprint = base_fingerprint(model)
    fallback_ref = None
    if model_cfg.fallback:
        fb = resolve_model_ref(model_cfg.fallback)
        load_tokenizer(fb, model_cfg.trust_remote_code)
        load_causal_lm(fb, "float32", model_cfg.trust_remote_code, model_cfg.allow_pickle)
        fallback_ref = fb.stored
    prompt_cfg = typed(cfg, "prompt")
    pos_id, neg_id = add_indicator_tokens(tokenizer, prompt_cfg.pos_token, prompt_cfg.neg_token)
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
            base=BaseRecord(base_ref.stored, fingerprint, model.config.model_type, base_vocab),
            fallback=fallback_ref, model=model_cfg, prompt=prompt_cfg, routing=typed(cfg, "routing"),
            indicator=Indicator(prompt_cfg.pos_token, prompt_cfg.neg_token, pos_id, neg_id), see_version=__version__)
        store.write(manifest)
    log(f"initialised ensemble {root} on base '{manifest.base.ref}' "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    return manifest


# ----------------------------------------------------------------------------- config and checks

def expert_config(manifest: Manifest, config: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Defaults <- the ensemble's stored settings <- the user's YAML and overrides.

    The ``model`` and ``prompt`` sections are fixed at init: changing them per
    expert would make experts see different prompts.
    """
    stored = {k: v for k, v in manifest.to_json()["settings"].items()}
    cfg = load_config(config, overrides, base=stored)
    for section in ENSEMBLE_SECTIONS:
        now_section = to_dict(cfg)[section]
        if now_section != stored[section]:
            changed = [k for k, v in now_section.items() if stored[section].get(k) != v]
            raise ConfigError(f"'{section}' settings are fixed for the whole ensemble at see init",
                              file=str(config) if config else "<command line>",
                              field=f"{section}.{changed[0]}" if changed else section)
    return cfg


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

    base = resolve_model_ref(manifest.base.ref)
    model_config = AutoConfig.from_pretrained(base.path, trust_remote_code=manifest.model.trust_remote_code)
    prompt = prompt_format(manifest, ensemble_tokenizer(store), model_config)
    check_lengths(task, prompt, manifest.indicator, min(int(cfg.train.max_length), prompt.context),
                  cfg.train.overlength)


def _general_negatives(cfg: DictConfig, manifest: Manifest, negatives: str | None, n_pos: int, seed: int
                       ) -> tuple[list[tuple[str | None, str]], str]:
    """The queries every expert learns to reject besides older tasks: a user's file, or by default a pool.

    The embedded base reads only the project's generated language, so it gets
    its generated pool; every other base gets the pool shipped in
    ``see/negatives`` (diverse English requests, Apache-2.0).
    """
    source = negatives if negatives is not None else cfg.reconstruction.general_negatives
    want = int(round(cfg.reconstruction.general_negative_ratio * n_pos))
    if source in ("none", "") or want == 0:
        return [], "none"
    if source is None:
        if manifest.base.ref == EMBEDDED:
            return generated_negatives(max(want, 50), seed=seed), "embedded-pool"
        return general_pool(), "shipped-pool"
    return _negatives_file(source, cfg.data.input_field), str(source)


def _negatives_file(source: str, task_field: str) -> list[tuple[str | None, str]]:
    """A user's negatives file: its ``input`` field, or the task's input field when that is what it has."""
    for field in dict.fromkeys(("input", task_field)):
        try:
            return load_queries(source, input_field=field)
        except DataError as err:
            if err.field != field:
                raise
            missing = err
    raise missing


def _rehearsal(store: EnsembleStore, manifest: Manifest) -> RehearsalBuffer:
    buffer = RehearsalBuffer()
    for rec in manifest.experts:
        buffer.add(rec.name, read_queries(store.root / rec.path / "rehearsal.jsonl"))
    return buffer


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

    store = EnsembleStore(path)
    manifest = check_new_expert(store, name)
    cfg = expert_config(manifest, config, overrides)
    if len(task) < 2:
        raise DataError(f"the task has {len(task)} example(s); an expert needs at least 2", file=task.source)
    seed = int(cfg.train.seed)
    _preflight(store, manifest, task, cfg)
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg.train.mixed_precision),
                              gradient_accumulation_steps=int(cfg.train.grad_accum),
                              # without CUDA, processes started by `accelerate launch` talk over gloo
                              cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    if not main:
        log = lambda msg: None  # noqa: E731 - one voice under accelerate launch
    general, general_source = _general_negatives(cfg, manifest, negatives, len(task), seed)
    lock = store.lock(wait=wait, message=log) if main else contextlib.nullcontext()
    with lock:
        manifest = check_new_expert(store, name)  # another writer may have finished while we waited
        staged = store.root / STAGING / name
        made_staging = not staged.parent.exists()
        if main:
            store.clean_orphans(manifest, keep=staged if resume else None)
            if not resume:
                shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()

        data = reconstruct(task, _rehearsal(store, manifest), general, cfg.reconstruction,
                           float(cfg.train.eval_fraction), int(cfg.train.eval_max), seed)
        if main:
            counts = count_by_origin(data.train)
            log(f"expert '{name}': {sum(e.kind == 'pos' for e in data.train)} positives, "
                f"{sum(e.kind == 'neg' for e in data.train)} negatives "
                f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()) if k != task.name) or 'none'}), "
                f"{len(data.heldout)} held out")
        try:
            record = _train_and_commit(store, manifest, name, task, cfg, data, general_source, staged, accelerator,
                                       resume, progress, log, data_info)
        except QualityError:
            _drop_staged(staged, made_staging)
            raise
        except BaseException:
            # Keep a resumable checkpoint (see add-expert --resume); drop anything else half-made.
            if main and not (staged / "checkpoint" / "state.pt").is_file():
                _drop_staged(staged, made_staging)
            elif main:
                log(f"interrupted: resume with see add-expert {store.root} --name {name} ... --resume")
            raise
        accelerator.wait_for_everyone()
    return record


def _drop_staged(staged: Path, made_staging: bool) -> None:
    """Remove a failed add's folder, and ``.staging`` itself when this add created it and it is empty."""
    shutil.rmtree(staged, ignore_errors=True)
    if made_staging:
        with contextlib.suppress(OSError):
            staged.parent.rmdir()


def _train_and_commit(store: EnsembleStore, manifest: Manifest, name: str, task: Task, cfg: DictConfig,
                      data: Reconstruction, general_source: str, staged: Path, accelerator, resume: bool,
                      progress: bool, log: Log, data_info: dict | None) -> ExpertRecord | None:
    seed = int(cfg.train.seed)
    model, tokenizer = load_base(store, manifest, device=accelerator.device)
    prompt = prompt_format(manifest, tokenizer, model)
    max_length = min(int(cfg.train.max_length), prompt.context)

    def evaluate(m, **extra) -> dict:
        return calibration.evaluate_heldout(m, prompt, manifest.indicator, data.heldout, max_length=max_length,
                                            **extra)

    peft_model, result = train_expert(
        model, prompt, manifest.indicator, data.train, lora=cfg.lora, train=cfg.train,
        kind=manifest.model.expert_kind, checkpoint_dir=staged / "checkpoint", resume=resume, progress=progress,
        accelerator=accelerator, log=log, where=task.source, evaluate=evaluate if data.heldout else None)
    if not accelerator.is_main_process:
        return None
    threshold = None
    if data.heldout:
        result.metrics.update(evaluate(peft_model, target_frr=float(cfg.routing.target_frr), zero_shot=True))
        if cfg.routing.threshold in ("auto", None):  # "argmax" or a number: the user chose the rule
            threshold = result.metrics.get("threshold")
        _quality_gate(name, result.metrics, cfg, log)
    peft_model.save_pretrained(staged, save_embedding_layers=False)
    fault_point("adapter-saved")
    shutil.rmtree(staged / "checkpoint", ignore_errors=True)
    kept = RehearsalBuffer.sample_task(task, int(cfg.reconstruction.rehearsal_size), seed)
    write_queries(staged / "rehearsal.jsonl", kept)
    write_jsonl(staged / "heldout.jsonl", [ex.__dict__ for ex in data.heldout])
    data_record = {"source": task.source, "examples": len(task), "sha256": task.fingerprint(),
                   "instruction": task.instruction, **(data_info or {})}
    if task.source and Path(task.source).is_file():
        data_record["file_sha256"] = file_sha256(Path(task.source))
    metrics = {**result.metrics, "reconstruction": data.counts, "general_negatives": general_source,
               "rehearsal_kept": len(kept)}
    record = ExpertRecord(name=name, path=f"experts/{name}", created=now(),
                          config={k: v for k, v in to_dict(cfg).items() if k not in ENSEMBLE_SECTIONS},
                          data=data_record, metrics=metrics, threshold=threshold,
                          extra={"base_fingerprint": manifest.base.fingerprint})
    store.commit_expert(manifest, record, staged)
    return record


#: Below these held-out rates an expert is reported as not having learned to accept or reject.
MIN_ACCEPT = 0.9
MIN_REJECT = 0.9


def _quality_gate(name: str, m: dict, cfg: DictConfig, log: Log) -> None:
    """Say plainly when an expert did not learn; refuse it under ``train.min_score``."""
    problems = []
    em, base = m.get("heldout_exact_match"), m.get("base_exact_match")
    if em is not None and base is not None and em <= base:
        problems.append(f"its held-out exact match {100 * em:.0f}% is no better than the base model's "
                        f"{100 * base:.0f}% on the same queries")
    if m.get("heldout_accept_rate", 1.0) < MIN_ACCEPT:
        problems.append(f"it accepts only {100 * m['heldout_accept_rate']:.0f}% of its own held-out queries "
                        f"(want >= {100 * MIN_ACCEPT:.0f}%)")
    if m.get("heldout_reject_rate", 1.0) < MIN_REJECT:
        problems.append(f"it rejects only {100 * m['heldout_reject_rate']:.0f}% of held-out negatives "
                        f"(want >= {100 * MIN_REJECT:.0f}%)")
    if problems:
        log(f"warning: expert '{name}' did not learn its task well after {m.get('steps')} steps: "
            + "; ".join(problems) + ". Try more steps (train.min_steps=N or train.epochs=N), a higher train.lr, "
            "more or more consistent examples, or check that inputs and outputs are in the right fields.")
    floor = cfg.train.min_score
    if floor is not None and (em or 0.0) < float(floor):
        raise QualityError(f"expert '{name}' reached held-out exact match {100 * (em or 0):.1f}%, below "
                           f"train.min_score={floor}; it was not added", field="train.min_score",
                           hint="the ensemble is unchanged; see the warning above for what to change")


# ----------------------------------------------------------------------------- calibrate

def calibrate(path: str | Path, target_frr: float = 0.05, log: Log = print) -> list[dict]:
    """Choose and store a threshold for every expert; returns one report row per expert."""
    ens = Ensemble.load(path)
    rows = []
    for k, rec in enumerate(ens.manifest.experts):
        positives, negatives = calibration.calibration_texts(ens.store, ens.manifest, k)
        if not positives:
            log(f"{rec.name}: no held-out positives (train.eval_fraction=0?); left uncalibrated")
            continue
        ens.model.set_adapter(rec.name)
        rows.append({"expert": rec.name, **calibration.measure(ens.model, ens.prompt, ens.indicator.pos_id,
                                                               positives, negatives, target_frr)})
    with ens.store.lock(message=log):
        manifest = ens.store.read()
        by_name = {r["expert"]: r for r in rows}
        for rec in manifest.experts:
            if rec.name in by_name:
                rec.threshold = by_name[rec.name]["threshold"]
                rec.extra["calibration"] = {"target_frr": target_frr, **{k: v for k, v in by_name[rec.name].items()
                                                                          if k != "expert"}}
        ens.store.write(manifest)
    return rows
