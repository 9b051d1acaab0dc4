"""What the writers and the reader both load from an ensemble directory: the base, its tokenizer, the prompt."""
from __future__ import annotations

from see.errors import StoreError
from see.modeling import ModelRef, base_fingerprint, fit_embeddings, load_causal_lm, load_tokenizer, model_context, \
    quiet_transformers
from see.prompt import PromptFormat
from see.store import EnsembleStore, Manifest


def ensemble_tokenizer(store: EnsembleStore):
    """The base tokenizer with the indicator tokens, as saved at ``see init``."""
    return load_tokenizer(ModelRef("ensemble", str(store.tokenizer_dir), True))


def load_base(store: EnsembleStore, manifest: Manifest, device=None, dtype: str | None = None):
    """The base model and the ensemble's tokenizer, embeddings fitted, fingerprint checked."""
    quiet_transformers()
    tokenizer = ensemble_tokenizer(store)
    settings = manifest.model
    model = load_causal_lm(manifest.base.ref, dtype or settings.dtype, settings.trust_remote_code,
                           settings.allow_pickle)
    fingerprint = base_fingerprint(model)
    if manifest.base.fingerprint and fingerprint != manifest.base.fingerprint:
        raise StoreError(f"the base model at {manifest.base.ref!r} is not the one this ensemble was built on "
                         f"(fingerprint {fingerprint} != {manifest.base.fingerprint})",
                         file=store.manifest_path, field="base.fingerprint")
    fit_embeddings(model, tokenizer)
    if device is not None:
        model.to(device)
    return model, tokenizer


def prompt_format(manifest: Manifest, tokenizer, model_or_config) -> PromptFormat:
    """The ensemble's prompt for its base (``model_or_config``: the model, or its HF config)."""
    return PromptFormat(tokenizer, manifest.prompt.template, model_context(model_or_config))
