"""The evaluation report: report.json (the contract scripts compare runs with), report.md, a terminal table and
plots. Every figure is {"value": v, "ci": [low, high]} under the policy's name (and the judge's id for the
preference figures)."""

from __future__ import annotations

import json
from pathlib import Path

from densedpo.plots import fitted_title
from densedpo.stats import with_interval

MOTION = ("dynamic_degree_policy", "dynamic_degree_base", "dynamic_degree_diff", "motion_diff", "moves_less_share")
PREFERENCE = ("segment_win_rate", "segment_tie_rate", "segment_loss_rate", "segment_net_win", "clip_net_win")


def fmt(fig: dict | None) -> str:
    return with_interval(fig.get("value"), *fig["ci"], signed=True) if fig else "–"


def rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(policy, judge or '', figure, formatted value) for every figure, in a stable order."""
    out = []
    for name, p in report["policies"].items():
        for judge, figs in (p.get("judges") or {}).items():
            out += [(name, judge, f, fmt(figs[f])) for f in PREFERENCE]
            by_seg = " ".join(fmt(x).split(" ")[0] for x in figs["net_win_by_segment"])
            out.append((name, judge, "net_win_by_segment", by_seg))
            failed = figs.get("failed_segments")
            if failed and failed["count"]:
                out.append((name, judge, "failed_segments (left out)", f"{failed['count']} ({failed['rate']:.1%})"))
        out += [(name, "", f, fmt(p[f])) for f in MOTION]
        by_seg = " ".join(fmt(x).split(" ")[0] for x in p.get("motion_diff_by_segment", []))
        out.append((name, "", "motion_diff_by_segment", by_seg))
        for dim, v in (p.get("vbench") or {}).items():
            out.append((name, "VBench", dim, f"{v['value']:.4f} (base {v['base']:.4f}, {v['diff']:+.4f})"))
    for judge, figs in ((report.get("probe") or {}).get("judges") or {}).items():
        out.append(("probe", judge, "static_win_rate", fmt(figs["static_win_rate"])))
    return out


def write_report(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# densedpo evaluate",
        "",
        f"Base: `{report['base']}`. Motion: VBench's dynamic-degree rule with {report['motion_method']} flow. "
        f"95% intervals from {report['bootstrap_draws']} bootstrap draws over prompts. A segment labeled `a` is a "
        "policy win (video_a is always the policy's sample).",
        "",
        "| policy | judge | figure | value [95% interval] |",
        "|---|---|---|---|",
        *[f"| {p} | {j} | {f} | {v} |" for p, j, f, v in rows(report)],
        "",
    ]
    for name, p in report["policies"].items():
        for judge, figs in (p.get("judges") or {}).items():
            power = figs["power"]
            lines.append(
                f"- {name} / {judge}: {power['samples_now']} samples; a ±0.05 interval on the segment net win needs "
                f"about {power['samples_for_net_win_pm_0.05'] or '–'} samples (prompts × seeds) at this run's "
                f"spread ({power['samples_for_net_win_pm_0.05_if_segments_independent'] or '–'} if segments were "
                "independent)."
            )
    probe = report.get("probe")
    if probe:
        for judge, figs in probe["judges"].items():
            rate = figs["static_win_rate"]["value"]
            if rate is not None and rate > 0.5:
                lines.append(
                    f"- **{judge} prefers static video** (static win rate {rate:.2f} on frozen copies): DPO on its "
                    "labels will remove motion."
                )
    lines += [f"- **warning**: {w}" for w in report.get("self_preference", [])]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot_report(report, out / "plots")


def print_report(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="did training help? (policy vs base; a = policy)")
    for col in ("policy", "judge", "figure", "value [95% interval]"):
        t.add_column(col, justify="right" if col.startswith("value") else "left")
    for row in rows(report):
        t.add_row(*row)
    console = console or Console(width=max(Console().width, 140))  # wide: judge ids are long, logs not terminals
    console.print(t)


def plot_report(report: dict, folder: Path) -> list[Path]:
    """Win/tie/loss bars per policy and judge, net win by segment index, dynamic-degree bars, probe bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    entries = [(n, j, f) for n, p in report["policies"].items() for j, f in (p.get("judges") or {}).items()]
    if entries:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        for i, (name, judge, figs) in enumerate(entries):
            bottom = 0.0
            stack = (("segment_win_rate", "tab:green"), ("segment_tie_rate", "0.7"), ("segment_loss_rate", "tab:red"))
            for key, color in stack:
                v = figs[key]["value"] or 0.0
                ax1.bar(i, v, bottom=bottom, color=color, label=key.split("_")[1] if i == 0 else None)
                bottom += v
            series = [x["value"] for x in figs["net_win_by_segment"]]
            ax2.plot(range(len(series)), series, marker="o", label=f"{name} / {judge}")
        ax1.set_xticks(range(len(entries)), [f"{n}\n{j}"[:40] for n, j, _ in entries], fontsize=7)
        fitted_title(ax1, "segments: win / tie / loss (policy vs base)")
        ax1.legend(fontsize=7)
        ax2.axhline(0, color="0.5", lw=0.8)
        fitted_title(ax2, "net win by segment index")
        ax2.set_xlabel("segment")
        ax2.legend(fontsize=7)
        paths.append(folder / "preference.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    names = list(report["policies"])
    for i, name in enumerate(names):
        p = report["policies"][name]
        ax.bar(i - 0.2, p["dynamic_degree_base"]["value"] or 0.0, 0.4, color="0.6", label="base" if i == 0 else None)
        policy = p["dynamic_degree_policy"]["value"] or 0.0
        ax.bar(i + 0.2, policy, 0.4, color="tab:blue", label="policy" if i == 0 else None)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1)
    fitted_title(ax, f"dynamic degree ({report['motion_method']})")
    ax.legend()
    paths.append(folder / "dynamic_degree.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    paths += _motion_scatter(folder.parent / "motion.parquet", folder, plt)
    probe = (report.get("probe") or {}).get("judges") or {}
    if probe:
        fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
        rates = [figs["static_win_rate"]["value"] or 0.0 for figs in probe.values()]
        ax.bar(range(len(rates)), rates, color="tab:purple")
        ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
        ax.set_xticks(range(len(rates)), [j[:30] for j in probe], fontsize=7)
        ax.set_ylim(0, 1)
        fitted_title(ax, "motion-bias probe: share of decided segments won by the frozen copy")
        paths.append(folder / "probe.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _motion_scatter(table: Path, folder: Path, plt) -> list[Path]:
    """Base vs policy motion per sample (points under the diagonal: the policy moves less)."""
    import pandas as pd

    if not table.exists():
        return []
    motion = pd.read_parquet(table)
    fig, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
    for name, g in motion.groupby("policy"):
        ax.scatter(g["motion_base"], g["motion_policy"], s=14, label=name)
    top = float(max(motion["motion_base"].max(), motion["motion_policy"].max(), 1e-6))
    ax.plot([0, top], [0, top], color="0.5", lw=0.8)
    ax.set_xlabel("base motion (top-5% flow, px)")
    ax.set_ylabel("policy motion")
    ax.legend(fontsize=7)
    fig.savefig(folder / "motion_scatter.png", dpi=110)
    plt.close(fig)
    return [folder / "motion_scatter.png"]
