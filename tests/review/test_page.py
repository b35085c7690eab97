"""The review page's pure parts and its bad inputs (the page itself: test_review_browser.py)."""

import pandas as pd
import pytest

from review.page import left_side, queue_order, to_preference
from tests.conftest import run_cli


def test_queue_orders():
    pairs = pd.DataFrame({"pair_id": ["p0", "p1", "p2", "p3"]})
    labels = pd.DataFrame({"pair_id": ["p0", "p0", "p1", "p2"], "confidence": [0.9, 0.6, 0.8, None]})
    # p2 failed (no confidence: least sure), p0's worst is 0.6, p1 0.8, p3 unlabeled last
    assert queue_order(pairs, labels, "least-confident", 0) == ["p2", "p0", "p1", "p3"]
    assert queue_order(pairs, labels, "table", 0) == ["p0", "p1", "p2", "p3"]
    shuffled = queue_order(pairs, None, "random", 1)
    assert sorted(shuffled) == ["p0", "p1", "p2", "p3"] and shuffled == queue_order(pairs, None, "random", 1)


def test_blind_sides_translate_back():
    assert left_side("any", 0, blind=False) == "a"
    sides = {left_side(f"p{i}", 0, blind=True) for i in range(20)}
    assert sides == {"a", "b"}
    assert to_preference("left", "b") == "b" and to_preference("right", "b") == "a"
    assert to_preference("tie", "b") == "tie"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--order", "bogus"], "--order must be one of least-confident, uncertain, random, table"),
        (["--segment-seconds", "0"], "--segment-seconds must be a positive finite number"),
        (["--annotator", "a b"], "--annotator 'a b': use letters"),
    ],
)
def test_bad_flags_are_one_line_errors(synthetic, args, message):
    pairs, _ = synthetic
    r = run_cli("review", "--pairs", pairs, *args, timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_labels_are_taken_from_the_page_only(tmp_path):
    """/api/labels wants JSON (415 for a form or text, which any page can send without a CORS preflight) from
    the page's own origin (403 for another site's page open in the same browser); nothing is saved then."""
    import httpx

    from densedpo.synthetic import make_synthetic_pairs
    from tests.review.test_page_browser import Review

    pairs, _ = make_synthetic_pairs(tmp_path, num_pairs=1, num_frames=17, height=32, width=32)
    human = tmp_path / "human.parquet"
    r = Review("--pairs", str(pairs), "--human", str(human))
    try:
        label = {"index": 0, "segment_idx": 0, "choice": "left"}
        as_text = httpx.post(r.url + "api/labels", content=str(label), headers={"Content-Type": "text/plain"})
        assert as_text.status_code == 415
        as_form = httpx.post(r.url + "api/labels", data=label)
        assert as_form.status_code == 415
        other_site = httpx.post(r.url + "api/labels", json=label, headers={"Origin": "http://evil.example"})
        assert other_site.status_code == 403 and "review page only" in other_site.json()["detail"]
        assert not human.exists()
        ours = httpx.post(r.url + "api/labels", json=label, headers={"Origin": r.url.rstrip("/")})
        assert ours.status_code == 200 and ours.json()["human"] == "a"
        assert human.exists()
    finally:
        r.stop()
