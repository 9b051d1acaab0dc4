"""The same add-expert code under `accelerate launch` with 2 CPU processes."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import family_jsonl, run_see


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate CLI not installed")
def test_add_expert_under_accelerate_launch_two_processes(tiny_llama, tmp_path):
    path = tmp_path / "ens"
    assert run_see("init", path, "--base", tiny_llama).returncode == 0
    data = family_jsonl(tmp_path / "s.jsonl", "sentiment", 64)
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    # on a CPU-only machine, --multi_gpu selects accelerate's torchrun launcher; see falls back to gloo
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "see", "add-expert", str(path),
           "--name", "s", "--data", str(data), "--no-progress", "train.max_steps=4", "train.batch_size=8"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("added expert 's'") == 1  # only the main process writes and reports
    manifest = json.loads((path / "manifest.json").read_text())
    [expert] = manifest["experts"]
    assert expert["metrics"]["processes"] == 2 and expert["metrics"]["steps"] == 4
    assert (path / "experts" / "s" / "adapter_model.safetensors").is_file()
    r = run_see("ask", path, "--json", "--max-new-tokens", "2", "the soup was delicious")
    assert r.returncode == 0 and "scores" in json.loads(r.stdout.splitlines()[0])


def test_a_finished_command_destroys_the_process_group_it_ran_in(tiny_llama, tmp_path, monkeypatch):
    # Left to interpreter exit, a gloo group can abort a rank after its work is done (seen in CI:
    # "terminate called without an active exception", exit -6); the CLI ends it once the command succeeded.
    import socket

    import torch.distributed as dist

    from see.cli import main

    assert run_see("init", tmp_path / "ens", "--base", tiny_llama).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        assert main(["list", str(tmp_path / "ens")]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
