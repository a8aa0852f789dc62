"""AffectNet: answer the FERBench QA items with a Qwen2.5-VL checkpoint. Options: --help; the work is unifer.infer.runner."""
import sys
from pathlib import Path

if __name__ == "__main__":  # vLLM re-imports this file in its worker processes
    # The package of the checkout this script lives in (also where another copy is installed).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from unifer.infer.runner import cli

    sys.exit(cli("affectnet"))
