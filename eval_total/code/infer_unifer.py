"""All of FERBench: answer the four sets in one process with one model load. Options: --help; the work is
unifer.infer.allsets (the per-set scripts' flags, with --qa-dir/--results-dir in place of --input/--output)."""
import sys
from pathlib import Path

if __name__ == "__main__":  # vLLM re-imports this file in its worker processes
    # The package of the checkout this script lives in (also where another copy is installed).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from unifer.infer.allsets import cli

    sys.exit(cli())
