"""Training: pre-training (causal LM or GLM blank infilling), SFT, DPO, LoRA; resumable, DDP/FSDP2.

    from openglm.train import SFTConfig, run_sft
    run_sft(SFTConfig.from_yaml("configs/nano_sft.yaml", {"max_steps": 20}))
"""

from .config import DPOConfig, LoRAConfig, SFTConfig, TrainConfig
from .lora import apply_lora, merge_lora, save_adapter
from .stages import run_dpo, run_pretrain, run_sft
from .trainer import Trainer

__all__ = ["DPOConfig", "LoRAConfig", "SFTConfig", "TrainConfig", "Trainer", "apply_lora", "merge_lora",
           "run_dpo", "run_pretrain", "run_sft", "save_adapter"]
