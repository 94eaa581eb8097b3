"""LoRA: merged == adapter logits; the saved adapter loads with peft on the converted model."""

import json

import pytest
import torch

from openglm import GLM, GLMConfig, save_model
from openglm.train import SFTConfig, run_sft
from openglm.train.lora import adapters_disabled, apply_lora, lora_layers, merge_lora, save_adapter
from tests.train.conftest import DATA, TINY, read_log, tiny_config

IDS = torch.tensor([[5, 17, 300, 2, 9000, 41, 7]])


def _lora_model(targets=("attn.qkv", "attn.proj", "mlp.gate_up", "mlp.down"), **cfg):
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_preset("nano", **{**TINY, **cfg})).eval()
    apply_lora(model, list(targets), rank=4, alpha=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B starts at zero; make the adapters do something
        for _, layer in lora_layers(model):
            for b in layer.lora_B.values():
                b.copy_(0.05 * torch.randn(b.shape, generator=g))
    return model


def test_only_adapters_train_and_disabling_them_gives_the_base():
    torch.manual_seed(0)
    base = GLM(GLMConfig.from_preset("nano", **TINY)).eval()
    model = _lora_model()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj",
                                                         "down_proj"}
    with torch.no_grad(), adapters_disabled(model):
        assert torch.equal(model(IDS), base(IDS))
    with torch.no_grad():
        assert not torch.allclose(model(IDS), base(IDS))


def test_merged_weights_give_the_adapter_logits():
    model = _lora_model()
    with torch.no_grad():
        want = model(IDS)
        merged = merge_lora(model)
        assert not lora_layers(merged)
        assert (merged(IDS) - want).abs().max().item() < 1e-5


def test_name_patterns_select_layers():
    model = _lora_model(targets=["layers.1.attn.*"])
    assert [n for n, _ in lora_layers(model)] == ["layers.1.attn.qkv", "layers.1.attn.proj"]
    with pytest.raises(ValueError, match="match no linear"):
        apply_lora(GLM(GLMConfig.from_preset("nano", **TINY)), ["attn.nothing"])


@pytest.mark.parametrize("targets,tie", [(("attn.qkv", "attn.proj", "mlp.gate_up", "mlp.down"), True),
                                         (("layers.0.attn.qkv", "lm_head"), False)])
def test_saved_adapter_loads_with_peft_on_the_converted_model(tmp_path, targets, tie):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    model = _lora_model(targets, tie_embeddings=tie)
    with adapters_disabled(model):
        save_model(model, tmp_path / "base", layout="hf")  # what `openglm convert --layout hf` writes
    save_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    if len(targets) == 4:
        assert sorted(config["target_modules"]) == ["down_proj", "gate_up_proj", "k_proj", "o_proj", "q_proj",
                                                    "v_proj"]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "base", torch_dtype=torch.float32)
    hf = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        want, got = model(IDS), hf(IDS).logits
        assert (got - want).abs().max().item() < 1e-4
        with hf.disable_adapter():
            assert (hf(IDS).logits - want).abs().max().item() > 1e-3  # the adapter really did something


def test_sft_with_lora_writes_adapter_and_merged_model(tmp_path):
    cfg = tiny_config(SFTConfig, tmp_path, train_data=[str(DATA / "sft_tiny.jsonl")], eval_fraction=0.0,
                      seq_len=256, micro_batch_size=2, max_steps=3, lr=1e-2, lora={"rank": 4, "alpha": 8},
                      save_every=2)
    run_sft(cfg)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step_00000002", "step_00000003"]
    assert not (tmp_path / "checkpoints" / ckpts[-1] / "model").exists()  # frozen base is not copied
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "final" / "model.safetensors").exists()
    cfg.max_steps, cfg.resume = 4, True  # resume rebuilds the base and restores the adapters
    run_sft(cfg)
    cfg.out_dir, cfg.resume = str(tmp_path / "straight"), False
    run_sft(cfg)
    assert read_log(tmp_path)[3]["loss"] == read_log(tmp_path / "straight")[3]["loss"]


def test_saved_adapter_files_get_the_usual_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        save_adapter(_lora_model(), tmp_path / "adapter")
    finally:
        os.umask(old)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert os.stat(tmp_path / "adapter" / name).st_mode & 0o777 == 0o644, name
