"""The one config schema: every default of ``see`` lives here, documented where it is defined.

Configs are OmegaConf YAML files plus ``key=value`` dotlist overrides, merged
over these dataclasses (torchtune style). Each field carries its help text and
its check in ``metadata`` (PEFT's ``LoraConfig`` style), so the README's table
and the validation come from the same place. Unknown keys and wrong types are
rejected with the file, line and key, and the list of valid keys.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from see.errors import ConfigError

#: Every choice set, once. The CLI and the loaders use these tuples too.
EXPERT_KINDS = ("lora", "alora")
DTYPES = ("auto", "float32", "bfloat16", "float16")
FORMATS = ("auto", "jsonl", "json", "csv", "superni", "cl-benchmark", "hf")
OVERLENGTH = ("truncate", "reject")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
LOSS_WEIGHTINGS = ("tokens", "balanced")
NEGATIVES_IN_BATCH = ("mixed", "added")
ROUTING_MODES = ("batched", "sequential")
#: ``train.negative_share: auto`` under the ``auto`` step budget. Measured on the user-task suite (README):
#: against every negative once an epoch, mean exact match 63.8 -> 66.6% and the worst OOD family reaching
#: the fallback 70 -> 93%, routing unchanged within a point.
AUTO_NEGATIVE_SHARE = 0.2
#: ``train.lr: auto`` is ``AUTO_LR * AUTO_LR_WIDTH / hidden size``: 1e-3, the rate every ``minilm`` benchmark
#: was measured at, on the 384-wide ``minilm``, and proportionally less on a wider base (README, user tasks).
AUTO_LR = 1e-3
AUTO_LR_WIDTH = 384


def setting(default: Any = None, help: str = "", *, choices: tuple | None = None, low: float | None = None,
            high: float | None = None, low_open: bool = False, high_open: bool = False, numbers: bool = False,
            booleans: bool = False, nullable: bool = False, factory: Any = None) -> Any:
    """A documented config field; ``low``/``high`` bound numbers (``*_open``: the bound itself is excluded);
    ``numbers``: a number is allowed besides the ``choices``; ``booleans``: true and false are allowed besides
    the ``choices``; ``nullable``: `none` is allowed too (fields typed ``Optional`` allow it already)."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open,
            "high_open": high_open, "numbers": numbers, "booleans": booleans, "nullable": nullable}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    return field(default_factory=cls)


@dataclass
class ModelConfig:
    """Which models the ensemble uses. Fixed at ``see init``."""

    base: str = setting("embedded", "base model: `embedded`, `minilm`, a local HF model dir, or a hub id "
                                    "(fixed at init)")
    fallback: Optional[str] = setting(None, "model that answers when every expert rejects; none means the base "
                                            "with adapters off")
    expert_kind: str = setting("lora", "`lora` or `alora` (activated LoRA), for the whole ensemble",
                               choices=EXPERT_KINDS)
    trust_remote_code: bool = setting(False, "let the model directory's own Python code run (opt-in only)")
    allow_pickle: bool = setting(False, "accept pickle (.bin) weights, which can run code when loaded")
    dtype: str = setting("auto", "`auto` keeps the checkpoint's dtype on accelerators and uses float32 on CPU",
                         choices=DTYPES)


@dataclass
class PromptConfig:
    """How an (instruction, input) pair becomes the text a model sees. Fixed at ``see init``."""

    template: str = setting("{instruction}\n{input}\nAnswer:",
                            "the one prompt template for training, routing and evaluation; the line holding "
                            "{instruction} is dropped when a query has none (fixed at init)")
    pos_token: str = setting("<<pos>>", "indicator token an expert says to accept a query")
    neg_token: str = setting("<<neg>>", "indicator token an expert says to reject a query")


@dataclass
class DataConfig:
    """How ``--data`` is read into a Task."""

    format: str = setting("auto", "data format; `auto` detects it from the content", choices=FORMATS)
    input_field: str = setting("input", "input field or column")
    output_field: str = setting("output", "output field or column")
    instruction: Optional[str] = setting(None, "instruction for every example (overrides a SuperNI definition)")
    split: str = setting("train", "split of folder formats (SuperNI, CL_Benchmark, hf)")
    max_examples: Optional[int] = setting(None, "keep a seeded sample of at most this many examples", low=0)


@dataclass
class LoraSettings:
    """PEFT LoRA hyper-parameters of one expert."""

    r: int = setting(16, "LoRA rank", low=0, low_open=True)
    alpha: int = setting(32, "LoRA alpha (scaling = alpha / r)", low=0, low_open=True)
    dropout: float = setting(0.0, "LoRA dropout (PEFT's default). 0.05 cost a fifth of each training step on "
                                  "the CPU (drawing the masks) for no clear gain on the user-task suite (README)",
                             low=0.0, high=1.0)
    target_modules: Any = setting("all-linear", "`all-linear` or a list such as `[q_proj, v_proj]`; works for "
                                                "Llama-, Qwen- and GPT-2-style models")
    modules_to_save: Optional[list] = setting(None, "extra modules trained in full and saved with each expert")


@dataclass
class TrainConfig:
    """How one expert trains."""

    epochs: Any = setting("auto", "training length in epochs, or `auto`: 3 epochs, at least `train.min_steps` and "
                                  "at most `train.max_auto_steps` optimizer steps, whatever the task's size",
                          low=0, low_open=True, choices=("auto",), numbers=True)
    min_steps: int = setting(1000, "floor of the `auto` step budget: a small task needs many passes to learn an "
                                   "answer format it has never seen, and early stopping ends a task that learned "
                                   "sooner", low=0, low_open=True)
    max_auto_steps: int = setting(2000, "cap of the `auto` step budget: a large task learns within a fraction of "
                                        "an epoch", low=0, low_open=True)
    max_steps: Optional[int] = setting(None, "optimizer steps; overrides epochs when set", low=0, low_open=True)
    batch_size: int = setting(16, "examples per batch", low=0, low_open=True)
    grad_accum: int = setting(1, "batches per optimizer step", low=0, low_open=True)
    lr: Any = setting("auto", "peak learning rate, or `auto`: 1e-3 x 384 / the base's hidden size (1e-3 on "
                              "minilm, 3e-3 on the embedded base's 128, about 1e-4 on a 4,096-wide 7B model): "
                              "under Adam a LoRA update moves the output in proportion to the width it sums "
                              "over; on the embedded base 1e-3 left reverse_word at 44% (README, user tasks)",
                      low=0, low_open=True, choices=("auto",), numbers=True)
    weight_decay: float = setting(0.0, "AdamW weight decay", low=0)
    warmup_ratio: float = setting(0.05, "share of the steps spent warming the learning rate up", low=0.0, high=1.0)
    base_dropout: bool = setting(False, "keep the frozen base model's own dropout on while an expert trains (off: "
                                        "only `lora.dropout`; the base's dropout trains nothing and costs a third "
                                        "of a step on BERT-like bases)")
    max_length: int = setting(256, "longest training example in tokens (prompt + target)", low=0, low_open=True)
    group_by_length: bool = setting(False, "batch examples of similar length together (shuffled in groups of 50 "
                                           "batches, then sorted by length inside each group), as the Hugging "
                                           "Face Trainer's `group_by_length`: a step pays for its padding, and "
                                           "random batches of cl-standard's amazon reviews are 39% padding)")
    split_padded_batches: bool = setting(True, "on one CPU process, run each batch as sub-batches of similar "
                                               "length: the same examples and the same gradient, less padding "
                                               "(one long negative among short queries pads a whole batch to its "
                                               "length); off elsewhere, where it is not measured")
    negative_share: Any = setting("auto", "at most this share of each epoch's examples are negatives (each epoch "
                                          "takes the next of them in one seeded order, so all are seen over the "
                                          "epochs), so that the task's positives get more of a fixed step budget; "
                                          f"`auto`: {AUTO_NEGATIVE_SHARE} under the `auto` budget (unless "
                                          "`group_by_length`), off with an explicit `epochs` or `max_steps`; none: "
                                          "every example once an epoch (README, user tasks)",
                                  low=0, high=1, low_open=True, high_open=True, choices=("auto",), numbers=True,
                                  nullable=True)
    loss_weighting: str = setting("tokens", "`tokens`: one mean over every target token (answers, stops and "
                                            "`<<pos>>`/`<<neg>>` alike); `balanced`: the mean over answer tokens "
                                            "plus the mean over `<<pos>>`/`<<neg>>` tokens, so that an expert's "
                                            "answers weigh as in a plain LoRA whatever share of a batch its "
                                            "negatives take (no effect without indicator tokens; not the "
                                            "default: sst2 on minilm 75/68/68 over seeds 0-2 against 73/74/56, "
                                            "and more OOD queries kept by the user-task suite's experts, "
                                            "benchmarks/results/negatives-ablation)",
                                  choices=LOSS_WEIGHTINGS)
    negatives_in_batch: str = setting("mixed", "`mixed`: negatives are examples like the positives, drawn into "
                                               "batches of `batch_size`; `added`: each batch holds `batch_size` "
                                               "positives, as the task's plain LoRA would, and the epoch's "
                                               "negatives are spread over the batches on top (an epoch is one "
                                               "pass over the positives; not the default: sst2 on minilm "
                                               "53/52/68 over seeds 0-2 against 73/74/56, and more OOD "
                                               "queries kept by the user-task suite's experts, "
                                               "benchmarks/results/negatives-ablation)",
                                 choices=NEGATIVES_IN_BATCH)
    hard_negatives: bool = setting(False, "under `negative_share`, about ten times a run, the negatives the expert "
                                          "then gets wrong (P(`<<neg>>`) under one half) take up to half of each "
                                          "epoch's negative places, hardest first, so that an older task's look-alike "
                                          "queries are not seen only once every few epochs; not the default: on the "
                                          "user-task suite routing fell 96.1 -> 94.2% and the worst OOD family reaching "
                                          "the fallback 95 -> 72%, and subtract still took 36% of add's queries "
                                          "(benchmarks/user-tasks/README.md)")
    overlength: str = setting("truncate", "a longer example is `truncate`d at the start of its prompt, with a "
                                          "warning, or `reject`ed", choices=OVERLENGTH)
    mixed_precision: str = setting("auto", "`auto`: bf16 on GPUs that support it, else fp32",
                                   choices=MIXED_PRECISION)
    seed: int = setting(0, "seed for sampling, shuffling and initialisation")
    eval_fraction: float = setting(0.1, "held-out share of the task, evaluated at the end of training",
                                   low=0.0, high=1.0, high_open=True)
    eval_max: int = setting(100, "at most this many held-out examples of each kind", low=0)
    eval_every: Optional[int] = setting(None, "evaluate the held-out set every N steps during training; none: "
                                              "about 10 times per run when early stopping is on (`patience`), "
                                              "else only at the end; 0: only at the end", low=0)
    patience: Optional[int] = setting(None, "stop after this many held-out evaluations without improvement and "
                                            "keep the best weights (under the `auto` budget not before `train.min_steps`, "
                                            "unless every held-out figure is perfect); none: 3 under the `auto` "
                                            "budget, never with an explicit `epochs` or `max_steps`; 0: never", low=0)
    min_score: Optional[float] = setting(None, "refuse to add an expert whose held-out exact match is below this "
                                               "(exit code 3, ensemble unchanged); none: only warn",
                                         low=0.0, high=1.0)
    checkpoint_every: int = setting(0, "checkpoint every N steps, for `--resume` (0: never)", low=0)
    repair_steps: int = setting(200, "when the new expert accepts more than 10% of an earlier task's kept queries "
                                     "that it did not train on (queries visit the newest expert first, so it "
                                     "would answer them), train it this many steps more with half of those "
                                     "queries as negatives and every negative in every epoch, and keep the "
                                     "result if the share of the other half it gives back outweighs what its "
                                     "own held-out exact match and acceptance lose (README, user tasks); one "
                                     "process only; 0: only warn",
                                low=0)
    refit: Any = setting(False, "once the held-out set has chosen the step count and set the threshold, train "
                                "the expert again from the start on its held-out positives too, so that the expert "
                                "added has learned from all of the task, as scikit-learn's "
                                "`GridSearchCV(refit=True)` does: on the first training's schedule stopped where "
                                "early stopping stopped it (else the budget as given; the kept attempt's seed; a "
                                "kept repair's extra steps replayed); the held-out figures and the gate stay those "
                                "of the first training, the first weights are put back when the refit rejects more "
                                "than one held-out negative fewer at the threshold, and a kept refit routes at the "
                                "`auto` threshold with `routing.margin_odds` of room once more, since it has seen "
                                "the positives that set it. `true`: always; `auto`: only when the first training "
                                "learned (held-out exact match above the base's and above always giving the "
                                "commonest answer) and left room (under 100%), since a refit costs as much "
                                "training again. Not the default: superni-cpu's emotion 79.0 -> 83.0 over three "
                                "seeds (oracle 81.7), but on the user-task suite, paired on one machine, mean "
                                "exact match 69.8 -> 70.4% while the room given to last_letter's refit let 34% of "
                                "`ood_next_letter` in (worst OOD family to the fallback 72 -> 46%). One process "
                                "only (README)",
                         choices=("auto",), booleans=True)
    restarts: int = setting(1, "train the expert again from the start, with another seed, when its held-out "
                               "answers are no better than always giving the commonest one (closed answer sets "
                               "only), at most this many times; the attempt with the best held-out score is kept. "
                               "superni-cpu's sst2 expert on minilm collapsed onto the commonest label with seed 2 "
                               "only (benchmarks/results/negatives-ablation); 0: never", low=0)
    restart_loss_weighting: str = setting("balanced", "`train.loss_weighting` of a restart: a second start with "
                                                      "the same weighting is a second draw of the same odds (sst2's "
                                                      "seed 2 collapsed again with seed 1002 at `1e2c758`), while "
                                                      "`balanced` weighs the answers as a plain LoRA does, which "
                                                      "is what the collapsed answers lack; it is not the first "
                                                      "attempt's default because it lets more OOD queries into the "
                                                      "user-task suite's experts (benchmarks/results/"
                                                      "negatives-ablation)",
                                          choices=LOSS_WEIGHTINGS)


@dataclass
class ReconstructionConfig:
    """Task reconstruction: which negatives an expert learns to reject."""

    negative_ratio: float = setting(0.2, "rehearsal negatives as a share of positives", low=0)
    min_negatives_per_task: int = setting(30, "at least this many negatives from each earlier task (up to what it "
                                              "kept): with a few, a new expert takes older tasks' queries", low=0)
    general_negatives: Optional[str] = setting(None, "file of general negatives (inputs only); unset (null, the "
                                                     "default): the pool shipped in `see/negatives` (on the "
                                                     "embedded base, together with the generated pool); the word "
                                                     "`none` disables them")
    general_negative_ratio: float = setting(1.0, "general negatives as a share of positives: as many as the task "
                                                 "has examples, so that rejecting is learned as well as answering",
                                            low=0)
    near_miss_ratio: Any = setting("auto", "near misses as a share of positives: the task's own queries with one "
                                           "key word swapped for a word it never uses, so that the expert rejects "
                                           "look-alike requests (see `see/negatives/near_miss.py`); 0 disables them, "
                                           "and so does having no general negatives (their words replace the key "
                                           "word); an instruction given apart from the input has one in three of "
                                           "its key words swapped. `auto`: 1 for a task of bare inputs, 0.5 for one "
                                           "with an instruction apart (whose near misses are closer to the task "
                                           "itself and cost answers)",
                                   low=0, choices=("auto",), numbers=True)
    crossed_ratio: float = setting(0.0, "crossed negatives as a share of positives: earlier tasks' kept queries "
                                        "and general negatives with one varying word or number replaced by one of "
                                        "the task's, so that its wording, not its content, decides (see "
                                        "`see/negatives/crossed.py`); 0 disables them. Not the default: 0.5 "
                                        "closed one look-alike leak on the user-task suite and opened another",
                                   low=0)
    rehearsal_size: int = setting(100, "queries kept per task for later experts' negatives", low=0)


@dataclass
class RoutingConfig:
    """How ``generate`` routes a query."""

    threshold: Any = setting("auto", "`auto`: each expert's own threshold on P(`<<pos>>`), set when it is added "
                                     "(see `routing.target_frr`); `argmax`: the paper's rule; or a number for every "
                                     "expert", low=0.0, high=1.0, choices=("auto", "argmax"), numbers=True)
    target_frr: float = setting(0.02, "largest share of an expert's own held-out positives its `auto` threshold "
                                      "may reject", low=0.0, high=1.0, high_open=True)
    margin_odds: float = setting(10.0, "room the `auto` threshold leaves below that quantile, as a factor of odds "
                                       "(halfway to the highest held-out negative when that comes closer; 1: "
                                       "none)", low=1.0)
    mode: str = setting("batched", "`batched` (every expert in one mixed-adapter forward) or `sequential` (the "
                                   "paper's cascade)", choices=ROUTING_MODES)
    max_rows_per_forward: int = setting(256, "caps experts x queries per forward (memory)", low=0, low_open=True)
    max_new_tokens: int = setting(64, "default answer length of `generate` and `see ask`", low=0, low_open=True)


@dataclass
class SeeConfig:
    model: ModelConfig = section(ModelConfig)
    prompt: PromptConfig = section(PromptConfig)
    data: DataConfig = section(DataConfig)
    lora: LoraSettings = section(LoraSettings)
    train: TrainConfig = section(TrainConfig)
    reconstruction: ReconstructionConfig = section(ReconstructionConfig)
    routing: RoutingConfig = section(RoutingConfig)


#: Sections fixed for a whole ensemble at ``see init``; the rest are per expert.
ENSEMBLE_SECTIONS = ("model", "prompt")


def _is_section(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)


def schema_fields(schema: Any = SeeConfig, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every leaf of the schema."""
    out = []
    for f in dataclasses.fields(schema):
        name = f"{prefix}{f.name}"
        if _is_section(f):
            out.extend(schema_fields(f.default_factory, name + "."))
        else:
            out.append((name, f))
    return out


def valid_keys(schema: Any = SeeConfig, prefix: str = "") -> list[str]:
    prefix = prefix.rstrip(".") + "." if prefix.rstrip(".") else ""
    return [key for key, _ in schema_fields(schema, prefix)]


def config_table() -> str:
    """The README's configuration table, generated from the schema."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, f in schema_fields():
        if key.startswith("data."):
            continue  # set through add-expert's data flags, listed with them
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "none" if default is None else json_text(default)
        rows.append(f"| `{key}` | `{shown}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)


def json_text(value: Any) -> str:
    return str(value).replace("\n", "\\n").replace("|", "\\|")


def _yaml_key_lines(text: str) -> dict[str, int]:
    """Map dotted keys of a YAML document to their 1-based line numbers."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = f"{prefix}[{i}]"
                lines[key] = v.start_mark.line + 1
                walk(v, key)

    walk(root, "")
    return lines


def _check_keys(raw: Any, schema: Any, prefix: str, where: str, key_lines: dict[str, int]) -> None:
    """Reject keys the schema does not have, naming the file, line and the valid keys.

    Walks nested sections and lists of sections (a benchmark's ``stream``).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping of keys, got {type(raw).__name__}", file=where,
                          line=key_lines.get(prefix.rstrip(".")), field=prefix.rstrip(".") or None)
    names = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError("unknown config key", file=where, line=key_lines.get(full), field=full,
                              hint="valid keys: " + ", ".join(valid_keys(schema, prefix)))
        f = names[key]
        if _is_section(f):
            _check_keys(value, f.default_factory, full + ".", where, key_lines)
        elif isinstance(value, str) and value.strip().lower() == "none" and _takes_none(f, hints.get(key)):
            raw[key] = None  # the README's tables write null as `none`; YAML reads that word as text
        args = typing.get_args(hints.get(key))
        if typing.get_origin(hints.get(key)) is list and args and dataclasses.is_dataclass(args[0]):
            if not isinstance(value, list):
                raise ConfigError(f"must be a list, got {type(value).__name__}", file=where,
                                  line=key_lines.get(full), field=full)
            for i, item in enumerate(value):
                _check_keys(item, args[0], f"{full}[{i}].", where, key_lines)


def _takes_none(f: dataclasses.Field, hint: Any) -> bool:
    """Whether a field takes null for its value, other than as text (``reconstruction.general_negatives``
    keeps the word `none`, its own way of saying "no negatives")."""
    if f.metadata.get("nullable"):
        return True
    args = typing.get_args(hint)
    return typing.get_origin(hint) is typing.Union and type(None) in args and str not in args


def merge_checked(cfg: DictConfig, raw: dict, where: str, key_lines: dict[str, int], schema: Any = None
                  ) -> DictConfig:
    """Check ``raw``'s keys against the schema (file, line, valid keys), then merge it into ``cfg``."""
    _check_keys(raw, schema or SeeConfig, "", where, key_lines)
    try:
        return OmegaConf.merge(cfg, raw)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or None
        msg = str(exc).split("\n")[0]
        raise ConfigError(f"invalid value: {msg}", file=where, line=key_lines.get(key or ""), field=key) from None


def _check_field(key: str, value: Any, meta: dict, where: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if isinstance(value, bool) and meta.get("booleans"):
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if choices and (isinstance(value, bool) or value not in choices) and not (meta.get("numbers") and is_number):
        allowed = (", ".join(choices) + (" or a number" if meta.get("numbers") else "")
                   + (", true or false" if meta.get("booleans") else ""))
        raise ConfigError(f"must be {'one of ' if len(choices) > 1 else ''}{allowed}; got {value!r}", file=where,
                          field=key)
    if not is_number:
        return
    if not math.isfinite(value):
        raise ConfigError(f"must be a finite number; got {value}", file=where, field=key)
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("low_open") and value == low)):
        raise ConfigError(f"must be {'>' if meta.get('low_open') else '>='} {low}; got {value}", file=where,
                          field=key)
    if high is not None and (value > high or (meta.get("high_open") and value == high)):
        raise ConfigError(f"must be {'<' if meta.get('high_open') else '<='} {high}; got {value}", file=where,
                          field=key)


def validate(cfg: DictConfig, where: str = "config", schema: Any = SeeConfig, prefix: str = "") -> None:
    """Each field's own check (its metadata), then the checks that span fields. ``prefix``: where ``schema``
    sits in ``cfg`` (``train.`` for a :class:`TrainConfig` inside a benchmark config)."""
    for key, f in schema_fields(schema, prefix):
        value = OmegaConf.select(cfg, key)
        if f.metadata.get("numbers") and isinstance(value, str) and value not in (f.metadata.get("choices") or ()):
            # YAML 1.1 reads `2e-4` (no dot) as text; a field typed float converts it, a number-or-word
            # field (`train.lr: auto`) must do it here
            try:
                value = float(value)
            except ValueError:
                pass
            else:
                OmegaConf.update(cfg, key, value)
        _check_field(key, value, f.metadata, where)
    if schema is not SeeConfig:
        return
    if "{input}" not in cfg.prompt.template:
        raise ConfigError("the template must contain {input}", file=where, field="prompt.template")
    tm = cfg.lora.target_modules
    if not (isinstance(tm, str) or (OmegaConf.is_list(tm) and all(isinstance(t, str) for t in tm))):
        raise ConfigError("must be 'all-linear' or a list of module names", file=where, field="lora.target_modules")


def _field_default(key: str, schema_cls: Any = None) -> Any:
    schema: Any = (schema_cls or SeeConfig)()
    for part in key.split("."):
        if not dataclasses.is_dataclass(schema) or not hasattr(schema, part):
            return None
        schema = getattr(schema, part)
    return schema


def _parse_value(key: str, raw: str, schema: Any = None) -> Any:
    """YAML-typed override values, except that text for a string key stays text (e.g. "{input}")."""
    if not raw.strip():
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(_field_default(key, schema), str) and isinstance(value, dict):
        return raw  # "{input}" is template text, not a YAML mapping
    return value


#: A config is a few dozen keys; these bound what a hostile or broken file can cost to read.
MAX_CONFIG_BYTES = 1 << 20
#: Most values a config may hold once its YAML aliases are expanded ("billion laughs" nests aliases so
#: that a few lines expand to billions of values).
MAX_CONFIG_NODES = 100_000


def _check_expansion(root: Any, path: Path) -> None:
    """Count the values a composed YAML document expands to, in time linear in its size (shared nodes are
    counted once per reference, memoised by identity), and refuse one that expands past the limit."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        key = id(node)
        if key not in sizes:
            sizes[key] = 0  # a cycle counts as nothing instead of recursing forever
            if isinstance(node, yaml.MappingNode):
                n = 1 + sum(size(k) + size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                n = 1 + sum(size(v) for v in node.value)
            else:
                n = 1
            sizes[key] = min(n, MAX_CONFIG_NODES + 1)
        return sizes[key]

    if root is not None and size(root) > MAX_CONFIG_NODES:
        mark = root.start_mark
        raise ConfigError(f"expands to more than {MAX_CONFIG_NODES} values through YAML aliases", file=path,
                          line=mark.line + 1 if mark else None, hint="a config holds a few dozen keys; "
                          "check the file's anchors (&) and aliases (*)")


def read_yaml(path: Path, what: str = "config file") -> tuple[Any, dict[str, int]]:
    """(parsed YAML, key -> line) of a config file; errors name the file and line."""
    if not path.is_file():
        raise ConfigError(f"{what} does not exist", file=path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than the limit of {MAX_CONFIG_BYTES >> 10} KiB for a {what}", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    try:
        _check_expansion(yaml.compose(text, Loader=yaml.SafeLoader), path)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=path,
                          line=mark.line + 1 if mark else None) from None
    return raw, _yaml_key_lines(text)


def dotlist(overrides, schema: Any = None) -> dict:
    """``key=value`` overrides as a nested dict (values parsed as YAML)."""
    raw: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value", file="<command line>")
        key, _, value = item.partition("=")
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("conflicting overrides", file="<command line>", field=key)
        node[parts[-1]] = _parse_value(key.strip(), value, schema)
    return raw


def load_config(file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: DictConfig | dict | None = None) -> DictConfig:
    """Defaults <- ``base`` (e.g. an ensemble's stored settings) <- YAML file <- dotlist overrides."""
    cfg = OmegaConf.structured(SeeConfig)
    if base is not None:
        cfg = merge_checked(cfg, OmegaConf.to_container(base) if isinstance(base, DictConfig) else base,
                            "stored config", {})
    if file is not None:
        raw, key_lines = read_yaml(Path(file))
        if raw is not None:
            cfg = merge_checked(cfg, raw, str(file), key_lines)
    if overrides:
        cfg = merge_checked(cfg, dotlist(overrides), "<command line>", {})
    validate(cfg, str(file) if file is not None and not overrides else
             ("<command line>" if overrides and file is None else str(file or "config")))
    return cfg


def to_dict(cfg: DictConfig, sections: tuple[str, ...] | None = None) -> dict:
    data = OmegaConf.to_container(cfg, resolve=True)
    if sections is not None:
        data = {k: v for k, v in data.items() if k in sections}
    return data


def typed(cfg: DictConfig, key: str) -> Any:
    """A section of a merged config as its schema dataclass (``typed(cfg, "routing").mode``)."""
    return OmegaConf.to_object(cfg[key])


if __name__ == "__main__":  # python -m see.config: print the README's configuration table
    print(config_table())
