"""The data engine: ask a teacher the FERBench question K times per labelled face, keep what the paper's rewards
accept (UniFER-CoT-style SFT data), and rate every face by its pass rate (UniFER-RLVR-style GRPO data).
``unifer distill``; see docs/distill.md."""
