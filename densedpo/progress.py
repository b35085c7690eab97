"""The one rich progress bar every long command shows: description, bar, n/N, what is counted, elapsed time."""

from __future__ import annotations


def progress_bar(console, unit: str, enabled: bool = True, description: str = "[bold]{task.description}"):
    """A rich Progress; `unit` is a column template after the count, e.g. "pairs" or
    "steps · loss {task.fields[loss]:.4f}" (its fields are given to add_task/update)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )
