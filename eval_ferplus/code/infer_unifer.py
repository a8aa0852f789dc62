"""FERPlus: answer the FERBench QA items with a Qwen2.5-VL checkpoint. Options: --help; the work is unifer.infer."""
import sys
from pathlib import Path

if __name__ == "__main__":  # vLLM re-imports this file in its worker processes
    try:
        import unifer  # noqa: F401
    except ImportError:  # not installed: use the repository this script lives in
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from unifer.infer import cli

    sys.exit(cli("ferplus"))
