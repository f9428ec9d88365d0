"""What every command-line tool of the toolkit means by its exit status.

- 0: done (a run that left records failed says so, and a re-run retries them);
- 2: bad input or a failed preflight: one line naming the file, record or variable and what
  to do (every such error is a ``UserError``);
- 3: the budget was reached (``BUDGET_USD``): re-run to resume.

Anything else is a bug and ends in a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET = 0, 2, 3


class UserError(Exception):
    """Bad input or a failed preflight; the message says what to do."""


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """``main(argv)``, with a UserError turned into its one-line message and exit status 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
