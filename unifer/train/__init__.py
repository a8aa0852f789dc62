"""Trainers on TRL: cold-start SFT (``python -m unifer.train.sft``) and GRPO (``python -m unifer.train.grpo``), with
the paper's runs as recipes (``recipes``, ``train_unifer/recipes/*.yaml``) and the launch the shell scripts hand
over to (``launch``: settings, ``preflight``, torchrun, ``vllm_server``; ``processes``).

``common`` holds what both trainers share; the shell faces live in ``train_unifer/src/scripts/``.
"""
