"""Reinforcement learning: rollouts, SEPO rewards, GRPO, the supervised warm start and the trainer."""
