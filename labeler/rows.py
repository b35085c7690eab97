"""Step 5 of `label`: answers -> label rows (one per segment and judge, plus the jury's), summaries, and the rows
a run in progress has finished (partial labels)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from densedpo.tables import LABEL_STATUSES, LABELS, trainable_pairs
from labeler.aggregate import calibrate_row, combine_judges, decided
from labeler.config import JURY, LabelConfig, cost_usd
from labeler.journal import journal_path_for, read_journal
from labeler.judges import Judge
from labeler.parse import REASONED, OrderResult
from labeler.plan import PairPlan, journal_judges, plan_pairs, request_id


@dataclass
class JudgeStats:
    requests: int = 0
    images: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: int = 0  # answers that carried token counts
    thoughts: int = 0  # answers after a thought (reasoning judges)
    reasoning_tokens: int = 0
    thoughts_cut: int = 0  # thoughts that reached the thinking budget


@dataclass
class RunStats:
    requests_sent: int = 0
    prep_s: float = 0.0
    segments_prepared: int = 0
    judges: dict[str, JudgeStats] = field(default_factory=dict)

    def count(self, judge: str, images: int, result: OrderResult) -> None:
        s = self.judges.setdefault(judge, JudgeStats())
        s.requests += 1
        s.images += images
        if result.prompt_tokens is not None:
            s.usage_reported += 1
            s.prompt_tokens += result.prompt_tokens
            s.completion_tokens += result.completion_tokens or 0
        if result.reasoning is not None:
            s.thoughts += 1
            s.reasoning_tokens += result.reasoning_tokens or 0
            s.thoughts_cut += bool(result.reasoning_cut)


def assemble_rows(
    plans: list[PairPlan],
    results: dict[tuple[str, str], OrderResult],
    cfg: LabelConfig,
    judges: list[Judge],
    rule: str = "mean",
    skip_missing: bool = False,
) -> pd.DataFrame:
    """One row per segment and judge, plus a jury row per segment when there are several judges; with
    skip_missing, only segments whose every answer is in (a partial table)."""
    rows = []
    weights = {j.id: j.spec.jury_weight for j in judges}
    weighted = rule == "mean" and len(set(weights.values())) > 1
    for plan in plans:
        for seg in plan.segments:
            answers = [
                {u: _answer(results, j.id, request_id(plan.pair_id, seg.segment_idx, u)) for u in j.units}
                for j in judges
            ]
            if skip_missing and any(r is None for a in answers for r in a.values()):
                continue
            base = {
                "pair_id": plan.pair_id,
                "segment_idx": seg.segment_idx,
                "frame_start": seg.frame_start,
                "frame_end": seg.frame_end,
                "t_start_s": seg.t_start_s,
                "t_end_s": seg.t_end_s,
            }
            judged = {}
            for judge, a in zip(judges, answers):
                own = judge.spec.min_confidence  # a judges file's, fitted for a target accuracy; else the flag
                min_confidence = cfg.min_confidence if own is None else own
                row = judge.combine(a, min_confidence)
                temperature = judge.spec.calibration_temperature
                judged[judge.id] = calibrate_row(row, temperature, min_confidence)
                prompt = getattr(judge, "prompt", None)
                rows.append(
                    {
                        **base,
                        **judged[judge.id],
                        "judge_model": judge.model,
                        "prompt_name": prompt and prompt.name,
                        "prompt_sha256": prompt and prompt.sha256,
                        **judge.answer_columns(a),
                        "judge": judge.id,
                        "calibration_temperature": temperature if temperature != 1.0 else None,
                    }
                )
            if len(judges) > 1:
                rows.append(
                    {
                        **base,
                        **combine_judges(judged, rule, cfg.min_confidence, weights),
                        "judge_model": f"jury ({'weighted ' if weighted else ''}{rule} of {len(judges)})",
                        "judge": JURY,
                    }
                )
    table = pd.DataFrame(rows, columns=[c for c in LABELS.names if c != "annotator"])
    optional = ("score_a", "score_b", "calibration_temperature", "reasoning_ab", "reasoning_ba")
    return table.drop(columns=[c for c in optional if table[c].isna().all()])


def _answer(results: dict, judge: str, rid: str) -> OrderResult | None:
    """The journaled answer of one unit; None while there is none (a reasoning judge's thought is not one)."""
    r = results.get((judge, rid))
    return None if r is None or r.status == REASONED else r


def summarize(labels: pd.DataFrame) -> dict:
    """Counts per status, coverage (share of segments labeled a or b), mean confidence, order agreement."""
    n = len(labels)
    counts = Counter(labels["status"])
    is_decided = decided(labels)
    agreement = labels["order_agreement"].dropna().astype(bool)
    conf = labels["confidence"].dropna()
    failed = counts["request_error"] + counts["parse_error"]
    return {
        "segments": n,
        "pairs": labels["pair_id"].nunique(),
        "status_counts": {s: counts.get(s, 0) for s in LABEL_STATUSES},
        "coverage": float(is_decided.mean()) if n else 0.0,
        "mean_confidence": float(conf.mean()) if len(conf) else math.nan,
        "order_agreement_rate": float(agreement.mean()) if len(agreement) else math.nan,
        "failure_rate": failed / n if n else 0.0,
        "trainable_pairs": trainable_pairs(labels) if n else 0,  # pass train's default non-tie filter
    }


def judge_summaries(labels: pd.DataFrame, judges: list[Judge], stats: RunStats) -> dict[str, dict]:
    """Per judge (and the jury): its table figures, and this run's requests, images, tokens and estimated cost."""
    out = {}
    for judge in judges:
        s = stats.judges.get(judge.id, JudgeStats())
        row = {
            **summarize(labels[labels["judge"] == judge.id]),
            "kind": judge.kind,
            "requests": s.requests,
            "images": s.images,
            "confidence_from": getattr(judge, "confidence_from", None),
        }
        if s.thoughts:
            row.update(thoughts=s.thoughts, reasoning_tokens=s.reasoning_tokens, thoughts_cut=s.thoughts_cut)
        if s.usage_reported:
            row.update(prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens)
            spec = judge.spec
            if spec.price_in is not None or spec.price_out is not None:
                row["cost_usd"] = cost_usd(s.prompt_tokens, s.completion_tokens, spec)
        out[judge.id] = row
    if len(judges) > 1:
        out[JURY] = {**summarize(labels[labels["judge"] == JURY]), "kind": "jury"}
    return out


def partial_labels(cfg: LabelConfig, plans: list[PairPlan] | None = None) -> pd.DataFrame | None:
    """The rows finished so far, from the journal of a run in progress (or stopped); None before any."""
    header, results = read_journal(journal_path_for(cfg.out))
    specs, rule = cfg.judge_specs()
    judges, bound = journal_judges(specs, header)
    if not bound:
        return None
    rows = assemble_rows(plans or plan_pairs(cfg), results, cfg, judges, rule, skip_missing=True)
    return rows if len(rows) else None
