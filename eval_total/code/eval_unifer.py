"""Score the four FERBench sets together: `python eval_total/code/eval_unifer.py --help`."""
import sys
from pathlib import Path

# The package of the checkout this script lives in (also where another copy is installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from unifer.scoring.cli import total_main

if __name__ == "__main__":
    sys.exit(total_main())
