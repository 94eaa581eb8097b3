"""Alignment beyond SFT and DPO: RL on verifiable rewards (GRPO, PPO-clip), ChatGLM-Math's
self-critique and Self-Contrast data. Above `eval` in the layers: rollouts run the real agent
loop and tools, and rewards reuse the agent task checker."""
