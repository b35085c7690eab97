"""The closing of every benchmark: a rich table, a JSON file, and one line of name=value figures."""

from __future__ import annotations

import json
from pathlib import Path


def report(title: str, figures: dict, raw: dict, json_path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column("figure")
    t.add_column("value", justify="right")
    for k, v in figures.items():
        t.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(t)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"figures": figures, **raw}, indent=2))
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
