"""Bad input gets a clear error, exit code 2 and no change; kills and concurrent writers corrupt nothing."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import build_tiny_model, family_jsonl, tree_hash, write_jsonl
from see.cli import main as see_main
from see.embedded.families import make_task

FAST = ["train.max_steps=3", "train.batch_size=8", "lora.r=4"]
GOOD_LINES = [{"input": f"good example {i}", "output": "yes"} for i in range(12)]


@pytest.fixture(scope="module")
def base_ensemble(tiny_llama, tmp_path_factory):
    """An ensemble with one trained expert, copied afresh for each case that needs one."""
    from see.lifecycle import add_expert, init_ensemble

    root = tmp_path_factory.mktemp("rel") / "ens"
    init_ensemble(root, base=str(tiny_llama), log=lambda m: None)
    add_expert(root, "first", make_task("sentiment", 40), overrides=FAST, negatives="none", progress=False,
               log=lambda m: None)
    return root


@dataclass
class Case:
    id: str
    #: (workdir, ensemble copy, tiny base dir) -> argv for `see`, or a callable raising for the Python API
    make: Callable[[Path, Path, Path], list | Callable]
    needles: tuple[str, ...]
    code: int = 2


def _data(work: Path, text: str | bytes, name: str = "data.jsonl") -> Path:
    p = work / name
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return p


def _good(work: Path) -> Path:
    return write_jsonl(work / "good.jsonl", GOOD_LINES)


def _add(ens: Path, data: Path, *extra) -> list:
    return ["add-expert", ens, "--name", "new", "--data", data, "--no-progress", *FAST, *extra]


def _edit_manifest(ens: Path, fn) -> None:
    m = json.loads((ens / "manifest.json").read_text())
    fn(m)
    (ens / "manifest.json").write_text(json.dumps(m))


def _other_base_expert(work: Path, ens: Path, tiny: Path) -> list:
    from see.lifecycle import add_expert, init_ensemble

    other_base = build_tiny_model(work / "other-base", seed=7)
    other = work / "other-ens"
    init_ensemble(other, base=str(other_base), log=lambda m: None)
    add_expert(other, "alien", make_task("topic", 20), overrides=FAST, negatives="none", progress=False,
               log=lambda m: None)
    shutil.copytree(other / "experts" / "alien", ens / "experts" / "alien")
    alien = json.loads((other / "manifest.json").read_text())["experts"][0]
    _edit_manifest(ens, lambda m: m["experts"].append(alien))
    return ["ask", ens, "hello"]


def _replaced_base(work: Path, ens: Path, tiny: Path) -> list:
    base = build_tiny_model(work / "base-then", seed=0)
    from see.lifecycle import init_ensemble

    fresh = work / "fresh-ens"
    init_ensemble(fresh, base=str(base), log=lambda m: None)
    build_tiny_model(base, seed=3)  # the base directory is overwritten with other weights
    return ["ask", fresh, "hello"]


def _pickle_base(work: Path, ens: Path, tiny: Path) -> list:
    import torch
    from safetensors.torch import load_file

    d = work / "pickle-base"
    shutil.copytree(tiny, d)
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    return ["init", work / "new-ens", "--base", d]


def _no_tokenizer_base(work: Path, ens: Path, tiny: Path) -> list:
    d = work / "no-tok"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny / f, d / f)
    return ["init", work / "new-ens", "--base", d]


def _superni_folder(work: Path) -> Path:
    d = work / "task1_x"
    d.mkdir()
    (d / "train.json").write_text(json.dumps({"Definition": ["Do."], "Instances": [
        {"id": str(i), "input": f"q{i}", "output": "a"} for i in range(5)]}))
    return d


def _api_generate_bad_threshold(work, ens, tiny):
    def call():
        from see.ensemble import Ensemble

        Ensemble.load(ens).generate(["x"], threshold=2.0)
    return call


def _api_load_missing(work, ens, tiny):
    def call():
        from see.ensemble import Ensemble

        Ensemble.load(work / "nowhere")
    return call


def _api_load_task(work, ens, tiny):
    def call():
        from see.data import load_task

        load_task(_data(work, '{"input": "a", "output": "b"}\n{"input": "a", "output": "b"}\n{"input": 1, "output": "b"}\n'))
    return call


def _api_add_name(work, ens, tiny):
    def call():
        from see.lifecycle import add_expert

        add_expert(ens, "../escape", make_task("topic", 5), progress=False)
    return call


def _edit_json(path: Path, fn) -> None:
    value = json.loads(path.read_text())
    fn(value)
    path.write_text(json.dumps(value))


def _symlinked_adapter(work: Path, ens: Path) -> list:
    weights = ens / "experts" / "first" / "adapter_model.safetensors"
    outside = work / "elsewhere.safetensors"
    shutil.copy(weights, outside)
    weights.unlink()
    weights.symlink_to(outside)
    return ["ask", ens, "x"]


def _users_folder(work: Path, name: str, argv: list) -> list:
    (work / "mine" / name).mkdir(parents=True)
    (work / "mine" / name / "notes.txt").write_text("the user's own file")
    return argv


CASES = [
    Case("empty-data-file", lambda w, e, t: _add(e, _data(w, "")), ("data.jsonl", "empty")),
    Case("invalid-json-line-3", lambda w, e, t: _add(e, _data(w, '{"input":"a","output":"b"}\n{"input":"a","output":"b"}\n{"input": "x", \n')),
         ("data.jsonl:3", "invalid JSON")),
    Case("missing-input-field", lambda w, e, t: _add(e, _data(w, '{"input":"a","output":"b"}\n{"text":"a","output":"b"}\n')),
         ("data.jsonl:2", "field 'input'", "missing")),
    Case("missing-output-field", lambda w, e, t: _add(e, _data(w, '{"input":"a","output":"b"}\n{"input":"a"}\n')),
         ("data.jsonl:2", "field 'output'")),
    Case("non-utf8-bytes", lambda w, e, t: _add(e, _data(w, b'{"input":"a","output":"b"}\n{"input":"\xe9t\xe9","output":"b"}\n')),
         ("data.jsonl:2", "UTF-8")),
    Case("label-not-a-string", lambda w, e, t: _add(e, _data(w, '{"input":"a","output":"b"}\n{"input":"a","output":{"x":1}}\n')),
         ("data.jsonl:2", "field 'output'", "dict")),
    Case("example-longer-than-context-rejected",
         lambda w, e, t: _add(e, write_jsonl(w / "long.jsonl", GOOD_LINES + [{"input": "word " * 400, "output": "x"}]),
                              "train.overlength=reject"), ("long.jsonl:13", "field 'input'", "longer than")),
    Case("duplicate-expert-name", lambda w, e, t: ["add-expert", e, "--name", "first", "--data", _good(w)],
         ("already exists", "first")),
    Case("name-with-slash", lambda w, e, t: ["add-expert", e, "--name", "a/b", "--data", _good(w)], ("invalid expert name",)),
    Case("name-with-dotdot", lambda w, e, t: ["add-expert", e, "--name", "..", "--data", _good(w)], ("invalid expert name",)),
    Case("name-with-space", lambda w, e, t: ["add-expert", e, "--name", "my expert", "--data", _good(w)], ("invalid expert name",)),
    Case("data-path-missing", lambda w, e, t: _add(e, w / "nope.jsonl"), ("nope.jsonl", "does not exist")),
    Case("not-an-ensemble", lambda w, e, t: ["ask", w, "hello"], ("not an ensemble",)),
    Case("ensemble-dir-missing", lambda w, e, t: ["list", w / "nowhere"], ("does not exist",)),
    Case("manifest-newer-format", lambda w, e, t: (_edit_manifest(e, lambda m: m.update(format_version=99)), ["list", e])[1],
         ("manifest.json", "format_version", "newer")),
    Case("manifest-corrupted", lambda w, e, t: ((e / "manifest.json").write_text('{"format_version": 1, "base": '), ["ask", e, "x"])[1],
         ("manifest.json:1", "corrupted manifest")),
    Case("manifest-path-escapes", lambda w, e, t: (_edit_manifest(e, lambda m: m["experts"][0].update(path="../../etc")), ["list", e])[1],
         ("must be 'experts/first'",)),
    Case("adapter-missing-weights", lambda w, e, t: ((e / "experts" / "first" / "adapter_model.safetensors").unlink(), ["ask", e, "x"])[1],
         ("experts/first", "adapter_model.safetensors")),
    Case("adapter-pickle-only", lambda w, e, t: ((e / "experts" / "first" / "adapter_model.safetensors").rename(e / "experts" / "first" / "adapter_model.bin"), ["ask", e, "x"])[1],
         ("pickle",)),
    Case("adapter-from-another-base", _other_base_expert, ("alien", "trained on another base")),
    Case("base-replaced-under-the-ensemble", _replaced_base, ("not the one this ensemble was built on", "fingerprint")),
    Case("base-without-tokenizer", _no_tokenizer_base, ("no-tok", "no tokenizer")),
    Case("base-pickle-weights", _pickle_base, ("pickle", "--allow-pickle")),
    Case("base-path-missing", lambda w, e, t: ["init", w / "new", "--base", w / "no-such-model"], ("does not exist",)),
    Case("init-non-empty-dir", lambda w, e, t: ((w / "full").mkdir(), (w / "full" / "x.txt").write_text("x"), ["init", w / "full"])[2],
         ("not empty",)),
    Case("yaml-unknown-key", lambda w, e, t: _add(e, _good(w), "--config", _data(w, "train:\n  epochs: 1\n  learning_rate: 0.1\n", "c.yaml")),
         ("c.yaml:3", "train.learning_rate", "valid keys", "train.lr")),
    Case("yaml-wrong-type", lambda w, e, t: _add(e, _good(w), "--config", _data(w, "lora:\n  r: eight\n", "c.yaml")),
         ("c.yaml:2", "lora.r")),
    Case("yaml-syntax", lambda w, e, t: _add(e, _good(w), "--config", _data(w, "lora:\n  r: [1\n", "c.yaml")),
         ("c.yaml", "invalid YAML")),
    Case("lora-rank-zero", lambda w, e, t: _add(e, _good(w), "lora.r=0"), ("lora.r", "> 0")),
    Case("lora-rank-negative", lambda w, e, t: _add(e, _good(w), "lora.r=-4"), ("lora.r",)),
    Case("threshold-above-one", lambda w, e, t: ["ask", e, "--threshold", "1.5", "hi"], ("threshold", "[0, 1]")),
    Case("threshold-in-config", lambda w, e, t: _add(e, _good(w), "routing.threshold=-0.1"), ("routing.threshold",)),
    Case("ensemble-setting-per-expert", lambda w, e, t: _add(e, _good(w), "prompt.template={input}"),
         ("prompt.template", "fixed for the whole ensemble")),
    Case("override-without-equals", lambda w, e, t: _add(e, _good(w), "train.epochs"), ("train.epochs", "key=value")),
    Case("csv-ragged-row", lambda w, e, t: _add(e, _data(w, "input,output\na,b\nc,d,e\n", "d.csv")), ("d.csv:3", "columns")),
    Case("unknown-split", lambda w, e, t: _add(e, _superni_folder(w), "--split", "test"), ("task1_x", "split 'test'", "available: train")),
    Case("negatives-file-missing", lambda w, e, t: _add(e, _good(w), "--negatives", w / "neg.jsonl"), ("neg.jsonl", "does not exist")),
    Case("eval-missing-output", lambda w, e, t: ["eval", e, "--data", _data(w, '{"input":"a"}\n')], ("data.jsonl:1", "field 'output'")),
    Case("ask-zero-new-tokens", lambda w, e, t: ["ask", e, "--max-new-tokens", "0", "hi"], ("max_new_tokens",)),
    Case("folder-given-as-jsonl", lambda w, e, t: _add(e, w, "--format", "jsonl"), ("expects a file",)),
    # round two: names, training that diverges, a damaged ensemble, links, lifecycle commands
    Case("name-differs-only-in-case", lambda w, e, t: ["add-expert", e, "--name", "FIRST", "--data", _good(w)],
         ("already exists", "only in case")),
    Case("name-with-trailing-newline", lambda w, e, t: ["add-expert", e, "--name", "abc\n", "--data", _good(w)],
         ("invalid expert name",)),
    Case("lr-infinite", lambda w, e, t: _add(e, _good(w), "train.lr=.inf"), ("train.lr",)),
    Case("lr-nan", lambda w, e, t: _add(e, _good(w), "train.lr=.nan"), ("train.lr",)),
    Case("training-diverges", lambda w, e, t: _add(e, _good(w), "train.lr=1e30", "train.warmup_ratio=0"),
         ("diverged", "train.lr")),
    Case("rehearsal-missing", lambda w, e, t: ((e / "experts" / "first" / "rehearsal.jsonl").unlink(), _add(e, _good(w)))[1],
         ("rehearsal.jsonl", "missing")),
    Case("rehearsal-corrupt", lambda w, e, t: ((e / "experts" / "first" / "rehearsal.jsonl").write_text('{"input": "a"}\n{"inp'),
                                               _add(e, _good(w)))[1], ("rehearsal.jsonl:2", "invalid JSON")),
    Case("heldout-corrupt", lambda w, e, t: ((e / "experts" / "first" / "heldout.jsonl").write_text("[1, 2]\n"),
                                             ["calibrate", e])[1], ("heldout.jsonl:1", "damaged")),
    Case("adapter-symlinked-outside", lambda w, e, t: _symlinked_adapter(w, e), ("adapter_model.safetensors", "symbolic link")),
    Case("manifest-retired-escapes", lambda w, e, t: (_edit_manifest(e, lambda m: m.update(retired=[{"name": "x", "rehearsal": "retired/../../x.jsonl"}])),
                                                      ["list", e])[1], ("retired",)),
    Case("manifest-indicator-wrong-type", lambda w, e, t: (_edit_manifest(e, lambda m: m.update(indicator="pos")), ["list", e])[1],
         ("indicator",)),
    Case("manifest-settings-wrong-type", lambda w, e, t: (_edit_manifest(e, lambda m: m.update(settings=[])), ["list", e])[1],
         ("settings",)),
    Case("init-over-a-users-tokenizer-folder", lambda w, e, t: _users_folder(w, "tokenizer", ["init", w / "mine"]),
         ("not empty", "tokenizer/", "never deletes")),
    Case("init-over-a-users-staging-folder", lambda w, e, t: _users_folder(w, ".staging", ["init", w / "mine"]),
         ("not empty", ".staging/")),
    Case("remove-unknown-expert", lambda w, e, t: ["remove", e, "nope"], ("no expert named 'nope'", "first")),
    Case("query-with-lone-surrogate", lambda w, e, t: ["ask", e, "caf\udce9"], ("query",)),
    Case("staging-is-a-file", lambda w, e, t: ((e / ".staging").exists() and shutil.rmtree(e / ".staging"),
                                               (e / ".staging").write_text("x"), _add(e, _good(w)))[2],
         (".staging", "not a file")),
    Case("lock-is-a-directory", lambda w, e, t: ((e / ".lock").unlink(), (e / ".lock").mkdir(), _add(e, _good(w)))[2],
         (".lock", "writer lock")),
    Case("adapter-wrong-shape", lambda w, e, t: (_edit_json(e / "experts" / "first" / "adapter_config.json", lambda c: c.update(r=2)),
                                                 ["ask", e, "x"])[1], ("first", "do not fit", "size mismatch")),
    Case("manifest-metrics-wrong-type", lambda w, e, t: (_edit_manifest(e, lambda m: m["experts"][0].update(metrics=[1])), ["list", e])[1],
         ("experts.first.metrics", "must be an object")),
    Case("output-null", lambda w, e, t: _add(e, _data(w, '{"input":"a","output":"b"}\n{"input":"a","output":null}\n')),
         ("data.jsonl:2", "field 'output'", "null")),
    Case("output-longer-than-half-the-context", lambda w, e, t: _add(e, _data(w, '{"input":"a","output":"b"}\n' + json.dumps({"input": "a", "output": "word " * 300}) + "\n")),
         ("data.jsonl:2", "field 'output'", "answer")),
    Case("json-nested-too-deeply", lambda w, e, t: _add(e, _data(w, '{"input": ' + "[" * 5000 + "]" * 5000 + ', "output": "x"}\n')),
         ("data.jsonl:1", "nested deeper")),
    Case("jsonl-line-over-the-limit", lambda w, e, t: _add(e, _data(w, '{"input": "' + "a" * (1 << 21) + '"}\n'), "--format", "jsonl"),
         ("data.jsonl:1", "longer than the limit")),
    Case("ask-max-new-tokens-eats-the-context", lambda w, e, t: ["ask", e, "--max-new-tokens", "240", "word " * 100],
         ("max_new_tokens", "context")),
    Case("yaml-alias-bomb", lambda w, e, t: _add(e, _good(w), "--config", _data(w, "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]\n" for k in range(1, 9)), "bomb.yaml")), ("bomb.yaml", "expands to more than")),
    Case("api-generate-threshold", _api_generate_bad_threshold, ("threshold",)),
    Case("api-load-missing", _api_load_missing, ("nowhere", "does not exist")),
    Case("api-load-task-line", _api_load_task, ("data.jsonl:3", "field 'input'")),
    Case("api-add-expert-bad-name", _api_add_name, ("invalid expert name",)),
]


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, base_ensemble, tiny_llama, tmp_path, capsys):
    from see.errors import SeeError

    ens = tmp_path / "ens"
    shutil.copytree(base_ensemble, ens)
    work = tmp_path / "work"
    work.mkdir()
    action = case.make(work, ens, tiny_llama)
    before, work_before = tree_hash(ens), tree_hash(work)
    if callable(action):
        with pytest.raises(SeeError) as err:
            action()
        message = str(err.value)
    else:
        capsys.readouterr()
        code = see_main([str(a) for a in action])
        out = capsys.readouterr()
        message = out.err
        assert code == case.code, message
        assert "Traceback" not in message
        assert f"see {action[0]}: error: " in message
    for needle in case.needles:
        assert needle in message, (needle, message)
    assert tree_hash(ens) == before, "the ensemble directory changed"
    if not callable(action):  # an API case writes its data file as it runs
        assert tree_hash(work) == work_before, "files beside the ensemble changed"


def test_real_process_exit_code_and_debug_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "see", "list", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "not an ensemble" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "see", "--debug", "list", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_overlong_examples_truncate_with_a_warning_by_default(base_ensemble, tmp_path):
    from see.data import load_task
    from see.lifecycle import add_expert

    ens = tmp_path / "ens"
    shutil.copytree(base_ensemble, ens)
    data = write_jsonl(tmp_path / "long.jsonl", GOOD_LINES + [{"input": "word " * 400, "output": "x"}])
    with pytest.warns(UserWarning, match="truncated"):
        rec = add_expert(ens, "long", load_task(data), overrides=FAST, negatives="none", progress=False,
                         log=lambda m: None)
    assert rec.metrics["truncated"] == 1


def test_ask_without_experts_uses_the_fallback_with_a_note(tiny_llama, tmp_path, capsys):
    assert see_main(["init", str(tmp_path / "e"), "--base", str(tiny_llama)]) == 0
    capsys.readouterr()
    assert see_main(["ask", str(tmp_path / "e"), "--json", "--max-new-tokens", "2", "hello"]) == 0
    out = capsys.readouterr()
    assert "no experts yet" in out.err and json.loads(out.out)["expert"] is None


# ----------------------------------------------------------------------------- kills

def _start_add(ens: Path, data: Path, name: str, point: str, *extra: str, sleep: str = "300") -> subprocess.Popen:
    env = {**os.environ, "SEE_FAULT_POINT": point, "SEE_FAULT_SLEEP": sleep, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "see", "add-expert", str(ens), "--name", name, "--data", str(data),
                             "--no-progress", "--negatives", "none", *extra], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> str:
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"never reached {marker!r}:\n{''.join(seen)[-3000:]}")


KILL_POINTS = ["step-2", "adapter-saved", "before-rename", "after-rename", "manifest.json-written"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_at_any_point_leaves_the_ensemble_unchanged(point, base_ensemble, tmp_path):
    from see.ensemble import Ensemble
    from see.lifecycle import add_expert
    from see.store import EnsembleStore

    ens = tmp_path / "ens"
    shutil.copytree(base_ensemble, ens)
    manifest_before = (ens / "manifest.json").read_bytes()
    experts_before = tree_hash(ens / "experts" / "first")
    data = family_jsonl(tmp_path / "t.jsonl", "topic", 40)
    proc = _start_add(ens, data, "second", point, "train.max_steps=4", "train.batch_size=8", "lora.r=4")
    _wait_for(proc, f"SEE_FAULT_POINT {point} reached")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # unchanged: same manifest bytes, same expert, and it loads
    assert (ens / "manifest.json").read_bytes() == manifest_before
    assert tree_hash(ens / "experts" / "first") == experts_before
    assert Ensemble.load(ens).experts == ["first"]
    # leftovers are never mistaken for experts, and the same name can be added again
    rec = add_expert(ens, "second", make_task("topic", 40), overrides=FAST, negatives="none", progress=False,
                     log=lambda m: None)
    assert rec.name == "second" and EnsembleStore(ens).read().expert("second")
    assert Ensemble.load(ens).experts == ["first", "second"]
    assert not list(ens.glob(".manifest.json.*.tmp"))
    assert not (ens / ".staging").exists() or not any((ens / ".staging").iterdir())


@pytest.mark.parametrize("grouping", [[], ["train.group_by_length=true"],
                                      ["train.negative_share=0.3", "train.hard_negatives=true"]],
                         ids=["shuffled", "grouped-by-length", "capped-negatives-mined"])
def test_resume_after_a_kill_reaches_the_same_loss(base_ensemble, tmp_path, grouping):
    """With capped negatives, hard ones are mined every epoch here (16 steps are about 2 epochs), so the
    resumed run must also restore the hard negatives chosen before the kill."""
    from see.data import load_task
    from see.lifecycle import add_expert

    data = family_jsonl(tmp_path / "t.jsonl", "topic", 60)
    negatives = "none"
    if "train.negative_share=0.3" in grouping:
        general = tmp_path / "general.jsonl"
        general.write_text("".join(json.dumps({"input": f"an unrelated request number {k}"}) + "\n"
                                   for k in range(60)), encoding="utf-8")
        negatives = str(general)
    train = ["train.max_steps=16", "train.batch_size=8", "lora.r=4", "train.checkpoint_every=4",
             "train.seed=3"] + grouping
    reference = tmp_path / "reference"
    shutil.copytree(base_ensemble, reference)
    ref = add_expert(reference, "topic", load_task(data), overrides=train, negatives=negatives, progress=False,
                     log=lambda m: None)

    ens = tmp_path / "ens"
    shutil.copytree(base_ensemble, ens)
    # killed after mining (epoch 1 starts at step 10 with capped negatives), the checkpoint must carry them
    kill, resumed = ("step-14", 12) if negatives != "none" else ("step-10", 8)
    proc = _start_add(ens, data, "topic", kill, *train, "--negatives", negatives)
    _wait_for(proc, f"SEE_FAULT_POINT {kill} reached")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (ens / ".staging" / "topic" / "checkpoint" / "state.pt").is_file()
    logs: list[str] = []
    rec = add_expert(ens, "topic", load_task(data), overrides=train, negatives=negatives, progress=False,
                     resume=True, log=logs.append)
    assert any(f"resuming from step {resumed}" in m for m in logs), logs
    assert rec.metrics["steps"] == 16
    # exactly: a resumed run must draw the same batches and dropout masks (a shifted RNG moves it by ~1e-4)
    assert rec.metrics["train_loss"] == ref.metrics["train_loss"]


# ----------------------------------------------------------------------------- concurrency

def test_two_writers_serialise_and_no_wait_fails_fast(base_ensemble, tmp_path):
    from see.store import EnsembleStore

    ens = tmp_path / "ens"
    shutil.copytree(base_ensemble, ens)
    data_a = family_jsonl(tmp_path / "a.jsonl", "topic", 40)
    data_b = family_jsonl(tmp_path / "b.jsonl", "antonym", 40)
    args = ["train.max_steps=3", "train.batch_size=8", "lora.r=4"]
    # alpha pauses mid-training while holding the lock; beta queues behind it, gamma refuses to wait
    a = _start_add(ens, data_a, "alpha", "step-1", *args, sleep="15")
    _wait_for(a, "SEE_FAULT_POINT step-1 reached")
    b = _start_add(ens, data_b, "beta", "none", *args)
    fast_fail = subprocess.run([sys.executable, "-m", "see", "add-expert", str(ens), "--name", "gamma", "--data",
                                str(data_b), "--no-wait", "--negatives", "none", *args],
                               capture_output=True, text=True, timeout=120)
    assert fast_fail.returncode == 2 and "another see process is writing" in fast_fail.stderr
    # a reader meanwhile always sees a whole manifest
    errors, reads = [], [0]
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                EnsembleStore(ens).read()
                reads[0] += 1
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    out_a, err_a = a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    stop.set()
    t.join()
    assert a.returncode == 0, err_a[-2000:]
    assert b.returncode == 0, err_b[-2000:]
    assert "waiting for another see process" in err_b
    assert not errors and reads[0] > 0
    assert [e.name for e in EnsembleStore(ens).read().experts] == ["first", "alpha", "beta"]
    # beta trained after alpha finished: alpha's queries were among its rehearsal negatives
    beta = EnsembleStore(ens).read().expert("beta")
    assert "rehearsal:alpha" in beta.metrics["reconstruction"]
