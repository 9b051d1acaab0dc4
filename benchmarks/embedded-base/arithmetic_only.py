"""Can a model of the embedded base's shape learn sums and differences at all, given nothing else?

    python benchmarks/embedded-base/arithmetic_only.py [--steps 6000] [--threads 1]

A Llama of the embedded base's shape (hidden 128, 4 layers, 4 heads), with a character vocabulary
(digits, ``+ - =``), trained from scratch on ``a+b=c`` and ``a-b=c`` (operands 0-999 with 1-3 digits
equally likely, the larger first for differences; the answer is the only target). Every 500 steps it
prints greedy exact match on 200 fixed problems drawn apart from training's. This separates "the shape
cannot compute" from "the pretraining corpus did not teach it" (README.md here).
"""
from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from see.embedded.build_base import optimizer_step, pretraining_optimizer

VOCAB = list("0123456789+-= ") + ["<s>", "</s>", "<pad>"]
INDEX = {c: i for i, c in enumerate(VOCAB)}
BOS, EOS, PAD = INDEX["<s>"], INDEX["</s>"], INDEX["<pad>"]


def problem(rng: random.Random) -> tuple[str, str]:
    a, b = (rng.randint(0, 10 ** rng.randint(1, 3) - 1) for _ in range(2))
    if rng.random() < 0.5:
        return f"{a}+{b}=", str(a + b)
    a, b = max(a, b), min(a, b)
    return f"{a}-{b}=", str(a - b)


def batch(rng: random.Random, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, labels = [], []
    for _ in range(n):
        question, answer = problem(rng)
        prompt = [BOS] + [INDEX[c] for c in question]
        target = [INDEX[c] for c in answer] + [EOS]
        rows.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    width = max(map(len, rows))
    return (torch.tensor([r + [PAD] * (width - len(r)) for r in rows]),
            torch.tensor([r + [-100] * (width - len(r)) for r in labels]))


@torch.no_grad()
def exact_match(model, problems: list[tuple[str, str]]) -> float:
    model.eval()
    right = 0
    for question, answer in problems:
        ids = torch.tensor([[BOS] + [INDEX[c] for c in question]])
        for _ in range(5):
            nxt = model(ids).logits[0, -1].argmax().item()
            if nxt == EOS:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
        right += "".join(VOCAB[i] for i in ids[0, len(question) + 1:].tolist()) == answer
    model.train()
    return right / len(problems)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    model = LlamaForCausalLM(config)
    rng = random.Random(args.seed)
    held_out_rng = random.Random(f"held-out/{args.seed}")
    problems = [problem(held_out_rng) for _ in range(200)]
    opt, sched = pretraining_optimizer(model, args.lr, args.steps, warmup=200)
    start = time.time()
    for step in range(1, args.steps + 1):
        x, y = batch(rng, args.batch_size)
        loss = model(input_ids=x, labels=y).loss
        optimizer_step(model, opt, sched, loss)
        if step % 500 == 0:
            print(f"step {step} loss {loss.item():.3f} exact match {exact_match(model, problems):.3f} "
                  f"({time.time() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
