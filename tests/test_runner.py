"""The serving runner's stacked multi-adapter forward equals PEFT's own mixed-batch forward."""
import pytest
import torch

from see.modeling import add_indicator_tokens, fit_embeddings, load_causal_lm, load_tokenizer
from see.engine.multilora import MultiLoraModel as Runner, _equal_blocks

ARCHS = ["llama", "llama-untied", "qwen2", "gpt2"]


def _multi_adapter_model(model_dir, tmp_path, n_adapters=3, alora_inv=None, rank_of=lambda k: 4 + 2 * k):
    """n experts with random LoRA weights and indicator rows, saved and loaded back as the ensemble does."""
    from peft import PeftModel, get_peft_model

    from see.config import load_config
    from see.experts.training import lora_config

    tok = load_tokenizer(str(model_dir))
    pos, neg = add_indicator_tokens(tok, "<<pos>>", "<<neg>>")

    def base():
        model = load_causal_lm(str(model_dir), "float32")
        fit_embeddings(model, tok)
        return model

    torch.manual_seed(0)
    for k in range(n_adapters):
        model = base()
        cfg = lora_config(load_config(None, [f"lora.r={rank_of(k)}"]).lora, model, [pos, neg],
                          "alora" if alora_inv else "lora", alora_inv)
        cfg.init_lora_weights = False  # random A and B, so every expert really differs
        pm = get_peft_model(model, cfg)
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "trainable_tokens_delta" in name:
                    p.add_(torch.randn_like(p))
        pm.save_pretrained(tmp_path / f"e{k}", save_embedding_layers=False)
    peft_model = PeftModel.from_pretrained(base(), tmp_path / "e0", adapter_name="e0")
    for k in range(1, n_adapters):
        peft_model.load_adapter(tmp_path / f"e{k}", adapter_name=f"e{k}")
    peft_model.eval()
    return peft_model, tok, pos, neg


@pytest.mark.parametrize("arch", ARCHS)
def test_runner_matches_peft_mixed_batch(tiny_models, arch, tmp_path):
    model, tok, pos, neg = _multi_adapter_model(tiny_models(arch), tmp_path)
    runner = Runner(model)
    assert runner.fast
    ids = torch.randint(5, 900, (6, 9))
    ids[1, 3] = pos  # indicator tokens as inputs use each row's own embedding rows
    ids[4, 8] = neg
    mask = torch.ones_like(ids)
    for names in (["e0", "e1", "e2", "__base__", "e1", "e0"],   # arbitrary rows
                  ["e2", "e2", "e0", "e0", "e1", "e1"],         # equal blocks
                  ["e1"] * 6, ["__base__"] * 6):
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask, adapter_names=names).logits
            got = runner(input_ids=ids, attention_mask=mask, adapter_names=names).logits
        assert torch.allclose(got, want, atol=1e-4), (names, (got - want).abs().max())
    # a call outside the runner is PEFT's plain forward, untouched by the runner's hooks
    model.set_adapter("e2")
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        assert torch.allclose(plain, model(input_ids=ids, adapter_names=["e2"] * 6).logits, atol=1e-5)
        assert torch.allclose(runner(input_ids=ids).logits, plain, atol=1e-4)  # no names: the active adapter


def test_runner_matches_peft_for_alora(tiny_llama, tmp_path):
    inv = [400, 401, 402]
    model, tok, pos, neg = _multi_adapter_model(tiny_llama, tmp_path, alora_inv=inv, rank_of=lambda k: 4)
    runner = Runner(model, invocation_length=len(inv))
    ids = torch.cat([torch.randint(5, 300, (4, 7)), torch.tensor([inv] * 4)], dim=1)
    names = ["e0", "e1", "e2", "__base__"]
    with torch.no_grad():
        want = model(input_ids=ids, adapter_names=names).logits  # PEFT finds the invocation itself
        got = runner(input_ids=ids, adapter_names=names).logits
    assert torch.allclose(got, want, atol=1e-4)
    # before the invocation every row is the base model (only the indicator tokens' own logits
    # come from each expert's output rows)
    with model.disable_adapter(), torch.no_grad():
        plain = model(input_ids=ids).logits
    assert torch.allclose(got[:, :7, :pos], plain[:, :7, :pos], atol=1e-4)
    assert not torch.allclose(got[0, -1], plain[0, -1], atol=1e-3)


def test_equal_blocks():
    assert _equal_blocks(["a", "a", "b", "b"]) == 2
    assert _equal_blocks(["a"] * 5) == 1
    assert _equal_blocks(["a", "b", "a", "b"]) == 4  # blocks of one row each
    assert _equal_blocks(["a", "a", "b", "a"]) is None
    assert _equal_blocks(["a", "a", "a", "b"]) is None
