"""Shared fixtures: tiny models built from a config, with the embedded tokenizer, in seconds."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Fast settings for experts on tiny models.
TINY_TRAIN = ["train.epochs=4", "train.batch_size=16", "train.lr=5e-3", "lora.r=8", "lora.alpha=16",
              "train.eval_fraction=0.1", "lora.dropout=0.0"]


def tiny_config(arch: str, vocab_size: int, bos: int, eos: int, pad: int):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    if arch == "llama-untied":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    if arch == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                          bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0)
    raise ValueError(arch)


def build_tiny_model(out: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A few-hundred-thousand-parameter causal LM with the embedded tokenizer, saved as a HF dir."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from see.embedded import BASE_DIR

    tok = AutoTokenizer.from_pretrained(BASE_DIR)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok), tok.bos_token_id, tok.eos_token_id,
                                                         tok.pad_token_id))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """arch -> model dir, built on first use."""
    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = build_tiny_model(tmp_path_factory.mktemp("tiny") / arch, arch)
        return cache[arch]

    return get


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def family_jsonl(path: Path, family: str, n: int, seed: int = 0, split: str = "train") -> Path:
    from see.embedded.families import make_task

    task = make_task(family, n, seed=seed, split=split)
    return write_jsonl(path, [{"input": ex.input, "output": ex.output} for ex in task.examples])


def tree_hash(root: Path) -> str:
    """Hash of every file's path and bytes under root (the lock file's content never changes)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        h.update(rel.encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def run_see(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "see", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)
