"""``see export DIR OUT --format vllm``: the ensemble as a base checkpoint and plain LoRA adapters that vLLM loads.

vLLM loads LoRA adapters on linear layers, but not PEFT's
``trainable_token_indices`` (each expert's own ``<<pos>>``/``<<neg>>`` rows),
and LoRA "extra vocabulary" is gone since vLLM 0.12. So the export moves the
token rows into the base instead of into the adapters:

- the exported base's vocabulary is the ensemble's (base + ``<<pos>>`` and
  ``<<neg>>``), followed by two rows per expert: expert *k*'s trained
  ``<<pos>>`` and ``<<neg>>`` rows, at ids ``V + 2k`` and ``V + 2k + 1``;
- each expert is its adapter without the token rows: a plain LoRA.

An expert then reads its query and writes its decision with its own ids. The
vLLM engine (``see.engine.vllm``) allows each expert only the original
vocabulary plus its own two ids, so its softmax runs over exactly the
vocabulary the PEFT expert sees, and the answer after ``<<pos>>`` runs over
the original vocabulary without indicator ids, as in the torch engine. With
tied embeddings one row serves as input embedding and output row, as in the
PEFT expert, whose tied LM head follows its embedding's token rows.

Nothing is approximated: ``tests/test_export.py`` checks that the exported
base + LoRA give the PEFT expert's logits.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from see.errors import ConfigError, StoreError
from see.jsonio import strict_json
from see.loading import load_base
from see.routing.rule import expert_thresholds
from see.store import EnsembleStore, set_mode

EXPORT_FORMAT = "see-vllm/1"
TOKEN_ROWS = "token_adapter.trainable_tokens_delta"


def _expert_rows(adapter_dir: Path, config: dict, weights: dict, module: str) -> tuple[list[int], torch.Tensor] | None:
    """(token ids, replacement rows) an expert trained for ``module`` (``embed_tokens`` or ``lm_head``)."""
    key = next((k for k in weights if k.endswith(f"{module}.{TOKEN_ROWS}")), None)
    if key is None:
        return None
    indices = config.get("trainable_token_indices")
    if isinstance(indices, dict):
        indices = indices.get(module) or next(iter(indices.values()))
    if not isinstance(indices, list) or len(indices) != weights[key].shape[0]:
        raise StoreError(f"the adapter's trainable_token_indices do not match its {module} rows",
                         file=adapter_dir / "adapter_config.json", field="trainable_token_indices")
    return indices, weights[key]


def export_vllm(path: str | Path, out: str | Path, log=print) -> Path:
    """Write ``out/base`` (checkpoint + tokenizer), ``out/experts/<name>`` (plain LoRA) and ``out/export.json``."""
    from safetensors.torch import load_file, save_file

    store = EnsembleStore(path)
    manifest = store.read()
    out = Path(out)
    if manifest.model.expert_kind == "alora":
        raise ConfigError("vLLM does not load activated LoRA (aLoRA) adapters, so an aLoRA ensemble cannot be "
                          "exported", field="model.expert_kind",
                          hint="serve it with the torch engine (the default), or build a lora ensemble")
    if manifest.fallback:
        raise ConfigError("the export serves the default fallback (the base with adapters off); this ensemble "
                          f"answers with a separate model ({manifest.fallback})", field="model.fallback",
                          hint="serve it with the torch engine, or export an ensemble without --fallback")
    if out.exists() and any(out.iterdir()):
        raise StoreError("exists and is not empty", file=out, hint="export into a new folder")
    model, tokenizer = load_base(store, manifest, dtype="float32")
    config = model.config
    vocab = model.get_input_embeddings().weight.shape[0]
    emb_rows, head_rows, experts = [], [], []
    untied_head = model.get_output_embeddings() is not None and not getattr(config, "tie_word_embeddings", True)
    staged = out.parent / f".{out.name}.partial"
    shutil.rmtree(staged, ignore_errors=True)  # ours: a killed export of this same folder
    (staged / "experts").mkdir(parents=True)
    try:
        for k, rec in enumerate(manifest.experts):
            folder = store.root / rec.path
            adapter_config = json.loads((folder / "adapter_config.json").read_text())
            weights = load_file(str(folder / "adapter_model.safetensors"))
            emb = _expert_rows(folder, adapter_config, weights, "embed_tokens")
            if emb is None:
                raise StoreError(f"expert '{rec.name}' has no trained indicator rows", file=folder)
            order = [emb[0].index(i) for i in manifest.indicator.ids]
            emb_rows.append(emb[1][order])
            if untied_head:
                head = _expert_rows(folder, adapter_config, weights, "lm_head")
                base_head = model.get_output_embeddings().weight.detach()
                head_rows.append(head[1][[head[0].index(i) for i in manifest.indicator.ids]] if head
                                 else base_head[list(manifest.indicator.ids)])
            plain = {key: value for key, value in weights.items() if TOKEN_ROWS not in key}
            plain_config = {key: value for key, value in adapter_config.items() if key != "trainable_token_indices"}
            plain_config["base_model_name_or_path"] = "../../base"
            target = staged / "experts" / rec.name
            target.mkdir()
            save_file(plain, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
            (target / "adapter_config.json").write_text(strict_json(plain_config, indent=2) + "\n")
            experts.append({"name": rec.name, "path": f"experts/{rec.name}", "pos_id": vocab + 2 * k,
                            "neg_id": vocab + 2 * k + 1, "rank": int(adapter_config.get("r", 0))})
        if experts:
            model.resize_token_embeddings(vocab + 2 * len(experts), mean_resizing=False)
            with torch.no_grad():
                model.get_input_embeddings().weight[vocab:] = torch.cat(emb_rows)
                if untied_head:
                    model.get_output_embeddings().weight[vocab:] = torch.cat(head_rows)
        model.save_pretrained(staged / "base", safe_serialization=True)
        tokenizer.save_pretrained(staged / "base")
        thresholds = expert_thresholds(manifest)  # the reader's own rule, resolved per expert
        for e in experts:
            e["threshold"] = thresholds[e["name"]]
        info = {"format": EXPORT_FORMAT, "source": str(store.root.resolve()), "vocab": vocab,
                "indicator": list(manifest.indicator.ids), "template": manifest.prompt.template,
                "max_new_tokens": int(manifest.routing.max_new_tokens), "experts": experts,
                "max_rank": max([e["rank"] for e in experts], default=1)}
        (staged / "export.json").write_text(strict_json(info, indent=2) + "\n")
        set_mode(staged)
        staged.rename(out) if not out.exists() else (out.rmdir(), staged.rename(out))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    log(f"exported {len(experts)} expert(s) to {out}: base with {vocab} + {2 * len(experts)} token rows, "
        "plain LoRA adapters, export.json")
    return out
