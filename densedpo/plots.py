"""Small helpers every report's plots share (matplotlib, Agg): titles that fit their figure."""

from __future__ import annotations

import textwrap


def fitted_title(ax, text: str, fontsize: float = 10.0) -> None:
    """Set `ax`'s title wrapped to the axes' width (long judge ids and captions would be clipped otherwise): each
    line of `text` is wrapped at the characters that fit at `fontsize` (~0.6 em per character)."""
    width_pt = ax.get_position().width * ax.figure.get_figwidth() * 72
    chars = max(12, int(width_pt / (0.6 * fontsize)) - 4)
    lines = []
    for line in text.splitlines() or [""]:
        lines += textwrap.wrap(line, chars, break_long_words=True, break_on_hyphens=False) or [""]
    ax.set_title("\n".join(lines), fontsize=fontsize)
