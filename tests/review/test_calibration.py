"""Calibration from people: temperature scaling fitted on labeled segments, its held-out effect, and `label`
applying it (tables written and read as the stages write them)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from densedpo.tables import LABELS, read_table, write_table
from labeler.aggregate import calibrate_row, temper
from review.calibration import fit_calibration, fit_temperature, tempered, top_ece
from tests.conftest import run_cli


def test_temper_and_calibrate_a_row_by_hand():
    p = [0.8, 0.15, 0.05]
    s = [math.sqrt(x) for x in p]
    assert temper(p, 2.0) == pytest.approx([x / sum(s) for x in s])
    row = {"preference": "a", "status": "ok", "p_a": 0.8, "p_b": 0.15, "p_tie": 0.05, "confidence": 0.8}
    soft = calibrate_row(row, 2.0, min_confidence=0.6)  # 0.8 -> 0.894/1.605 = 0.557 < 0.6: now low confidence
    assert soft["confidence"] == pytest.approx(s[0] / sum(s)) and soft["status"] == "low_confidence"
    assert soft["preference"] == "tie"
    back = calibrate_row(soft, 0.5, min_confidence=0.6)  # sharpening again finds the answer (a) and keeps it
    assert back["status"] == "ok" and back["preference"] == "a" and back["confidence"] == pytest.approx(0.8)
    failed = {"preference": None, "status": "request_error", "p_a": None, "p_b": None, "p_tie": None}
    assert calibrate_row(failed, 2.0, 0.5) is failed and calibrate_row(row, 1.0, 0.5) is row


def overconfident(n: int, sharpen: float, seed: int):
    """People's labels drawn from true probabilities q; the judge reports q sharpened (p = q^(1/sharpen))."""
    rng = np.random.default_rng(seed)
    q = rng.dirichlet([1.5, 1.5, 1.0], size=n)
    y = np.array([rng.choice(3, p=row) for row in q])
    return tempered(q, sharpen), y


def test_the_fitted_temperature_undoes_overconfidence_and_lowers_held_out_ece():
    p, y = overconfident(4000, sharpen=0.4, seed=1)
    t = fit_temperature(p, y)
    assert t == pytest.approx(1 / 0.4, rel=0.15)  # the judge's probabilities were q^(2.5)
    labels = pd.DataFrame(
        {"pair_id": [f"p{i // 3}" for i in range(len(y))], "segment_idx": [i % 3 for i in range(len(y))]}
    ).assign(p_a=p[:, 0], p_b=p[:, 1], p_tie=p[:, 2], status="ok")
    reference = labels[["pair_id", "segment_idx"]].assign(preference=[("a", "b", "tie")[k] for k in y])
    fitted = fit_calibration(labels, reference, n_boot=200)
    before, after = fitted["ece_before"], fitted["ece_after_heldout"]
    print(f"held-out ECE {before['value']} {before['ci95']} -> {after['value']} {after['ci95']}")
    assert fitted["ece_change"]["ci95"][1] < 0  # lower, with its whole interval below 0
    assert top_ece(tempered(p, t), y) < top_ece(p, y)


def test_label_applies_the_temperature_and_records_it(tmp_path):
    from densedpo.video import VideoInfo
    from labeler.config import LabelConfig
    from labeler.judges import JudgeSpec, make_judge
    from labeler.parse import OrderResult
    from labeler.plan import PairPlan, request_id
    from labeler.rows import assemble_rows
    from labeler.segments import segment_bounds

    plan = PairPlan(0, "p", "a cat", tmp_path / "a.mp4", tmp_path / "b.mp4", VideoInfo(48, 16.0, 64, 64),
                    segment_bounds(48, 16.0, 1.0))  # fmt: skip
    scores = {0: (1.0, 0.2), 1: (0.1, 0.5), 2: (0.3, 0.3)}
    tables = {}
    for t in (1.0, 2.0):
        judge = make_judge(
            JudgeSpec(kind="score", model="/m/rm", name="rm", score_scale=0.5, calibration_temperature=t)
        )
        judge.bind("/m/rm")
        results = {
            ("rm", request_id("p", k, u)): OrderResult(request_id("p", k, u), u, "ok", score=s, judge="rm")
            for k, pair in scores.items()
            for u, s in zip("ab", pair)
        }
        cfg = LabelConfig(pairs=tmp_path / "pairs.parquet", out=tmp_path / f"l{t}.parquet", min_confidence=0.6)
        write_table(assemble_rows([plan], results, cfg, [judge]), cfg.out, LABELS)
        tables[t] = read_table(cfg.out, LABELS)
    plain, calibrated = tables[1.0], tables[2.0]
    assert "calibration_temperature" not in plain.columns and (calibrated["calibration_temperature"] == 2.0).all()
    for r0, r1 in zip(plain.itertuples(), calibrated.itertuples()):
        want = temper([r0.p_a, r0.p_b, r0.p_tie], 2.0)
        assert [r1.p_a, r1.p_b, r1.p_tie] == pytest.approx(want)
        answer = (
            r0.preference
            if r0.status == "ok"
            else ("a", "b", "tie")[int(np.argmin([abs(p - r0.confidence) for p in (r0.p_a, r0.p_b, r0.p_tie)]))]
        )
        assert r1.confidence == pytest.approx(want[("a", "b", "tie").index(answer)])
        assert r1.status == ("ok" if r1.confidence >= 0.6 else "low_confidence")


def test_a_judges_own_min_confidence_beats_the_flag(tmp_path):
    """A judges file's min_confidence (eval-labels --fit-calibration writes it for --target-accuracy) filters that
    judge's rows; the --min-confidence flag stays the rule for judges without one."""
    from densedpo.video import VideoInfo
    from labeler.config import LabelConfig
    from labeler.judges import JudgeSpec, make_judge
    from labeler.parse import OrderResult
    from labeler.plan import PairPlan, request_id
    from labeler.rows import assemble_rows
    from labeler.segments import segment_bounds

    plan = PairPlan(0, "p", "a cat", tmp_path / "a.mp4", tmp_path / "b.mp4", VideoInfo(48, 16.0, 64, 64),
                    segment_bounds(48, 16.0, 1.0))  # fmt: skip
    judges, results = [], {}
    for name, own in (("strict", 0.9), ("plain", None)):
        judge = make_judge(JudgeSpec(kind="score", model="/m/rm", name=name, score_scale=0.5, min_confidence=own))
        judge.bind("/m/rm")
        judges.append(judge)
        for k, (sa, sb) in {0: (1.0, 0.2), 1: (0.1, 0.5), 2: (2.0, 0.0)}.items():
            for u, score in zip("ab", (sa, sb)):
                rid = request_id("p", k, u)
                results[(name, rid)] = OrderResult(rid, u, "ok", score=score, judge=name)
    cfg = LabelConfig(pairs=tmp_path / "pairs.parquet", min_confidence=0.6)
    rows = assemble_rows([plan], results, cfg, judges)
    for name, threshold in (("strict", 0.9), ("plain", 0.6)):
        mine = rows[rows["judge"] == name]
        assert list(mine["status"]) == ["ok" if c >= threshold else "low_confidence" for c in mine["confidence"]]
    strict, plain = (rows[rows["judge"] == n].set_index("segment_idx") for n in ("strict", "plain"))
    assert (strict["status"] != plain["status"]).any()  # the two rules differ on these scores


def test_eval_labels_fits_and_writes_into_the_judges_file(tmp_path):
    """eval-labels --fit-calibration on tables read from disk: the report holds the fit and its held-out ECE; the
    temperature lands in the judges file entry named by the judge's id, which `label` loads."""
    import yaml

    from labeler.judges import JudgeSpec, load_jury

    p, y = overconfident(600, sharpen=0.4, seed=2)
    n = len(y)
    segment = {"frame_start": 0, "frame_end": 16, "t_start_s": 0.0, "t_end_s": 1.0}
    base = pd.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "segment_idx": 0, **segment})
    pref = [("a", "b", "tie")[k] for k in p.argmax(axis=1)]
    judge = base.assign(preference=pref, status="ok", p_a=p[:, 0], p_b=p[:, 1], p_tie=p[:, 2],
                        confidence=p.max(axis=1), judge="chat:tiny", judge_model="tiny")  # fmt: skip
    human = base.assign(preference=[("a", "b", "tie")[k] for k in y], status="ok", judge="human",
                        judge_model="human", annotator="me")  # fmt: skip
    write_table(judge.reindex(columns=[c for c in LABELS.names if c != "annotator"]), tmp_path / "j.parquet", LABELS)
    write_table(human.reindex(columns=LABELS.names), tmp_path / "h.parquet", LABELS)
    judges = tmp_path / "judges.yaml"
    judges.write_text(yaml.safe_dump({"judges": [{"name": "chat:tiny", "server": ["http://x"]}, {"name": "other"}]}))
    r = run_cli("eval-labels", "--labels", tmp_path / "j.parquet", "--reference", tmp_path / "h.parquet",
                "--fit-calibration", judges, "--json", tmp_path / "r.json", "--bootstrap", "100",
                "--target-accuracy", "0.7")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())["references"][0]["judges"]["chat:tiny"]
    fit = report["calibration"]
    # the threshold for the target is found again on the tempered confidences (the judge label will run), not the raw
    sure, raw = fit["min_confidence_for_target_lower_bound"], report["min_confidence_for_target_lower_bound"]
    assert sure["threshold"] != raw["threshold"] and "written as min_confidence" in " ".join(r.stderr.split())
    assert fit["calibration_temperature"] == pytest.approx(2.5, rel=0.25)
    assert fit["ece_after_heldout"]["value"] < fit["ece_before"]["value"]
    assert "calibration of chat:tiny: temperature" in r.stderr + r.stdout
    specs, _ = load_jury(judges, JudgeSpec(model="m"))
    assert specs[0].calibration_temperature == fit["calibration_temperature"]
    assert specs[0].min_confidence == sure["threshold"]
    assert specs[1].calibration_temperature == 1.0 and specs[1].min_confidence is None


def test_the_temperature_is_not_a_journal_setting(tmp_path):
    """Labeling again with another temperature re-aggregates the journal: its settings fingerprint is the same."""
    from labeler.config import LabelConfig
    from labeler.engine import fingerprint
    from labeler.judges import JudgeSpec, make_judge

    prints = []
    for t in (1.0, 2.5):
        judge = make_judge(JudgeSpec(kind="chat", model="/m/vlm", calibration_temperature=t))
        judge.bind("/m/vlm")
        prints.append(fingerprint(LabelConfig(pairs=tmp_path / "p.parquet", server=["http://x"]), [judge]))
    assert prints[0] == prints[1]


# ---------------------------------------------------------------------------------------------- juries


def jury_tables(n_pairs: int, qualities: dict[str, float], seed: int) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Members that see the truth through noise of their own: quality 1 = the true probabilities, 0 = a random
    guess; people's labels drawn from the true probabilities. 3 segments per pair."""
    rng = np.random.default_rng(seed)
    n = 3 * n_pairs
    q = rng.dirichlet([1.0, 1.0, 0.6], size=n)
    y = np.array([rng.choice(3, p=row) for row in q])
    key = {"pair_id": [f"p{i // 3}" for i in range(n)], "segment_idx": [i % 3 for i in range(n)]}
    members = {}
    for name, quality in qualities.items():
        p = quality * q + (1 - quality) * rng.dirichlet([1, 1, 1], size=n)
        members[name] = pd.DataFrame({**key, "p_a": p[:, 0], "p_b": p[:, 1], "p_tie": p[:, 2], "status": "ok"})
    return members, pd.DataFrame({**key, "preference": [("a", "b", "tie")[k] for k in y]})


def test_a_jury_learns_to_trust_its_better_member_and_says_so_only_when_it_beats_equal_weights_held_out():
    from review.calibration import fit_jury

    members, ref = jury_tables(300, {"good": 0.95, "fair": 0.5, "guess": 0.0}, seed=3)
    fit = fit_jury(members, ref, n_boot=200)
    w = fit["jury_weights"]
    print(f"weights {w}; held-out NLL {fit['heldout_nll']} change {fit['heldout_nll_change']}")
    assert w["good"] == 1.0 and w["good"] > w["fair"] > w["guess"] and w["guess"] < 0.1
    assert fit["use_weights"] and fit["heldout_nll_change"]["ci95"][1] < 0
    twins, ref = jury_tables(300, {"one": 0.7, "two": 0.7}, seed=4)  # exchangeable members: nothing to learn
    fit = fit_jury(twins, ref, n_boot=200)
    assert not fit["use_weights"] and fit["heldout_nll_change"]["ci95"][1] > 0


def test_the_jury_mean_follows_the_weights_and_majority_ignores_them():
    from labeler.aggregate import combine_judges

    x = {"preference": "a", "p_a": 0.8, "p_b": 0.1, "p_tie": 0.1, "status": "ok", "error": None}
    y = {"preference": "b", "p_a": 0.2, "p_b": 0.7, "p_tie": 0.1, "status": "ok", "error": None}
    equal = combine_judges({"x": x, "y": y}, "mean", 0.0)
    assert equal["preference"] == "a" and equal["p_a"] == pytest.approx(0.5) and equal["confidence"] == 0.5
    heavy_y = combine_judges({"x": x, "y": y}, "mean", 0.0, {"x": 1.0, "y": 3.0})
    assert heavy_y["p_b"] == pytest.approx((0.1 + 3 * 0.7) / 4) and heavy_y["preference"] == "b"
    assert heavy_y["confidence"] == pytest.approx(0.75)  # the weighted share of judges that chose b
    assert combine_judges({"x": x, "y": y}, "majority", 0.0, {"x": 1.0, "y": 3.0})["preference"] == "tie"


def test_eval_labels_writes_the_jury_weights_label_reads_them(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from app.cli import app
    from labeler.judges import JudgeSpec, load_jury

    members, ref = jury_tables(120, {"chat:good": 0.95, "chat:guess": 0.0}, seed=5)
    segment = {"frame_start": 0, "frame_end": 16, "t_start_s": 0.0, "t_end_s": 1.0}
    top = {n: t[["p_a", "p_b", "p_tie"]].to_numpy().argmax(axis=1) for n, t in members.items()}
    rows = [t.assign(judge=n, preference=[("a", "b", "tie")[k] for k in top[n]]) for n, t in members.items()]
    jury = pd.concat(rows).groupby(["pair_id", "segment_idx"], as_index=False).first().assign(judge="jury")
    table = pd.concat([*rows, jury], ignore_index=True).assign(**segment, judge_model="m", confidence=0.9)
    write_table(table.reindex(columns=[c for c in LABELS.names if c != "annotator"]), tmp_path / "j.parquet", LABELS)
    write_table(ref.assign(**segment, status="ok", judge_model="human").reindex(columns=LABELS.names[:-2]),
                tmp_path / "h.parquet", LABELS)  # fmt: skip
    judges = tmp_path / "judges.yaml"
    judges.write_text(yaml.safe_dump({"judges": [{"name": "chat:good"}, {"name": "chat:guess"}]}))
    args = ["--labels", str(tmp_path / "j.parquet"), "--reference", str(tmp_path / "h.parquet"), "--bootstrap", "100"]
    r = CliRunner().invoke(app, ["eval-labels", *args, "--fit-calibration", str(judges)])
    assert r.exit_code == 0, r.output
    assert "written as each judge's jury_weight" in " ".join(r.output.split())
    specs, _ = load_jury(judges, JudgeSpec(model="m", server=["http://x"]))
    weights = {s.name: s.jury_weight for s in specs}
    assert weights["chat:good"] == 1.0 and weights["chat:guess"] < 0.2
