"""Rich tables that end each stage's run: shared by the CLI and the demo."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def print_kv(title: str, data: dict) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=False, min_width=min(len(title), 100))  # the title on one line
    for k, v in data.items():
        t.add_row(k, number(v) if isinstance(v, float) else str(v))
    Console().print(t)


def number(v: float) -> str:
    """3 decimals, or 3 significant digits for small values (an lr of 1e-5 is not 0.000)."""
    return f"{v:.3g}" if v != 0 and abs(v) < 0.01 else f"{v:.3f}"


def print_label_summary(s: dict, out: Path, min_confidence: float | None = None) -> None:
    from rich.table import Table

    from densedpo.tables import MIN_NON_TIE_FRACTION

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
            "images sent": s.get("images_sent", "–"),
            "segments/s": s["segments_per_s"],
            "judge": s["judge_model"],
            f"pairs train keeps (> {MIN_NON_TIE_FRACTION:.0%} decided)": s["trainable_pairs"],
        },
    )
    warning = few_trainable_warning(s["trainable_pairs"], s["pairs"], min_confidence)
    if warning:
        Console(stderr=True).print(warning, style="yellow", markup=False, soft_wrap=True)
    judges = s.get("judges") or {}
    if len(judges) > 1 or any("prompt_tokens" in j or "thoughts" in j for j in judges.values()):
        print_judges_table(judges)


def few_trainable_warning(trainable: int, pairs: int, min_confidence: float | None) -> str | None:
    """One line when none or few (under a quarter) of the labeled pairs would pass train's non-tie filter."""
    if pairs == 0 or trainable >= max(1, pairs / 4):
        return None
    lower = f" (now {min_confidence:g})" if min_confidence is not None else ""
    return (
        f"warning: only {trainable} of {pairs} pairs have enough decided segments for `densedpo train`; try a lower "
        f"--min-confidence{lower} (eval-labels --reference shows each threshold's coverage and accuracy) or a "
        "stronger judge (--model, --judges)."
    )


def print_judges_table(judges: dict[str, dict]) -> None:
    """One row per judge (and the jury): coverage, agreement, this run's requests, images, tokens, cost."""
    from rich.table import Table

    t = Table(title="judges")
    thinking = any(j.get("thoughts") for j in judges.values())  # reasoning judges: their thoughts' columns
    columns = ["judge", "kind", "coverage", "order agreement", "requests", "images", "prompt tokens"]
    columns += ["completion tokens", *(["thoughts (cut)", "reasoning tokens"] if thinking else []), "cost (est.)"]
    for col in (*columns, "failed", "confidence from"):
        t.add_column(col, justify="left" if col in ("judge", "kind", "confidence from") else "right")

    def num(v, fmt="{:,}"):
        return "–" if v is None or (isinstance(v, float) and v != v) else fmt.format(v)

    for name, j in judges.items():
        thoughts = [f"{j['thoughts']:,} ({j['thoughts_cut']:,})" if j.get("thoughts") else "–"]
        t.add_row(
            name,
            j.get("kind", ""),
            num(j.get("coverage"), "{:.3f}"),
            num(j.get("order_agreement_rate"), "{:.3f}"),
            num(j.get("requests")),
            num(j.get("images")),
            num(j.get("prompt_tokens")),
            num(j.get("completion_tokens")),
            *([*thoughts, num(j.get("reasoning_tokens"))] if thinking else []),
            num(j.get("cost_usd"), "${:.4f}"),
            _failed(j),
            j.get("confidence_from") or "",
        )
    console = Console()
    Console(width=max(console.width, 210 if thinking else 180)).print(
        t
    )  # wide: judge ids are long, and logs are not terminals


def print_generate_summary(r) -> None:
    from rich.table import Table

    print_kv(
        f"pairs → {r.pairs_path}",
        {
            "pairs made": r.made,
            "already finished": r.already_done,
            "skipped": len(r.skipped),
            "seconds per pair": r.seconds_per_pair if r.made else "–",
        },
    )
    if r.skipped:
        t = Table(title="skipped sources")
        t.add_column("source_id")
        t.add_column("reason")
        for sid, reason in r.skipped.items():
            t.add_row(sid, reason)
        Console().print(t)


JUDGE_ROWS = (
    ("segment_accuracy", "segment accuracy (ties skipped)"),
    ("segment_accuracy_ties_wrong", "segment accuracy (judge ties wrong)"),
    ("coverage", "coverage of reference decisions"),
    ("cohen_kappa", "Cohen's kappa (a/b/tie)"),
    ("clip_accuracy", "clip accuracy (majority vote)"),
    ("ece", "ECE (10 bins)"),
    ("position_consistency", "position consistency"),
    ("first_position_rate", "first-position rate (0.5 = unbiased)"),
)


def _ci(fig: dict | None) -> str:
    from densedpo.stats import with_interval

    return with_interval(fig["value"], *fig["ci95"]) if fig else "–"


def print_judge_report(report: dict) -> None:
    """One table per reference: the judges side by side, each figure with its 95% interval."""
    from rich.table import Table

    out = Console()
    for ref in report["references"]:
        judges = ref["judges"]
        t = Table(
            title=f"judges vs {ref['reference']} ({ref['reference_segments']} segments; 95% bootstrap intervals "
            "over pairs)"
        )
        t.add_column("figure")
        for name in judges:
            t.add_column(name, justify="right")
        t.add_row(
            "segments shared / decided in both",
            *[f"{r['segments_shared']} / {r['segments_both_decided']}" for r in judges.values()],
        )
        for key, label in JUDGE_ROWS:
            t.add_row(label, *[_ci(r[key]) for r in judges.values()])
        if any("motion_bias" in r for r in judges.values()):
            t.add_row(
                "judge prefers the less moving video",
                *[_ci(r.get("motion_bias", {}).get("judge_prefers_less_motion")) for r in judges.values()],
            )
            t.add_row(
                "reference prefers the less moving video",
                *[_ci(r.get("motion_bias", {}).get("reference_prefers_less_motion")) for r in judges.values()],
            )
        target = report["target_accuracy"]
        t.add_row(
            f"lowest --min-confidence with accuracy ≥ {target:g}",
            *[str(r["min_confidence_for_target"] or "none") for r in judges.values()],
        )
        t.add_row(
            f"… with the interval's lower bound ≥ {target:g} (coverage)",
            *[_sure(r.get("min_confidence_for_target_lower_bound")) for r in judges.values()],
        )
        out.print(t)
        for name, r in judges.items():
            m = r.get("fitted_tie_margin")
            if m:
                out.print(
                    f"{name}: --tie-margin {m['value']:.4g} reproduces this reference best (3-way agreement "
                    f"{m['agreement']:.3f} on the {m['segments']} segments it was fitted on, "
                    f"{_opt(m['heldout_agreement'])} on held-out pairs (5-fold); {m['agreement_at_zero']:.3f} at 0); "
                    "rerun label with it: the journal answers, nothing is asked again."
                )
        curve = Table(title="accuracy–coverage curve: segment accuracy / coverage at each --min-confidence")
        curve.add_column("--min-confidence", justify="right")
        for name in judges:
            curve.add_column(name, justify="right")
        thresholds = [c["threshold"] for c in next(iter(judges.values()))["coverage_curve"]]
        for i, th in enumerate(thresholds):
            cells = []
            for r in judges.values():
                c = r["coverage_curve"][i]
                acc = c["segment_accuracy"]["value"]
                cells.append(f"{'–' if acc is None else f'{acc:.3f}'} / {c['coverage']['value'] or 0:.3f}")
            curve.add_row(f"{th:.2f}", *cells)
        out.print(curve)
        ceiling = ref["human_ceiling"]
        if ceiling:
            names = ceiling["annotators"]
            h = Table(title=f"human ceiling: {len(names)} annotators ({', '.join(names)})")
            h.add_column("figure")
            h.add_column("value", justify="right")
            for key in ("pairwise_agreement", "cohen_kappa", "krippendorff_alpha"):
                if key in ceiling:
                    h.add_row(key.replace("_", " "), _ci(ceiling[key]))
            out.print(h)
        for name, r in judges.items():
            if "label_budget" in r:
                print_label_budget(out, name, r["label_budget"])


def print_jury_fit(fit: dict) -> None:
    """eval-labels --fit-calibration on a jury: the members' weights and whether they beat equal weights held out."""
    out = Console()
    nll, acc = fit["heldout_nll"], fit["heldout_accuracy"]
    change = fit["heldout_nll_change"]
    weights = ", ".join(f"{n} {w:.3f}" for n, w in fit["jury_weights"].items())
    out.print(
        f"jury fitted on {fit['segments']} segments ({fit['pairs']} pairs): weights {weights}; held-out NLL "
        f"{nll['equal_mean']:.3f} equal -> {nll['weighted_mean']:.3f} weighted (change {change['value']:+.3f} "
        f"{change['ci95']}); held-out accuracy equal {acc['equal_mean']:.3f}, weighted {acc['weighted_mean']:.3f}, "
        f"majority {acc['majority']:.3f}"
    )
    if fit["use_weights"]:
        out.print("the weights beat equal weights on held-out pairs: written as each judge's jury_weight")
    else:
        out.print("equal weights stay: the fitted weights do not lower the held-out NLL beyond its interval")


def print_label_budget(out, name: str, b: dict) -> None:
    """eval-labels --label-budget: the accuracy estimate's 95% range after n labels, random vs uncertain-first."""
    from rich.table import Table

    t = Table(
        title=f"{name}: how people's labels pin down its accuracy (pool: {b['pool_segments']} decided segments, "
        f"accuracy {b['pool_accuracy']:.3f}; {b['sessions']} simulated sessions per design)"
    )
    for col in ("labels", "random: width", "uncertain: width", "uncertain: bias", "top n unweighted",
                "random: threshold width", "uncertain: threshold width"):  # fmt: skip
        t.add_column(col, justify="right")
    for c in b["curve"]:
        t.add_row(
            str(c["labels"]),
            *(_opt(c[k]) for k in ("random_width", "uncertain_width", "uncertain_bias", "top_n_unweighted")),
            *(_opt(c[k]) for k in ("random_threshold_width", "uncertain_threshold_width")),
        )
    out.print(t)
    reach = {k: v or "more than the budget" for k, v in b["labels_to_width"].items()}
    out.print(
        f"{name}: labels until the accuracy's 95% range is at most {b['width']:g} wide: random "
        f"{reach['random']}, uncertain-first (weighted) {reach['uncertain']}"
        " ('top n unweighted' is the hard stratum's accuracy, not the judge's)"
    )


def _opt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _sure(found: dict | None) -> str:
    return "none" if not found else f"{found['threshold']:g} ({_opt(found['coverage'])})"


def _failed(judge: dict) -> str:
    """A judge's failed segments (request or parse errors) and their share."""
    counts = judge.get("status_counts") or {}
    n = counts.get("request_error", 0) + counts.get("parse_error", 0)
    return f"{n} ({judge.get('failure_rate', 0.0):.0%})"
