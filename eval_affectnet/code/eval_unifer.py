"""Score FERBench results of one set: `python eval_affectnet/code/eval_unifer.py --help`."""
import sys
from pathlib import Path

try:
    import unifer  # noqa: F401  (installed, or already importable)
except ImportError:  # a plain checkout: the package sits two folders up
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from unifer.scoring_cli import set_main

if __name__ == "__main__":
    sys.exit(set_main("affectnet"))
