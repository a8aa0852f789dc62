"""``python -m unifer …`` is the ``unifer`` command."""
from unifer.cli import console_main

if __name__ == "__main__":
    console_main()
