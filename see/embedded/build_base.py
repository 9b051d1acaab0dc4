"""Build the embedded default base model and tokenizer from the project's own text.

This script produced the committed files in ``see/embedded/base/``::

    python -m see.embedded.build_base --out see/embedded/base

It trains a byte-level BPE tokenizer and pretrains a small Llama-style causal
LM on :func:`pretraining_corpus`: plain statements from every task family
(reviews, headlines, counting, facts; :func:`see.embedded.families.pretraining_text`)
and, for a share of them, generic text (:func:`generic_statement`): random
letter strings copied at a distance and spelled letter by letter. Never the
instruction/answer format experts learn. A LoRA on a random base learns poorly
(frozen random tied embeddings cap the logits), so a brief pretraining is what
makes the experts learn their tasks.

Why the generic text: a base pretrained on the families alone had never seen
most of its own tokenizer's pieces (their embeddings stayed at their random
start) and had no reason to copy, so a user's task that copies a span it never
saw (an email address, a city) or works on letters could not be learned by a
LoRA. Every pretrained LM has both skills from its web text; random strings
give them without any word list, so no user task's vocabulary is in the base.
Measured on the user-task suite (`benchmarks/user-tasks`), which the families
did not write: see the README's embedded-base section.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import string
import sys
import time
from pathlib import Path

import torch

from see.embedded import BASE_DIR
from see.embedded.families import FAMILIES, pretraining_text

SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


def _random_word(rng: random.Random) -> str:
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
    kind = rng.random()
    if kind < 0.15:
        return word.capitalize()
    if kind < 0.25:
        return word + str(rng.randint(0, 999))
    if kind < 0.35:
        host = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 6)))
        return f"{word}@{host}{rng.choice(['.com', '.org', '.net', '.io'])}"
    if kind < 0.4:
        return str(rng.randint(0, 99999))
    return word


def generic_statement(rng: random.Random) -> str:
    """Half: a random phrase said again a few words later (copying, as induction heads learn it from any
    text); half: a random string and its letters (how tokens are spelled)."""
    if rng.random() < 0.5:
        phrase = " ".join(_random_word(rng) for _ in range(rng.randint(1, 4)))
        middle = " ".join(_random_word(rng) for _ in range(rng.randint(0, 6)))
        frame = rng.choice(["{a} {m} , {a} .", "{m} {a} ... {a}", "said {a} {m} so {a}", "{a} : {a}",
                            "{m} ( {a} ) {a}"])
        return frame.format(a=phrase, m=middle)
    word = _random_word(rng)
    return rng.choice(["{w} is spelled {s} .", "{s} spells {w} .", "{w} : {s}"]).format(w=word, s=" ".join(word))


def _number(rng: random.Random) -> int:
    return rng.randint(0, 10 ** rng.randint(1, 4) - 1)


def _gap(rng: random.Random, most: int) -> str:
    """Up to ``most`` filler words or line breaks, the gap a prompt template leaves before an answer."""
    # letters only: a number in the gap would be a third operand
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 7)))
    return "".join(rng.choice([" so", " then", " ,", " :", "\n", " " + word]) for _ in range(rng.randint(0, most)))


# Keyed by answer_last: the answer-first forms ("{c} is the sum of ...") cannot be computed left to right.
_SUM_FORMS = {False: ["{a} + {b} = {c}", "{a} plus {b} makes {c} .", "{c} is the sum of {a} and {b} ."],
              True: ["{a} + {b} = {c}", "{a} plus {b} makes {c} .", "the sum of {a} and {b} is {c} ."]}
_DIFFERENCE_FORMS = {False: ["{a} - {b} = {c}", "{a} minus {b} leaves {c} .", "{c} is {a} take away {b} ."],
                     True: ["{a} - {b} = {c}", "{a} minus {b} leaves {c} .", "{a} take away {b} is {c} ."]}
# More wordings, most with the second operand named first ("4 less than 9"), as text states them: a user's
# "subtract 73 from 308" names 308 last, and an expert on a base that only ever saw the larger operand first
# answered none of those (0% of 37 against 33% of the in-order ones; benchmarks/embedded-base/README.md).
# Verbs other than the user-task suite's ("add", "subtract", "take away"), so the base is not fitted to it.
_SUM_MORE = ["{b} more than {a} is {c} .", "{a} increased by {b} is {c} .", "{a} together with {b} makes {c} .",
             "put {b} with {a} to get {c} ."]
_DIFFERENCE_MORE = ["{b} less than {a} is {c} .", "{a} reduced by {b} is {c} .", "deduct {b} from {a} to leave {c} .",
                    "remove {b} from {a} and {c} remain ."]


def skill_statement(rng: random.Random, arithmetic_share: float = 0.5, answer_last: bool = False,
                    answer_gap: int = 0, more_wordings: bool = False) -> str:
    """Sums, differences and operations on a random string's letters, stated as facts.

    Web text teaches every pretrained LM some arithmetic and some letter play; a LoRA then only has to
    map a user's wording onto the skill. Without them the embedded base had nothing to map onto: experts
    for sums and reversed words memorised training answers (held-out exact match 0% and 43%). The
    phrasings here are statements, never questions or the instruction/answer format experts learn.

    ``answer_last`` states every sum and difference after its operands: a left-to-right model can compute
    ``345 + 27 = 372`` but can only guess ``372 is the sum of 345 and 27``, and a third of the arithmetic
    of the first skills base (``--skill-share 0.7``) was in that answer-first form.
    ``answer_gap`` puts up to that many filler words between a sum's or difference's operands and its
    result. An expert's answer comes after the template (``\\nAnswer: <<pos>>``), four tokens further from
    the operands than in ``345 + 27 = 372``; a base that only ever saw the result right after ``=``
    computed 79% of the add task's sums in that form, and an expert on it 0% of the same sums (77% with
    the template ``{input}``, benchmarks/embedded-base/README.md).
    ``more_wordings`` adds four wordings each for sums and differences, five of the eight naming the second
    operand first (``_SUM_MORE``, ``_DIFFERENCE_MORE``).

    The defaults reproduce the corpus of the bases built before these options."""
    kind = rng.random()
    if kind < arithmetic_share:
        a, b = _number(rng), _number(rng)
        if rng.random() < 0.5:
            c, forms = a + b, _SUM_FORMS[answer_last] + (_SUM_MORE if more_wordings else [])
        else:
            a, b = max(a, b), min(a, b)
            c, forms = a - b, _DIFFERENCE_FORMS[answer_last] + (_DIFFERENCE_MORE if more_wordings else [])
        form = rng.choice(forms)
        if answer_gap:
            form = form.replace(" {c}", _gap(rng, answer_gap) + " {c}")
        return form.format(a=a, b=b, c=c)
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
    if kind < arithmetic_share + (1 - arithmetic_share) / 2:
        return rng.choice(["{w} reversed is {r} .", "{r} is {w} read from the end .", "{w} <-> {r}"]).format(
            w=word, r=word[::-1])
    letter = rng.choice(word)
    return rng.choice([
        "{w} has {n} letters .", "{w} ends in {last} .",
        "{w} has {k} {c} in it .", "{w} without {c} is {x} .",
    ]).format(w=word, n=len(word), last=word[-1], k=word.count(letter), c=letter, x=word.replace(letter, "") or "nothing")


def pretraining_corpus(n_statements: int, seed: int = 0, generic_share: float = 0.3,
                       skill_share: float = 0.0, arithmetic_share: float = 0.5, answer_last: bool = False,
                       answer_gap: int = 0, more_wordings: bool = False) -> list[str]:
    """The families' statements, each replaced with probability ``generic_share`` by a generic one, of which
    a share ``skill_share`` are :func:`skill_statement` (0 gives the corpus of bases built before them), of
    which a share ``arithmetic_share`` are sums and differences."""
    rng = random.Random(f"generic/{seed}")
    skills = random.Random(f"skills/{seed}")

    def generic() -> str:
        if skill_share and skills.random() < skill_share:
            return skill_statement(skills, arithmetic_share=arithmetic_share, answer_last=answer_last,
                                   answer_gap=answer_gap, more_wordings=more_wordings)
        return generic_statement(rng)

    return [generic() if rng.random() < generic_share else text for text in pretraining_text(n_statements, seed=seed)]


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


def pretraining_labels(batch: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Next-token targets for a packed batch: padding (EOS) and each row's first token are not predicted,
    except the first EOS of a padded tail, kept as a target so the model learns to stop."""
    labels = batch.masked_fill(batch == eos_id, -100)
    labels[:, 0] = -100
    first_eos = (batch == eos_id).float().argmax(dim=1)
    rows = torch.arange(len(batch))
    has_eos = (batch == eos_id).any(dim=1)
    labels[rows[has_eos], first_eos[has_eos]] = eos_id
    return labels


def pretraining_optimizer(model, lr: float, steps: int, warmup: int):
    """AdamW with a linear warmup and a cosine decay to 0 at ``steps``: the embedded base's pretraining,
    shared with benchmarks/embedded-base/arithmetic_only.py so that its answer holds for this schedule."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    return opt, sched


def optimizer_step(model, opt, sched, loss: torch.Tensor) -> None:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=BASE_DIR)
    p.add_argument("--statements", type=int, default=200_000)
    p.add_argument("--generic-share", type=float, default=0.3,
                   help="share of statements replaced by generic text (copying, spelling, skills); 0 gives the old corpus")
    p.add_argument("--skill-share", type=float, default=0.0,
                   help="share of the generic text that states sums, differences and letter operations")
    p.add_argument("--arithmetic-share", type=float, default=0.5,
                   help="share of the skill statements that are sums and differences (the rest: letter operations)")
    p.add_argument("--answer-last", action="store_true",
                   help="state every sum and difference after its operands (no '372 is the sum of 345 and 27')")
    p.add_argument("--answer-gap", type=int, default=0,
                   help="up to this many filler words between a sum's or difference's operands and its result")
    p.add_argument("--more-wordings", action="store_true",
                   help="state sums and differences in four more wordings each, most naming the second operand "
                        "first ('4 less than 9 is 5')")
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
    corpus = pretraining_corpus(args.statements, seed=args.seed, generic_share=args.generic_share,
                                skill_share=args.skill_share, arithmetic_share=args.arithmetic_share,
                                answer_last=args.answer_last, answer_gap=args.answer_gap,
                                more_wordings=args.more_wordings)
    tokenizer = build_tokenizer(corpus, args.vocab_size)
    model = build_model(tokenizer, args.hidden, args.layers, args.heads, args.intermediate, 2 * args.block)
    data = pack(tokenizer, corpus, args.block, rng)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"corpus: {len(corpus)} statements -> {len(data)} blocks of {args.block}; vocab {len(tokenizer)}; "
          f"params {n_params / 1e6:.2f}M", flush=True)

    opt, sched = pretraining_optimizer(model, args.lr, args.steps, warmup=max(1, args.steps // 20))
    model.train()
    losses = []
    step = 0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(data), (args.batch_size,))
        batch = data[idx]
        loss = model(input_ids=batch, labels=pretraining_labels(batch, tokenizer.eos_token_id)).loss
        optimizer_step(model, opt, sched, loss)
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
