"""UniFER: facial expression recognition with multimodal LLMs (FERBench, cold-start SFT, GRPO)."""

__version__ = "0.1.0"
