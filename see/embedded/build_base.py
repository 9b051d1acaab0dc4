"""Build the embedded default base model and tokenizer from the project's own text.

This script produced the committed files in ``see/embedded/base/``::

    python -m see.embedded.build_base --out see/embedded/base

It trains a byte-level BPE tokenizer and pretrains a small Llama-style causal
LM on :func:`see.embedded.families.pretraining_text`: plain statements from
every task family (reviews, headlines, counting, facts), never the
instruction/answer format experts learn. A LoRA on a random base learns
poorly (frozen random tied embeddings cap the logits), so a brief pretraining
is what makes the experts learn their tasks.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from see.embedded import BASE_DIR
from see.embedded.families import FAMILIES, pretraining_text

SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


def build_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one by one so numbers compose; byte level so any text (real data too) encodes.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # The instructions train the tokenizer (so prompts stay short) but never the language model.
    instructions = [f.instruction for f in FAMILIES.values() if f.statement is not None]
    tok.train_from_iterator(corpus + instructions * 50 + ["Answer:"] * 50, trainer=trainer)
    bos = tok.token_to_id(SPECIAL["bos"])
    tok.post_processor = processors.TemplateProcessing(single=f"{SPECIAL['bos']} $A", pair=f"{SPECIAL['bos']} $A $B",
                                                       special_tokens=[(SPECIAL["bos"], bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"],
                                   pad_token=SPECIAL["pad"], unk_token=SPECIAL["unk"], model_max_length=256)


def build_model(tokenizer, hidden: int, layers: int, heads: int, intermediate: int, max_positions: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5,
    )
    return LlamaForCausalLM(config)


def corpus_sha256(corpus: list[str]) -> str:
    """Recorded in build_info.json; a test checks the generator still yields the corpus the base saw."""
    import hashlib

    return hashlib.sha256("\n".join(corpus).encode()).hexdigest()


def pack(tokenizer, corpus: list[str], block: int, rng: random.Random) -> torch.Tensor:
    """Pack statements into blocks that start with BOS, joined by spaces or newlines."""
    blocks, current = [], [tokenizer.bos_token_id]
    for text in corpus:
        ids = tokenizer(text + rng.choice([" ", "\n"]), add_special_tokens=False)["input_ids"]
        if len(current) + len(ids) > block:
            current += [tokenizer.eos_token_id] * (block - len(current))
            blocks.append(current)
            current = [tokenizer.bos_token_id]
        current += ids[: block - 1]
    return torch.tensor(blocks)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=BASE_DIR)
    p.add_argument("--statements", type=int, default=200_000)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--minutes", type=float, default=None, help="stop early after this wall time")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    start = time.time()
    corpus = pretraining_text(args.statements, seed=args.seed)
    tokenizer = build_tokenizer(corpus, args.vocab_size)
    model = build_model(tokenizer, args.hidden, args.layers, args.heads, args.intermediate, 2 * args.block)
    data = pack(tokenizer, corpus, args.block, rng)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"corpus: {len(corpus)} statements -> {len(data)} blocks of {args.block}; vocab {len(tokenizer)}; "
          f"params {n_params / 1e6:.2f}M", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    model.train()
    losses = []
    step = 0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(data), (args.batch_size,))
        batch = data[idx]
        labels = batch.masked_fill(batch == tokenizer.eos_token_id, -100)
        labels[:, 0] = -100
        # keep the first EOS of each padded tail as a target so the model learns to stop
        first_eos = (batch == tokenizer.eos_token_id).float().argmax(dim=1)
        rows = torch.arange(len(batch))
        has_eos = (batch == tokenizer.eos_token_id).any(dim=1)
        labels[rows[has_eos], first_eos[has_eos]] = tokenizer.eos_token_id
        loss = model(input_ids=batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0 or step == 1:
            print(f"step {step}/{args.steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f} "
                  f"({time.time() - start:.0f}s)", flush=True)
        if args.minutes is not None and time.time() - start > args.minutes * 60:
            break

    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    info = {
        "built_by": "python -m see.embedded.build_base " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps_done": step, "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "params": n_params, "corpus_sha256": corpus_sha256(corpus), "seconds": round(time.time() - start, 1), "torch": torch.__version__,
    }
    (args.out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    main()
