"""Pretrain a built embedded base further, on a corpus with or without ``--more-wordings``.

A proxy for a full build (52 minutes here): 2,000 more steps (about 9 minutes) from the same base, once
with the extra wordings of sums and differences and once without, tell whether the wordings themselves
help an expert, apart from the extra pretraining (benchmarks/embedded-base/README.md).

    python benchmarks/embedded-base/continue_pretraining.py BASE OUT 2000 [--more-wordings]

The corpus is that of ``build_base --generic-share 0.6 --skill-share 0.7 --arithmetic-share 0.7
--answer-last --answer-gap 4`` (the three shares can be changed) at seed 1 (the base's own build used seed 0), tokenized with BASE's
tokenizer; learning rate 1e-3 with a 5% warmup, then linear decay.
"""
import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from see.embedded.build_base import (optimizer_step, pack, pretraining_corpus, pretraining_labels,
                                     pretraining_optimizer)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="a built base's folder")
    p.add_argument("out", type=Path)
    p.add_argument("steps", type=int)
    p.add_argument("--more-wordings", action="store_true", help="build_base's --more-wordings")
    p.add_argument("--generic-share", type=float, default=0.6, help="build_base's --generic-share")
    p.add_argument("--skill-share", type=float, default=0.7, help="build_base's --skill-share")
    p.add_argument("--arithmetic-share", type=float, default=0.7, help="build_base's --arithmetic-share")
    args = p.parse_args(argv)
    torch.manual_seed(1)
    rng = random.Random(1)
    tok = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base)
    corpus = pretraining_corpus(args.steps * 32 * 12, seed=1, generic_share=args.generic_share,
                                skill_share=args.skill_share, arithmetic_share=args.arithmetic_share,
                                answer_last=True, answer_gap=4, more_wordings=args.more_wordings)
    data = pack(tok, corpus, 128, rng)
    opt, sched = pretraining_optimizer(model, 1e-3, args.steps, warmup=args.steps // 20)
    model.train()
    losses, start = [], time.time()
    for step in range(1, args.steps + 1):
        batch = data[torch.randint(0, len(data), (32,))]
        loss = model(input_ids=batch, labels=pretraining_labels(batch, tok.eos_token_id)).loss
        optimizer_step(model, opt, sched, loss)
        losses.append(loss.item())
        if step % 100 == 0:
            print(step, round(sum(losses[-100:]) / 100, 3), round(time.time() - start), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    info = {"continued_from": str(args.base), "steps": args.steps, "more_wordings": args.more_wordings,
            "generic_share": args.generic_share, "skill_share": args.skill_share,
            "arithmetic_share": args.arithmetic_share,
            "final_loss": round(sum(losses[-100:]) / 100, 4), "seconds": round(time.time() - start, 1)}
    (args.out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
