"""User-facing errors: one clear line, no traceback, a non-zero exit.

Library code raises ``UniferError`` (or a subclass) with a message that names the file, the record index and the
field where that applies; command-line entry points wrap ``main`` with ``run_cli`` which prints
``error: <message>`` to stderr and exits with status 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable


class UniferError(Exception):
    """An error the user can fix (bad input, missing file, wrong flag)."""


class DataError(UniferError):
    """A data file that cannot be used: ``DataError(path, message, index=None, field=None)``."""

    def __init__(self, path, message: str, index: int | None = None, field: str | None = None):
        self.path, self.index, self.field, self.detail = str(path), index, field, message
        where = str(path)
        if index is not None:
            where += f": record {index}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a UniferError becomes ``error: …`` on stderr and exit status 2."""
    try:
        rc = main(argv)
    except UniferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
