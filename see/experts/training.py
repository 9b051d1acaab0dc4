"""LoRA training with PEFT, driven by ``accelerate``: :func:`train_lora` for any (prompt, target) pairs,
and :func:`train_expert`, which trains one SEE expert with it.

Only the LoRA weights and, for experts, the indicator tokens' embedding rows
(PEFT ``trainable_token_indices``) train; the base weights never change. The
loss covers the target tokens only (``<<pos>> answer</s>``, ``<<neg>>``, or a
baseline's ``answer</s>``). The same code runs in one process or under
``accelerate launch --num_processes N``.
"""
from __future__ import annotations

import math
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from see.config import AUTO_LR, AUTO_LR_WIDTH, AUTO_NEGATIVE_SHARE
from see.engine.decode import positions, takes_position_ids
from see.errors import ConfigError, DataError, TrainingError
from see.experts.reconstruction import TrainingExample
from see.faults import fault_point
from see.modeling import model_context
from see.prompt import Indicator, PromptFormat, format_prompt

IGNORE = -100


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]


@dataclass
class TrainResult:
    metrics: dict
    steps: int
    losses: list[float] = field(default_factory=list)


def target_ids(ex: TrainingExample, prompt: PromptFormat, indicator: Indicator | None) -> list[int]:
    """``<<pos>> answer</s>`` for a positive, ``<<neg>>`` for a negative, ``answer</s>`` for a plain example."""
    if ex.kind == "neg":
        return [indicator.neg_id]
    head = [indicator.pos_id] if ex.kind == "pos" else []
    return head + prompt.answer_ids(ex.answer) + [prompt.stop_id]


def encode_example(prompt: PromptFormat, ex: TrainingExample, indicator: Indicator | None, max_length: int,
                   overlength: str = "truncate", where: str | None = None) -> tuple[EncodedExample, bool]:
    """Prompt ids + target ids with the loss masked on the prompt. Returns (encoded, truncated)."""
    ids = prompt.encode(format_prompt(ex.input, ex.instruction, prompt.template))
    target = target_ids(ex, prompt, indicator)
    truncated = False
    if len(ids) + len(target) > max_length:
        if len(target) >= max_length // 2:
            # only the prompt is ever cut, so an answer this long cannot be fixed by truncating
            raise DataError(f"the answer is {len(target)} tokens, too long for train.max_length={max_length} "
                            "(an answer may take at most half of it)", file=where, field="output",
                            hint="raise train.max_length (up to the model's context), or shorten the answer")
        if overlength == "reject":
            raise DataError(f"example is {len(ids) + len(target)} tokens, longer than train.max_length="
                            f"{max_length}", file=where, field="input",
                            hint="raise train.max_length, shorten the example, or set train.overlength=truncate")
        ids = prompt.truncate(ids, max_length - len(target))
        truncated = True
    return EncodedExample(ids + target, [IGNORE] * len(ids) + target), truncated


def check_lengths(task, prompt: PromptFormat, indicator: Indicator, max_length: int, overlength: str) -> int:
    """Before anything is trained or written: reject over-long examples (naming their line), or count them."""
    too_long = 0
    for ex in task.examples:
        item = TrainingExample(task.instruction, ex.input, "pos", ex.output, task.name)
        try:
            _, cut = encode_example(prompt, item, indicator, max_length, overlength)
        except DataError as err:
            raise DataError(err.reason, file=task.source or None, line=ex.line, field=err.field, hint=err.hint) from None
        too_long += cut
    return too_long


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a training batch, as prompts are padded at inference.

    Every sequence then ends at the last column, so the targets (the end of
    each sequence) sit in the last few columns and only those need logits.
    """
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, width - n:] = torch.tensor(e.input_ids)
        labels[i, width - n:] = torch.tensor(e.labels)
        mask[i, width - n:] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_logits(model, batch: dict[str, torch.Tensor], **extra) -> tuple[torch.Tensor, int]:
    """Logits of the last ``keep`` columns of a left-padded batch, from the one that predicts the earliest
    target token on: ``(logits, keep)``. ``extra`` goes to the model's forward."""
    labels = batch["labels"]
    has_target = (labels != IGNORE).any(dim=0).nonzero()
    first = int(has_target[0]) if len(has_target) else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1  # one more column: the position that predicts the first target
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "logits_to_keep": keep,
              **extra}
    if takes_position_ids(model):
        kwargs["position_ids"] = positions(batch["attention_mask"])
    return model(**kwargs).logits[:, -keep:], keep


def target_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the target tokens, computing logits for the last columns only.

    A causal LM's output layer over the whole vocabulary is the most expensive
    part of a forward on long prompts with short answers; the targets are the
    last tokens of each (left-padded) row, so ``logits_to_keep`` covers them.
    Returns (loss, number of target tokens).
    """
    labels = batch["labels"]
    logits, keep = target_logits(model, batch)
    targets = labels[:, -(keep - 1):] if keep > 1 else labels[:, :0]
    n = int((targets != IGNORE).sum())
    each = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             targets.reshape(-1), ignore_index=IGNORE, reduction="none")
    weights = batch.get("weights")
    if weights is None:
        return each.sum() / max(1, n), n
    kept = weights[:, -(keep - 1):] if keep > 1 else weights[:, :0]
    return (each * kept.reshape(-1)).sum(), n


def balanced_weights(labels: torch.Tensor, decision_ids: Sequence[int]) -> torch.Tensor:
    """Per-target weights for ``train.loss_weighting=balanced``: the mean over answer tokens (and stops) plus
    the mean over decision tokens (``<<pos>>``/``<<neg>>``).

    Why: under one mean over all target tokens, each negative adds a ``<<neg>>`` token to the denominator,
    so the more negatives a batch holds, the less its answers weigh, and an expert trained beside many
    negatives learns its answers from a smaller share of every step than the task's own LoRA does.
    """
    targets = labels != IGNORE
    decision = targets & torch.isin(labels, torch.tensor(list(decision_ids), device=labels.device))
    answer = targets & ~decision
    return (answer.float() / max(1, int(answer.sum()))) + (decision.float() / max(1, int(decision.sum())))


#: On CPU a forward and backward cost about as much as this many more tokens of a batch (minilm, 2 threads:
#: 1 x 16 tokens 67 ms, 4 x 16 90 ms, 1 x 64 91 ms, 8 x 64 358 ms, so about 110 tokens; the embedded base:
#: 1 x 16 17 ms, 16 x 16 44 ms, 16 x 48 98 ms, 16 x 96 168 ms, so about 220), so a sub-batch is worth running
#: apart only when it drops at least this much padding. The lower figure splits a little too eagerly on the
#: embedded base, and it still trains 1.7x as fast per step there (README).
CALL_COST_TOKENS = 128


def length_chunks(lengths: Sequence[int], call_cost: int = CALL_COST_TOKENS) -> list[list[int]]:
    """The rows of one batch as sub-batches of similar length, the split that costs the fewest tokens.

    A sub-batch costs ``call_cost`` plus its rows times its longest row (every row is padded to it). Why:
    on CPU a step pays for its padding, and one long example (a passage among short queries) pads the
    whole batch to its length. Running the rows in sub-batches of similar length and summing their
    gradients gives the batch's own gradient (:func:`target_loss_backward`), so unlike
    ``train.group_by_length`` it changes no batch's content. Sub-batches are contiguous runs of the rows
    sorted by length (shortest first), found by dynamic programming; one sub-batch when nothing pays.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    ordered = [lengths[i] for i in order]
    best, cut = [0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + call_cost + (end - start) * ordered[end - 1]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks, end = [], len(order)
    while end > 0:
        chunks.append(order[cut[end]:end])
        end = cut[end]
    return chunks[::-1]


def sub_batch(batch: dict[str, torch.Tensor], rows: Sequence[int]) -> dict[str, torch.Tensor]:
    """``rows`` of a left-padded batch, without the columns that are padding in all of them."""
    index = torch.tensor(list(rows), device=batch["attention_mask"].device)
    mask = batch["attention_mask"].index_select(0, index)
    width = max(1, int(mask.sum(1).max()))
    return {k: v.index_select(0, index)[:, -width:] for k, v in batch.items()}


def target_loss_backward(model, batch: dict[str, torch.Tensor], backward: Callable[[torch.Tensor], None],
                         split: bool = False, check: Callable[[torch.Tensor], None] = lambda loss: None
                         ) -> torch.Tensor:
    """:func:`target_loss` of ``batch`` and its backward; with ``split``, in sub-batches of similar length
    (:func:`length_chunks`), each loss weighted by its share of the batch's target tokens, so the gradient
    is the whole batch's. ``check`` sees each loss before its backward. Returns the batch's loss."""
    chunks = length_chunks(batch["attention_mask"].sum(1).tolist()) if split else []
    if len(chunks) <= 1:
        loss, _ = target_loss(model, batch)
        check(loss)
        backward(loss)
        return loss.detach()
    targets = max(1, int((batch["labels"] != IGNORE).sum()))
    total = torch.zeros((), device=batch["labels"].device)
    for rows in chunks:
        loss, n = target_loss(model, sub_batch(batch, rows))
        # weights are normalised over the whole batch already, so a weighted sub-batch's loss is its share
        share = 1.0 if "weights" in batch else n / targets
        check(loss)
        backward(loss * share)
        total = total + loss.detach() * share
    return total


def _module_name(model, module) -> str | None:
    for name, m in model.named_modules():
        if m is module:
            return name.split(".")[-1]
    return None


def _rows_only_forward(layer):
    """A forward for PEFT's ``TrainableTokensLayer`` that touches only the trained rows.

    PEFT's own forward builds the whole merged matrix (``index_copy`` of the
    vocabulary x hidden weight) on every call, and autograd then makes a dense
    gradient of that size for the embedding and again for a tied output layer.
    On a 30k-word vocabulary that is four 47 MB tensors per step, most of the
    peak memory of ``add-expert`` on ``minilm``; on a 150k vocabulary it is
    gigabytes. The result is the same: the base layer's output with the trained
    rows (embedding) or columns (output layer) replaced. The output layer keeps
    its bias, as the inference engine (``see.engine.multilora``) does.
    """
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    peft_forward = TrainableTokensLayer.forward_adapters.__get__(layer)
    base = layer.base_layer

    def forward_adapters(x, active_adapters, *args, **kwargs):
        plain_embedding = isinstance(base, torch.nn.Embedding) and base.max_norm is None and not base.sparse
        if (layer.disable_adapters or layer.merged or len(active_adapters) != 1
                or active_adapters[0] not in layer.token_indices
                or not (plain_embedding or isinstance(base, torch.nn.Linear))):
            return peft_forward(x, active_adapters, *args, **kwargs)
        name = active_adapters[0]
        index = torch.tensor(layer.token_indices[name], device=x.device)
        rows = layer.trainable_tokens_delta[name]
        out = base(x, *args, **kwargs)
        if isinstance(base, torch.nn.Embedding):
            scale = layer._get_embed_scale()
            rows = rows.to(out.dtype) if scale is None else rows.to(out.dtype) * scale.to(out.dtype)
            hit = x.unsqueeze(-1) == index  # (..., n)
            trained = hit.to(out.dtype) @ rows  # the trained row where a token is one of them, else 0
            return torch.where(hit.any(-1, keepdim=True), trained, out)
        cols = x.to(rows.dtype) @ rows.t()
        if base.bias is not None:
            cols = cols + base.bias[index].to(cols.dtype)
        return out.index_copy(-1, index, cols.to(out.dtype))

    return forward_adapters


_HEAP_BOUNDED = False


def bound_heap() -> None:
    """Return freed activation buffers to the system instead of keeping them in the heap (glibc only).

    glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB),
    so after a few steps every activation tensor lives in the heap, and batches of
    varying widths fragment it: peak RSS of ``add-expert`` on ``minilm`` kept climbing
    with the steps (1.42 GB after 60, 1.8 GB after 100). A fixed 1 MiB threshold maps
    every tensor of 1 MiB or more and unmaps it when freed: 1.24 GB after 60 steps at
    the same speed (29.3 s vs 31.3 s). Lower thresholds were slower (512 KiB: 44 s).
    """
    global _HEAP_BOUNDED
    if _HEAP_BOUNDED or not sys.platform.startswith("linux"):
        return
    _HEAP_BOUNDED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # another C library (musl): its allocator already unmaps large blocks
        pass


def set_train_mode(peft_model, base_dropout: bool) -> None:
    """Training mode for the adapters; the frozen base's own dropout only when ``base_dropout``.

    The base's dropout regularises nothing that trains, yet on a BERT-like base
    (dropout 0.1 on hidden states and attention) it keeps a mask per layer for
    the backward pass and takes attention off its fused kernel: measured on
    ``minilm``, 32% of the step time and 360 MB of peak memory. LoRA's own
    dropout (``lora.dropout``) stays on.
    """
    peft_model.train(base_dropout)
    if base_dropout:
        return
    for name, module in peft_model.named_modules():
        if "lora_dropout" in name.split("."):
            module.train()


def rows_only_trainable_tokens(peft_model) -> None:
    """Give every trainable-token layer of ``peft_model`` the rows-only forward (see ``_rows_only_forward``)."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    for module in peft_model.modules():
        if isinstance(module, TrainableTokensLayer) and "forward_adapters" not in vars(module):
            module.forward_adapters = _rows_only_forward(module)


def lora_config(settings: Any, model, token_ids: Sequence[int], kind: str = "lora",
                invocation_ids: Sequence[int] | None = None):
    """A PEFT ``LoraConfig`` from the config's ``lora`` section for ``model``.

    The indicator tokens train through ``trainable_token_indices``; with an
    untied output layer its rows are listed too, or the new rows of the LM head
    would never learn.
    """
    from peft import LoraConfig

    token_ids = list(token_ids)
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == emb.weight.data_ptr()
    trainable: Any = None
    if token_ids and tied:
        trainable = token_ids
    elif token_ids:
        trainable = {_module_name(model, emb): token_ids, _module_name(model, out): token_ids}
    target = settings.target_modules
    target = target if isinstance(target, str) else list(target)
    kwargs = {}
    if kind == "alora":
        kwargs["alora_invocation_tokens"] = list(invocation_ids or [])
    save = getattr(settings, "modules_to_save", None)
    if save:
        kwargs["modules_to_save"] = list(save)
    return LoraConfig(r=int(settings.r), lora_alpha=int(settings.alpha), lora_dropout=float(settings.dropout),
                      target_modules=target, trainable_token_indices=trainable, task_type="CAUSAL_LM", **kwargs)


def mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def step_budget(train: Any, updates_per_epoch: int) -> int:
    """Optimizer steps for one expert: ``max_steps``, else ``epochs`` worth of updates, else the auto rule.

    The auto rule (``epochs: auto``): three epochs, but never fewer than
    ``min_steps`` (a small task needs many passes to learn an answer format
    it has never seen) and never more than ``max_auto_steps`` (a large task
    learns within a fraction of an epoch; early stopping usually ends sooner).
    """
    if train.max_steps:
        return int(train.max_steps)
    if train.epochs != "auto":
        return max(1, math.ceil(float(train.epochs) * updates_per_epoch))
    return min(int(train.max_auto_steps), max(int(train.min_steps), 3 * updates_per_epoch))


def auto_budget(train: Any) -> bool:
    """Whether :func:`step_budget` uses the auto rule (``epochs: auto`` and no ``max_steps``), under which
    the defaults of the negative share, the patience and the early-stopping floor apply."""
    return train.epochs == "auto" and not train.max_steps


def negative_share(train: Any) -> float | None:
    """The share of an epoch's examples that may be negatives: ``train.negative_share``, with `auto` resolved
    (:data:`see.config.AUTO_NEGATIVE_SHARE` under the auto budget unless the user asked to group by length,
    else none); None: no cap."""
    share = getattr(train, "negative_share", None)
    if share == "auto":
        return AUTO_NEGATIVE_SHARE if auto_budget(train) and not getattr(train, "group_by_length", False) else None
    return None if share is None else float(share)


def hidden_size(model) -> int | None:
    """The base's hidden width (``n_embd`` on GPT-2 style configs, through ``attribute_map``); None when the
    config does not say."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        try:
            config = config.get_text_config()
        except ValueError:  # several text sub-configs: no one width to scale by
            return None
    width = getattr(config, "hidden_size", None)
    return int(width) if isinstance(width, int) and width > 0 else None


def learning_rate(train: Any, model) -> float:
    """``train.lr``, with `auto` resolved for ``model``: :data:`see.config.AUTO_LR` on a base
    :data:`see.config.AUTO_LR_WIDTH` wide, inversely proportional to the width elsewhere, and ``AUTO_LR`` itself
    when the config gives no width. Under Adam every LoRA weight moves about ``lr`` a step whatever the
    width, so the change to a layer's output grows with the width it sums over."""
    if train.lr != "auto":
        return float(train.lr)
    width = hidden_size(model)
    return AUTO_LR if width is None else AUTO_LR * AUTO_LR_WIDTH / width


def early_stopping_patience(train: Any) -> int | None:
    """Evaluations without improvement before stopping: ``train.patience``, else 3 under the auto budget;
    None: an explicit budget (``epochs``/``max_steps``) trains to its end and keeps its last weights."""
    if train.patience is not None:
        return int(train.patience) or None
    return 3 if auto_budget(train) else None


def trainable_weights(model, device=None) -> dict[str, torch.Tensor]:
    """A copy of the weights that train (an adapter's LoRA and token rows), by parameter name."""
    return {n: p.detach().to(device).clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_weights(model, weights: dict[str, torch.Tensor]) -> None:
    """Put weights taken by :func:`trainable_weights` back into a model of the same shape."""
    named = dict(model.named_parameters())
    with torch.no_grad():
        for n, value in weights.items():
            named[n].copy_(value)


class EarlyStopping:
    """Held-out evaluations during training: keep the best trainable weights, stop after ``patience``
    evaluations without improvement.

    Better means a higher ``heldout_score``, or the same score with a held-out
    loss at least 1% and ``MIN_LOSS_GAIN`` nats lower: exact match on a hard task
    stays at 0 for a while after the loss starts falling, and stopping there would
    stop too soon. The absolute floor matters once the expert is perfect: on
    ``minilm`` an intent task scored 100% on every held-out figure from step 100,
    yet its loss kept falling by more than 1% (0.0024 -> 0.0008 -> 0.0006 ...), so
    it trained all 1,000 steps (524 s) instead of stopping at step 400.

    Before step ``not_before`` (the auto budget's floor) only a perfect expert
    stops: an expert can learn its answers first and rejection later, and its
    score then sits still for a few evaluations. On a character-level base,
    ``extract_city``'s and ``extract_email``'s experts stopped at step 400 on
    such a plateau, kept their step-100 weights (accepting nothing, or
    everything), and the ensemble routed 32% of queries right; ``even_odd`` on
    another base stopped at step 600 at 63% held-out, where a run that went on
    reached 97% at step 800 (benchmarks/embedded-base/README.md).
    """

    MIN_LOSS_GAIN = 0.01

    def __init__(self, evaluate: Callable[[Any], dict], every: int, patience: int | None,
                 train_mode: Callable[[Any], None] = lambda m: m.train(), not_before: int = 0):
        self.evaluate = evaluate
        self.train_mode = train_mode
        self.every = every
        self.patience = patience
        self.not_before = not_before
        self.best_score = -math.inf
        self.best_loss = math.inf
        self.best_step = 0
        self.best_state: dict | None = None
        self.since_best = 0
        self.history: list[dict] = []

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 or step == total

    def __call__(self, model, step: int) -> bool:
        """Evaluate at ``step``; True when training should stop."""
        model.eval()
        figures = self.evaluate(model)
        self.train_mode(model)
        score, loss = figures["heldout_score"], figures.get("heldout_loss", math.inf)
        self.history.append({"step": step, **figures})
        same = abs(score - self.best_score) <= 1e-6
        if score > self.best_score + 1e-6 or (same and loss < 0.99 * self.best_loss
                                                     and self.best_loss - loss >= self.MIN_LOSS_GAIN):
            self.best_score, self.best_loss, self.best_step, self.since_best = score, loss, step, 0
            self.best_state = trainable_weights(model)
        else:
            self.since_best += 1
        if self.patience is None or self.since_best < self.patience:
            return False
        return step >= self.not_before or self.best_score >= 1.0 - 1e-6

    def postfix(self) -> dict:
        """The latest held-out figures, for the progress bar."""
        last = self.history[-1]
        return {short: f"{100 * last[k]:.0f}%" for k, short in (("heldout_exact_match", "em"),
                                                             ("heldout_accept_rate", "accept"),
                                                             ("heldout_reject_rate", "reject")) if k in last}

    def restore_best(self, model) -> None:
        """Back to the best evaluation's weights; without patience (an explicit budget) the last ones stay."""
        if self.best_state is None or self.patience is None:
            return
        load_trainable_weights(model, self.best_state)

    def state(self) -> dict:
        return {"best_score": self.best_score, "best_loss": self.best_loss, "best_step": self.best_step,
                "best_state": self.best_state, "since_best": self.since_best, "history": self.history}

    def load(self, state: dict) -> None:
        self.best_score, self.best_loss, self.best_step = state["best_score"], state["best_loss"], state["best_step"]
        self.best_state, self.since_best, self.history = state["best_state"], state["since_best"], state["history"]


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of indices whose examples have similar lengths, in a random order.

    Each pass shuffles the examples with ``generator``, cuts the order into groups of ``group`` batches,
    sorts each group by length and cuts it into batches, then shuffles the batches. At most one batch is
    short (the last group's last), so a pass has as many batches as plain shuffling gives. The order
    depends on nothing but the generator's state, which the training loop seeds per epoch, so a resumed
    run sees the same batches.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator, group: int = 50):
        self.lengths, self.batch_size, self.generator, self.group = list(lengths), batch_size, generator, group

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


class NegativeCappedBatches:
    """Batches of one epoch: every positive, and the next window of the negatives, at most ``share`` of it.

    Why: under a fixed step budget every negative drawn is a positive not drawn. A first expert with general
    negatives and near misses trains on 1.5 negatives a positive, so it saw its 270 positives 24 times in
    1,000 steps where the task's own LoRA saw them 53 times, and answered reverse_word 34% where that LoRA
    answered 52% (51% with 2.5x the steps: ``benchmarks/user-tasks/results/parity-variants``). A negative is
    one token to learn and needs fewer passes. The negatives are walked in one seeded order, a window per
    epoch (``set_epoch``), so each is seen once every ``ceil(negatives / per_epoch)`` epochs; the batch order
    depends only on the generator, which the training loop seeds per epoch, so a resumed run sees the same
    batches. An epoch with any negatives keeps at least one, so a tiny task still sees them.
    """

    def __init__(self, negative: Sequence[bool], batch_size: int, generator: torch.Generator, share: float | None,
                 seed: int = 0):
        self.positives = [k for k, neg in enumerate(negative) if not neg]
        negatives = [k for k, neg in enumerate(negative) if neg]
        order = torch.randperm(len(negatives), generator=torch.Generator().manual_seed(seed)).tolist()
        self.negatives = [negatives[k] for k in order]
        self.batch_size, self.generator, self.epoch = batch_size, generator, 0
        # the small epsilon keeps float error from losing one negative at an exact boundary (0.45 of 33 + 27)
        cap = (len(negatives) if share is None or not self.positives
               else math.floor(share * len(self.positives) / (1 - share) + 1e-9))
        self.per_epoch = min(len(negatives), max(1 if negatives else 0, cap))
        self.hard: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_hard(self, hard: Sequence[int]) -> None:
        """Negatives (indices into the examples) that the windows from now on take first, hardest first: at
        most half of a window, so the seeded walk still reaches every other negative."""
        self.hard = list(hard)[:self.per_epoch // 2]

    def __len__(self) -> int:
        return math.ceil((len(self.positives) + self.per_epoch) / self.batch_size)

    def window(self) -> list[int]:
        """This epoch's negatives: the hard ones (:meth:`set_hard`), then the next of the seeded order,
        wrapping around, ``per_epoch`` in all."""
        n = len(self.negatives)
        # the walk moves by the places it fills, so the windows stay contiguous: moving by per_epoch would
        # skip the same stretch every epoch when per_epoch divides n
        step = self.per_epoch - len(self.hard)
        start = (self.epoch * step) % n if n else 0
        hard = set(self.hard)
        walk = [self.negatives[(start + k) % n] for k in range(self.per_epoch)]
        return self.hard + [k for k in walk if k not in hard][:step]

    def __iter__(self):
        pool = self.positives + self.window()
        order = [pool[k] for k in torch.randperm(len(pool), generator=self.generator).tolist()]
        for start in range(0, len(order), self.batch_size):
            yield order[start:start + self.batch_size]


def hard_negatives(model, encoded: Sequence[EncodedExample], negatives: Sequence[int], pad_id: int,
                   device: torch.device, batch_size: int = 64) -> list[int]:
    """The negatives a model gets wrong, hardest first: those whose first target token (``<<neg>>``) it gives
    less than half its probability, by that probability, lowest first. Ties keep the given order."""
    # scored in length order, so a batch pads to its neighbours' length, not to the longest negative's: random
    # batches of the user-task suite's negatives made this ten times slower
    by_length = sorted(negatives, key=lambda k: len(encoded[k].input_ids))
    rank = {k: r for r, k in enumerate(negatives)}
    scored = []
    with torch.inference_mode():
        for start in range(0, len(by_length), batch_size):
            rows = by_length[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate([encoded[k] for k in rows], pad_id).items()}
            labels = batch["labels"]
            logits, keep = target_logits(model, batch, use_cache=False)
            # rows are left-padded, so each one's first target is at the same distance from its end as its
            # number of targets: the column before it holds the logits that predict it
            width = labels.shape[1]
            first = width - (labels != IGNORE).sum(1)
            at = torch.arange(len(rows), device=logits.device)
            p = logits[at, first - 1 - (width - keep)].float().softmax(-1)[at, labels[at, first]]
            scored += [(float(q), k) for q, k in zip(p.tolist(), rows) if q < 0.5]
    return [k for _, k in sorted(scored, key=lambda x: (x[0], rank[x[1]]))]


class NegativesAddedBatches(NegativeCappedBatches):
    """``train.negatives_in_batch=added``: each batch holds ``batch_size`` positives, the batch the task's own
    LoRA would train on, and this epoch's negatives (:meth:`window`) spread evenly over the batches on top.

    Why: mixed into batches of ``batch_size``, negatives take the positives' places, so each step's answer
    gradient averages fewer answers and is noisier than a plain LoRA's. superni-cpu's sst2 expert (seed 2)
    answered every held-out review with the commonest label from step 276 to 828 of 922, while the decision
    was learned by step 184 (``benchmarks/results/negatives-ablation/sst2-trajectory-defaults``). An epoch is
    then one pass over the positives, so ``train.epochs`` means what it means for a plain LoRA. Not the
    default: it rescued that seed (68) but left seeds 0 and 1 on the commonest label (53 and 52), and let
    more OOD queries into the user-task suite's experts (same ablation's README).
    """

    def __len__(self) -> int:
        return math.ceil((len(self.positives) or self.per_epoch) / self.batch_size)

    def __iter__(self):
        positives = [self.positives[k] for k in torch.randperm(len(self.positives), generator=self.generator).tolist()]
        window = self.window()
        negatives = [window[k] for k in torch.randperm(len(window), generator=self.generator).tolist()]
        n = len(self)
        if not positives:
            yield from (negatives[s:s + self.batch_size] for s in range(0, len(negatives), self.batch_size))
            return
        for b in range(n):
            # batch b takes negatives [b * N / n, (b + 1) * N / n): every batch within one of the others
            lo, hi = b * len(negatives) // n, (b + 1) * len(negatives) // n
            yield positives[b * self.batch_size:(b + 1) * self.batch_size] + negatives[lo:hi]


def run_signature(lora: Any, train: Any, n_examples: int) -> dict:
    """What a checkpoint must share with the run that resumes it: the adapter's shape and the schedule."""
    keys = ("batch_size", "grad_accum", "lr", "seed", "max_length")
    lora_keys = ("r", "alpha", "target_modules", "modules_to_save")
    sig = {f"lora.{k}": _plain(getattr(lora, k, None)) for k in lora_keys}
    sig.update({f"train.{k}": _plain(getattr(train, k, None)) for k in keys})
    if getattr(train, "group_by_length", False):  # absent when off, so checkpoints from before it still resume
        sig["train.group_by_length"] = True
    share = negative_share(train)
    if share is not None:  # likewise
        sig["train.negative_share"] = share
    if getattr(train, "loss_weighting", "tokens") != "tokens":  # likewise
        sig["train.loss_weighting"] = train.loss_weighting
    if getattr(train, "negatives_in_batch", "mixed") != "mixed":  # likewise
        sig["train.negatives_in_batch"] = train.negatives_in_batch
    if share is not None and getattr(train, "hard_negatives", False):  # likewise; mined only under a share
        sig["train.hard_negatives"] = True
    sig["training examples"] = n_examples
    return sig


def signature_changes(saved: dict, current: dict) -> list[str]:
    """``key: old -> new`` for each setting a saved run signature and the resuming run's disagree on."""
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in dict.fromkeys([*saved, *current])
            if saved.get(k) != current.get(k)]


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, losses: list[float],
                    stopping: EarlyStopping | None = None, signature: dict | None = None,
                    hard_negatives: Sequence[int] = ()) -> None:
    """Trainable weights, optimizer, scheduler, RNG and the early-stopping state: enough to resume bit-for-bit
    on one process."""
    path.mkdir(parents=True, exist_ok=True)
    state = {
        "trainable": trainable_weights(model, device="cpu"),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
        "losses": losses, "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
        "early_stopping": stopping.state() if stopping is not None else None,
        "signature": signature, "hard_negatives": list(hard_negatives),
    }
    tmp = path / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(path / "state.pt")


def load_checkpoint(path: Path) -> dict | None:
    file = path / "state.pt"
    if not file.is_file():
        return None
    # weights_only: a checkpoint in a shared ensemble folder must not be able to run code
    return torch.load(file, map_location="cpu", weights_only=True)


def new_adapter(model, prompt: PromptFormat, lora: Any, token_ids: Sequence[int] = (), kind: str = "lora"):
    """``model`` wrapped with a fresh LoRA (or aLoRA) whose ``token_ids`` embedding rows train too."""
    from peft import get_peft_model

    invocation = prompt.invocation_ids() if kind == "alora" else None
    peft_model = get_peft_model(model, lora_config(lora, model, token_ids, kind, invocation))
    rows_only_trainable_tokens(peft_model)
    return peft_model


def train_lora(model, prompt: PromptFormat, encoded: Sequence[EncodedExample], *, lora: Any, train: Any,
               token_ids: Sequence[int] = (), kind: str = "lora", checkpoint_dir: Path | None = None,
               resume: bool = False, progress: bool = True, accelerator=None, log: Callable[[str], None] = print,
               peft_model=None, where: str | None = None, evaluate: Callable[[Any], dict] | None = None,
               negative: Sequence[bool] | None = None, stop_at: int | None = None):
    """Wrap ``model`` with a fresh LoRA and train it on encoded (prompt, target) examples.

    Returns ``(peft_model, TrainResult)``. ``token_ids`` are embedding rows that
    train too (an expert's indicator tokens). Passing ``peft_model`` continues
    training that model's active adapter (sequential fine-tuning baselines)
    instead of adding a new one. ``evaluate(model)`` returns held-out figures
    with a ``score``: it runs every ``train.eval_every`` steps, training stops
    after ``train.patience`` evaluations without improvement, and the best
    weights are kept. ``negative`` marks the examples that are negatives, for ``train.negative_share``.
    ``stop_at`` ends training at that step of the budget's schedule (``train.refit`` repeats an early stop).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    accelerator = accelerator or Accelerator(mixed_precision=mixed_precision(train.mixed_precision),
                                             gradient_accumulation_steps=int(train.grad_accum),
                                             cpu=not torch.cuda.is_available())
    set_seed(int(train.seed))
    bound_heap()
    base_dropout = bool(getattr(train, "base_dropout", False))
    if not encoded:
        raise DataError("no training examples", file=where)
    share = negative_share(train)
    if share is not None and getattr(train, "group_by_length", False):
        raise ConfigError("train.negative_share and train.group_by_length cannot be combined yet",
                          field="train.negative_share", hint="set train.negative_share=auto or none")
    added = getattr(train, "negatives_in_batch", "mixed") == "added"
    if added and getattr(train, "group_by_length", False):
        raise ConfigError("train.negatives_in_batch=added and train.group_by_length cannot be combined yet",
                          field="train.negatives_in_batch", hint="set train.negatives_in_batch=mixed")
    tokenizer = prompt.tokenizer
    if peft_model is None:
        peft_model = new_adapter(model, prompt, lora, token_ids, kind)
    else:
        rows_only_trainable_tokens(peft_model)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    lr = learning_rate(train, model)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=float(train.weight_decay))
    generator = torch.Generator().manual_seed(int(train.seed))
    pad = lambda b: collate(b, tokenizer.pad_token_id)  # noqa: E731
    capped = None
    if negative is not None and len(negative) != len(encoded):
        raise ValueError("one negative flag per encoded example")
    if added and negative is not None and any(negative):
        batches = capped = NegativesAddedBatches(negative, int(train.batch_size), generator,
                                                 None if share is None else float(share), seed=int(train.seed))
    elif share is not None and negative is not None and any(negative):
        batches = capped = NegativeCappedBatches(negative, int(train.batch_size), generator, float(share),
                                                 seed=int(train.seed))
    elif getattr(train, "group_by_length", False):
        batches = LengthGroupedBatches([len(e.input_ids) for e in encoded], int(train.batch_size), generator)
    else:
        batches = None
    if batches is not None:
        # the generator also seeds the loader's own iterator: without it each new iterator draws from the
        # global RNG, which also drives dropout, and a resumed run's dropout masks would shift
        loader = torch.utils.data.DataLoader(encoded, batch_sampler=batches, generator=generator, collate_fn=pad)
    else:
        loader = torch.utils.data.DataLoader(encoded, batch_size=int(train.batch_size), shuffle=True,
                                             generator=generator, collate_fn=pad)
    updates_per_epoch = max(1, math.ceil(len(loader) / int(train.grad_accum) / accelerator.num_processes))
    total = step_budget(train, updates_per_epoch)
    stopping = None
    patience = early_stopping_patience(train)
    # Under an explicit budget with no patience the periodic evaluations choose nothing, and on real text they
    # cost much of the run (cl-standard, minilm: ten evaluations of 200 queries, ~70 s each, in a 1,749 s
    # expert); they run there only when the user asks for them with train.eval_every.
    if evaluate is not None and train.eval_every != 0 and (train.eval_every or patience is not None):
        every = int(train.eval_every) if train.eval_every else max(10, total // 10)
        floor = min(int(train.min_steps), total) if auto_budget(train) else 0
        stopping = EarlyStopping(evaluate, every, patience, train_mode=lambda m: set_train_mode(m, base_dropout),
                                 not_before=floor)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(round(float(train.warmup_ratio) * total)),
                              num_training_steps=total)
    peft_model, optimizer, loader, scheduler = accelerator.prepare(peft_model, optimizer, loader, scheduler)

    # Sub-batches of similar length (same gradient, less padding) on one CPU process only: measured there;
    # several processes would all-reduce once per sub-batch.
    balanced = getattr(train, "loss_weighting", "tokens") == "balanced" and len(token_ids) > 0
    split = (bool(getattr(train, "split_padded_batches", True)) and accelerator.num_processes == 1
             and accelerator.device.type == "cpu")

    def diverged(loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(f"training diverged: the loss became {loss.item()} at step {step + 1} "
                                f"(learning rate {lr:.3g}, train.lr={train.lr})", field="train.lr",
                                hint="lower train.lr; nothing was saved and the ensemble is unchanged")

    # hard negatives are mined about ten times a run, at the start of an epoch, never the first: before any
    # training every negative is "wrong" and the ranking says nothing. Only under a negative share: without
    # one every negative is in every epoch already
    mine = capped is not None and share is not None and bool(getattr(train, "hard_negatives", False))
    mine_every = max(1, round(total / updates_per_epoch / 10))
    step, losses = 0, []
    if resume and checkpoint_dir is not None:
        state = load_checkpoint(checkpoint_dir)
        signature = run_signature(lora, train, len(encoded))
        if state is not None and state.get("signature") not in (None, signature):
            changed = signature_changes(state["signature"], signature)
            data_changed = state["signature"].get("training examples") != signature["training examples"]
            raise ConfigError(f"cannot resume: the checkpoint was made with other settings ({'; '.join(changed)})"
                              + ("; the task or its negatives differ (an expert added since changes the "
                                 "rehearsal negatives)" if data_changed else ""),
                              file=checkpoint_dir / "state.pt",
                              hint="resume with the settings and ensemble of the interrupted run, or drop --resume "
                                   "to start over (the checkpoint stays until then)")
        if state is not None:
            load_trainable_weights(accelerator.unwrap_model(peft_model), state["trainable"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, losses = state["step"], list(state["losses"])
            if stopping is not None and state.get("early_stopping"):
                stopping.load(state["early_stopping"])
            if mine:
                capped.set_hard(state.get("hard_negatives", []))
            torch.set_rng_state(state["torch_rng"])
            random.setstate(state["python_rng"])
            log(f"resuming from step {step}/{total}")

    end = min(total, int(stop_at)) if stop_at else total
    set_train_mode(peft_model, base_dropout)
    bar = tqdm(total=end, initial=step, desc="training", disable=not (progress and accelerator.is_main_process),
               dynamic_ncols=True, leave=False)
    batches_per_update = int(train.grad_accum)
    start = time.time()
    epoch = (step * batches_per_update) // max(1, len(loader))
    skip = (step * batches_per_update) % max(1, len(loader))
    window: list[float] = []
    stopped = False
    while step < end and not stopped:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        generator.manual_seed(int(train.seed) + epoch)
        if capped is not None:
            capped.set_epoch(epoch)
            if mine and epoch > 0 and epoch % mine_every == 0 and not skip:
                model_now = accelerator.unwrap_model(peft_model)
                model_now.eval()
                chosen = [hard_negatives(model_now, encoded, capped.negatives, tokenizer.pad_token_id,
                                         accelerator.device) if accelerator.is_main_process else None]
                if accelerator.num_processes > 1:
                    # every process must build the same epoch, and low precision can rank them differently
                    from accelerate.utils import broadcast_object_list
                    broadcast_object_list(chosen, from_process=0)
                capped.set_hard(chosen[0])
                set_train_mode(peft_model, base_dropout)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in batches:
            if balanced:
                batch["weights"] = balanced_weights(batch["labels"], token_ids)
            with accelerator.accumulate(peft_model):
                loss = target_loss_backward(peft_model, batch, accelerator.backward, split=split, check=diverged)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(accelerator.gather(loss.detach().reshape(1)).mean().item())
            if accelerator.sync_gradients:
                step += 1
                losses.append(sum(window) / len(window))
                window = []
                bar.update(1)
                postfix = {"loss": f"{losses[-1]:.4f}"}
                if stopping is not None and stopping.due(step, total):
                    stopped = stopping(accelerator.unwrap_model(peft_model), step)
                if stopping is not None and stopping.history:
                    postfix.update(stopping.postfix())
                bar.set_postfix(postfix)
                if (checkpoint_dir is not None and int(train.checkpoint_every) and step % int(train.checkpoint_every) == 0
                        and step < total and not stopped and accelerator.is_main_process):
                    save_checkpoint(checkpoint_dir, accelerator.unwrap_model(peft_model), optimizer, scheduler,
                                    step, losses, stopping, run_signature(lora, train, len(encoded)),
                                    capped.hard if capped is not None else ())
                fault_point(f"step-{step}")
                if step >= end or stopped:
                    break
        epoch += 1
    bar.close()
    accelerator.wait_for_everyone()
    peft_model = accelerator.unwrap_model(peft_model)
    peft_model.eval()
    metrics = {"train_loss": round(float(sum(losses[-10:]) / max(1, len(losses[-10:]))), 5),
               "steps": step, "step_budget": total, "examples": len(encoded), "seconds": round(time.time() - start, 3),
               "processes": accelerator.num_processes, "lr": float(f"{lr:.6g}")}
    if stopping is not None and stopping.history:
        stopping.restore_best(peft_model)
        metrics.update({"best_step": stopping.best_step, "stopped_early": stopped,
                        "eval_history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}
                                         for h in stopping.history]})
    return peft_model, TrainResult(metrics=metrics, steps=step, losses=losses)


def encode_examples(model, prompt: PromptFormat, examples: Sequence[TrainingExample], indicator: Indicator | None,
                    train: Any, where: str | None = None) -> tuple[list[EncodedExample], int]:
    """Every example encoded for training, over-long ones truncated (with one warning) or rejected."""
    max_length = min(int(train.max_length), model_context(model))
    encoded, n_truncated = [], 0
    for k, ex in enumerate(examples):
        enc, cut = encode_example(prompt, ex, indicator, max_length, train.overlength,
                                  where=f"{where} (example {k + 1})" if where else None)
        encoded.append(enc)
        n_truncated += cut
    if n_truncated:
        warnings.warn(f"{n_truncated} example(s) longer than {max_length} tokens (train.max_length or the model's "
                      "context) were truncated from the start of the prompt", stacklevel=3)
    return encoded, n_truncated


def train_expert(model, prompt: PromptFormat, indicator: Indicator, train_examples: Sequence[TrainingExample], *,
                 lora: Any, train: Any, kind: str = "lora", where: str | None = None, **kwargs):
    """Train one SEE expert: its positives and negatives, with the indicator tokens' rows trainable.

    ``kwargs`` go to :func:`train_lora`.
    """
    encoded, n_truncated = encode_examples(model, prompt, train_examples, indicator, train, where)
    peft_model, result = train_lora(model, prompt, encoded, lora=lora, train=train, token_ids=indicator.ids,
                                    kind=kind, where=where, negative=[ex.kind == "neg" for ex in train_examples],
                                    **kwargs)
    result.metrics["truncated"] = n_truncated
    return peft_model, result
