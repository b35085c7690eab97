"""User-facing errors: one line that names what was wrong and how to fix it.

The CLI prints `error: <message>` and exits 2 for these, without a traceback (set DENSEDPO_DEBUG=1 to see it).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DenseDPOError(Exception):
    """A problem with the user's input, flags or environment, explained in one or two sentences."""


class TableError(DenseDPOError):
    """A table that does not meet its contract (names the table, the column and the row)."""
