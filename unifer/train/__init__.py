"""Trainers on TRL: cold-start SFT (``python -m unifer.train.sft``) and GRPO (``python -m unifer.train.grpo``).

``common`` holds what both share; the shell faces live in ``train_unifer/src/scripts/``.
"""
