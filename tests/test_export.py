"""``see export --format vllm``: the exported base + plain LoRA give the PEFT experts' logits, exactly."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import build_tiny_model
from see.cli import main as see_main
from see.embedded.families import make_task

FAST = ["train.max_steps=30", "train.batch_size=8", "lora.r=4", "train.lr=5e-3"]
QUERIES = ["the film was wonderful", "a story about the market", "big", "what is the opposite of hot?"]


def _ensemble(tmp_path, arch: str):
    from see.lifecycle import add_expert, init_ensemble

    base = build_tiny_model(tmp_path / arch, arch)
    root = tmp_path / f"ens-{arch}"
    init_ensemble(root, base=str(base), log=lambda m: None)
    for family in ("sentiment", "topic", "antonym"):
        add_expert(root, family, make_task(family, 40), overrides=FAST, negatives="none", progress=False,
                   log=lambda m: None)
    return root


@pytest.mark.parametrize("arch", ["llama", "llama-untied"])
def test_exported_base_and_lora_give_the_peft_experts_logits(arch, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from see.ensemble import Ensemble

    root = _ensemble(tmp_path, arch)
    out = tmp_path / "export"
    assert see_main(["export", str(root), str(out), "--format", "vllm"]) == 0
    info = json.loads((out / "export.json").read_text())
    ens = Ensemble.load(root)
    prompt = ens.prompt
    vocab, indicator = info["vocab"], info["indicator"]
    assert [e["name"] for e in info["experts"]] == ens.experts
    base = AutoModelForCausalLM.from_pretrained(out / "base", dtype=torch.float32)
    assert base.get_input_embeddings().weight.shape[0] == vocab + 2 * len(ens.experts)
    exported = None
    for e in info["experts"]:
        if exported is None:
            exported = PeftModel.from_pretrained(base, out / e["path"], adapter_name=e["name"])
        else:
            exported.load_adapter(out / e["path"], adapter_name=e["name"])
    exported.eval()
    for e in info["experts"]:
        ens.model.set_adapter(e["name"])
        exported.set_adapter(e["name"])
        # the expert's vocabulary in the export: the original one, its own two ids in place of the indicators
        allowed = [i if i not in indicator else (e["pos_id"] if i == indicator[0] else e["neg_id"])
                   for i in range(vocab)]
        for q in QUERIES:
            ids = prompt.encode(prompt.text(q))
            with torch.no_grad():
                want = ens.model(torch.tensor([ids])).logits[0, -1]
                got = exported(torch.tensor([ids])).logits[0, -1, allowed]
                assert torch.allclose(got, want, atol=1e-5), (e["name"], q, (got - want).abs().max())
                # after <<pos>>: the expert continues with its own row as the next input
                want_next = ens.model(torch.tensor([ids + [indicator[0]]])).logits[0, -1]
                got_next = exported(torch.tensor([ids + [e["pos_id"]]])).logits[0, -1, allowed]
                assert torch.allclose(got_next, want_next, atol=1e-5)
    # the fallback: the exported base with adapters off is the ensemble's base on the original vocabulary
    with torch.no_grad(), exported.disable_adapter(), ens.model.disable_adapter():
        ids = prompt.encode(prompt.text(QUERIES[0]))
        want = ens.model(torch.tensor([ids])).logits[0, -1, :vocab - 2]
        got = exported(torch.tensor([ids])).logits[0, -1, :vocab - 2]
        assert torch.allclose(got, want, atol=1e-5)


def test_export_refuses_alora_and_a_used_folder(tmp_path, tiny_llama, capsys):
    from see.lifecycle import add_expert, init_ensemble

    root = tmp_path / "alora"
    init_ensemble(root, base=str(tiny_llama), overrides=["model.expert_kind=alora"], log=lambda m: None)
    add_expert(root, "s", make_task("sentiment", 20), overrides=["train.max_steps=2", "lora.r=4"], negatives="none",
               progress=False, log=lambda m: None)
    capsys.readouterr()
    assert see_main(["export", str(root), str(tmp_path / "x"), "--format", "vllm"]) == 2
    assert "aLoRA" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("mine")
    plain = tmp_path / "plain"
    init_ensemble(plain, base=str(tiny_llama), log=lambda m: None)
    assert see_main(["export", str(plain), str(tmp_path / "used"), "--format", "vllm"]) == 2
    assert (tmp_path / "used" / "f").read_text() == "mine"
