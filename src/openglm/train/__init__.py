"""Training: pre-training (causal LM or GLM blank infilling), SFT, DPO, reward models, LoRA; resumable,
DDP/FSDP2.

    from openglm.train import SFTConfig, run_sft
    run_sft(SFTConfig.from_yaml("configs/nano_sft.yaml", {"max_steps": 20}))

Names load lazily, so ``import openglm.train.<module>`` (the CLI's help, say) imports no torch.
"""

from importlib import import_module

_EXPORTS = {
    "DPOConfig": "config", "LoRAConfig": "config", "RMConfig": "config", "SFTConfig": "config",
    "TrainConfig": "config", "RewardModel": "reward_model", "load_reward_model": "reward_model",
    "export_reward_model": "reward_model",
    "apply_lora": "lora", "merge_lora": "lora", "save_adapter": "lora",
    "run_dpo": "stages", "run_pretrain": "stages", "run_rm": "stages", "run_sft": "stages", "Trainer": "trainer",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'openglm.train' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
