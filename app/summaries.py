"""Rich tables that end each stage's run: shared by the CLI and the demo."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def print_kv(title: str, data: dict) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=False)
    for k, v in data.items():
        t.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(t)


def print_label_summary(s: dict, out: Path) -> None:
    from rich.table import Table

    t = Table(title=f"labels → {out}")
    t.add_column("status")
    t.add_column("segments", justify="right")
    t.add_column("share", justify="right")
    for status, n in s["status_counts"].items():
        t.add_row(status, str(n), f"{n / max(s['segments'], 1):.1%}")
    Console().print(t)
    print_kv(
        "summary",
        {
            "pairs": s["pairs"],
            "segments": s["segments"],
            "coverage (a or b)": s["coverage"],
            "mean confidence": s["mean_confidence"],
            "order agreement": s["order_agreement_rate"],
            "requests sent": s["requests_sent"],
            "segments/s": s["segments_per_s"],
            "judge": s["judge_model"],
        },
    )


def print_generate_summary(r) -> None:
    from rich.table import Table

    print_kv(
        f"pairs → {r.pairs_path}",
        {"pairs made": r.made, "already finished": r.already_done, "skipped": len(r.skipped),
         "seconds per pair": r.seconds_per_pair},
    )  # fmt: skip
    if r.skipped:
        t = Table(title="skipped sources")
        t.add_column("source_id")
        t.add_column("reason")
        for sid, reason in r.skipped.items():
            t.add_row(sid, reason)
        Console().print(t)
