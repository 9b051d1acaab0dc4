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


FAMILIES = ("sentiment", "topic", "antonym")


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory) -> Path:
    from see.lifecycle import add_expert, init_ensemble

    root = tmp_path_factory.mktemp("vllm") / "ens"
    init_ensemble(root, log=lambda m: None)  # the embedded base: head size 32, which vLLM's CPU attention takes
    for family in FAMILIES:
        add_expert(root, family, make_task(family, 60), overrides=["train.max_steps=40", "train.eval_every=0"],
                   negatives="none", progress=False, log=lambda m: None)
    return root


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "SEE_CACHE": str(tmp_path / "cache"), "VLLM_CPU_KVCACHE_SPACE": "1",
            "PYTHONPATH": str(ROOT)}


def test_vllm_engine_matches_the_torch_engine(ensemble, tmp_path):
    from see.ensemble import Ensemble

    queries = [q.input for family in (*FAMILIES, "count") for q in make_task(family, 6, seed=7).examples]
    torch_results = [r.to_json() for r in Ensemble.load(ensemble).generate(queries, max_new_tokens=8)]
    (tmp_path / "q.json").write_text(json.dumps(queries))
    run = subprocess.run([str(VLLM_PYTHON), "-m", "see.vllm_engine", str(ensemble), str(tmp_path / "q.json"),
                          str(tmp_path / "out.json"), "--max-new-tokens", "8"], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    vllm_results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert len(vllm_results) == len(torch_results)
    experts = [r["expert"] for r in torch_results]
    assert any(experts) and None in experts, "the check needs both expert answers and fallback answers"
    for t, v in zip(torch_results, vllm_results):
        assert v["expert"] == t["expert"], (t, v)
        assert v["answer"] == t["answer"], (t, v)
        assert v["completion_tokens"] == t["completion_tokens"], (t, v)
        assert v["scores"].keys() == t["scores"].keys()
        for name, p in t["scores"].items():
            assert abs(v["scores"][name] - p) <= SCORE_TOLERANCE, (name, t, v)


def test_see_serve_on_the_vllm_engine(ensemble, tmp_path):
    import socket
    import time

    from openai import OpenAI

    from see.ensemble import Ensemble

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(VLLM_PYTHON), "-m", "see", "serve", str(ensemble), "--engine", "vllm", "--port",
                               str(port), "--log-level", "warning"], env=_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        deadline = time.time() + 600
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                models = client.models.list()
                break
            except Exception:  # noqa: BLE001 - not listening yet: the engine is starting
                assert time.time() < deadline, "the vllm server did not start"
                time.sleep(2)
        assert [m.id for m in models.data] == ["ens"]
        query = make_task("antonym", 1, seed=11).examples[0].input
        done = client.completions.create(model="ens", prompt=query, max_tokens=8, temperature=0)
        want = Ensemble.load(ensemble).generate([query], max_new_tokens=8)[0]
        assert done.choices[0].text == want.answer
        assert done.model_extra["see"]["expert"] == want.expert
    finally:
        server.terminate()
        server.wait(timeout=60)
