"""The vllm engine gives the torch engine's answers, experts and scores on the same ensemble.

vLLM pins its own transformers, so it runs in its own environment
(``./dev setup-vllm`` makes ``.venv-vllm``; ``./dev test`` tries to). The test
builds the ensemble here and runs the vllm engine there, in a subprocess.
Where vLLM could not be installed, it skips and says why.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from see.embedded.families import make_task

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("SEE_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
#: Largest difference in P(<<pos>>) between the engines: their float32 kernels sum in different orders.
SCORE_TOLERANCE = 1e-3


def _vllm_missing() -> str | None:
    if not VLLM_PYTHON.is_file():
        return f"no vLLM environment at {VLLM_PYTHON} (./dev setup-vllm makes one)"
    probe = subprocess.run([str(VLLM_PYTHON), "-c", "import vllm, see"], capture_output=True, text=True)
    if probe.returncode:
        return f"vLLM does not import in {VLLM_PYTHON}: {probe.stderr.strip().splitlines()[-1:]}"
    return None


pytestmark = pytest.mark.skipif(_vllm_missing() is not None, reason=str(_vllm_missing()))


def test_vllm_engine_matches_the_torch_engine(tmp_path):
    from see.ensemble import Ensemble
    from see.lifecycle import add_expert, init_ensemble

    root = tmp_path / "ens"
    init_ensemble(root, log=lambda m: None)  # the embedded base: head size 32, which vLLM's CPU attention takes
    for family in ("sentiment", "topic", "antonym"):
        add_expert(root, family, make_task(family, 120), overrides=["train.max_steps=80", "train.eval_every=0"],
                   negatives="none", progress=False, log=lambda m: None)
    queries = [q.input for family in ("sentiment", "topic", "antonym", "count")
               for q in make_task(family, 6, seed=7).examples]
    torch_results = [r.to_json() for r in Ensemble.load(root).generate(queries, max_new_tokens=8)]
    (tmp_path / "q.json").write_text(json.dumps(queries))
    env = {**os.environ, "SEE_CACHE": str(tmp_path / "cache"), "VLLM_CPU_KVCACHE_SPACE": "1",
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run([str(VLLM_PYTHON), "-m", "see.vllm_engine", str(root), str(tmp_path / "q.json"),
                          str(tmp_path / "out.json"), "--max-new-tokens", "8"], capture_output=True, text=True,
                         env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    vllm_results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert len(vllm_results) == len(torch_results)
    assert {r["expert"] for r in torch_results} - {None}, "no expert accepted anything: the check would be empty"
    for t, v in zip(torch_results, vllm_results):
        assert v["expert"] == t["expert"], (t, v)
        assert v["answer"] == t["answer"], (t, v)
        assert v["scores"].keys() == t["scores"].keys()
        for name, p in t["scores"].items():
            assert abs(v["scores"][name] - p) <= SCORE_TOLERANCE, (name, t, v)
