"""Score FERBench results of one set: `python eval_rafdb/code/eval_unifer.py --help`."""
import sys
from pathlib import Path

# The package of the checkout this script lives in (also where another copy is installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from unifer.scoring.cli import set_main

if __name__ == "__main__":
    sys.exit(set_main("rafdb"))
