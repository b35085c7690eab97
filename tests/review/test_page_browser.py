"""`densedpo review` in a real browser: headless Chromium (Playwright) against the real uvicorn server.

The pairs are H.264 videos written by densedpo.video; the labels table is a judge's, with chosen confidences.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from densedpo.synthetic import make_synthetic_pairs
from densedpo.tables import LABELS, read_table, write_table
from labeler.servers import free_port
from tests.conftest import REPO

FPS = 16.0
ONE_FRAME = 1 / FPS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 pairs × 3 segments; a judge table whose least confident segment is in pair 2, then pair 0."""
    root = tmp_path_factory.mktemp("review")
    pairs, truth = make_synthetic_pairs(root, num_pairs=4, seed=7)
    judge = read_table(truth, LABELS)
    ids = list(dict.fromkeys(judge["pair_id"]))
    least = {ids[0]: 0.55, ids[1]: 0.9, ids[2]: 0.41, ids[3]: 0.8}
    judge["confidence"] = [least[p] if s == 1 else 0.95 for p, s in zip(judge["pair_id"], judge["segment_idx"])]
    judge["judge_model"] = "judge-x"
    judge["answer_ab"], judge["answer_ba"] = "first", "second"
    labels = write_table(judge.drop(columns=["artifact"]), root / "labels.parquet", LABELS)
    return {
        "root": root,
        "pairs": pairs,
        "labels": labels,
        "ids": ids,
        "judge": judge,
        "expected_order": [ids[2], ids[0], ids[3], ids[1]],
    }


class Review:
    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "review", *args, "--port", str(self.port)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "api/session", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                assert self.proc.poll() is None, self.proc.stdout.read().decode()
                time.sleep(0.1)
        raise RuntimeError("review server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def review(data):
    servers = []

    def start(*extra: str) -> Review:
        s = Review("--pairs", str(data["pairs"]), *extra)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=20000)
    return page


def clocks(page) -> tuple[float, float]:
    return tuple(
        page.evaluate(
            "() => [document.querySelector('[data-testid=video-left]').currentTime,"
            " document.querySelector('[data-testid=video-right]').currentTime]"
        )
    )


def play_and_sample(page, n: int) -> list[tuple[float, float]]:
    """Press space, read both clocks every 50 ms n times, press space again."""
    page.keyboard.press(" ")
    samples = []
    for _ in range(n):
        page.wait_for_timeout(50)
        samples.append(clocks(page))
    page.keyboard.press(" ")
    return samples


def test_queue_seek_sync_label_and_reload(browser, review, data, tmp_path):
    human = tmp_path / "human.parquet"
    r = review("--labels", str(data["labels"]), "--human", str(human), "--annotator", "alice")
    page = open_page(browser, r.url)
    # least-confident order: pair 2 (0.41), pair 0 (0.55), pair 3 (0.80), pair 1 (0.90)
    seen = [page.inner_text("[data-testid=pair-id]")]
    for _ in range(3):
        page.keyboard.press("Enter")
        page.wait_for_function("id => document.querySelector('[data-testid=pair-id]').textContent !== id", arg=seen[-1])
        page.wait_for_selector("body[data-ready='1']")
        seen.append(page.inner_text("[data-testid=pair-id]"))
    assert seen == data["expected_order"]
    page.goto(r.url + "#0")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    pair_id = page.inner_text("[data-testid=pair-id]")
    assert pair_id == data["expected_order"][0]

    # the timeline shows the judge's labels
    blocks = page.query_selector_all("[data-testid=segment]")
    truth = data["judge"][data["judge"]["pair_id"] == pair_id].sort_values("segment_idx")
    assert [b.get_attribute("data-judge") for b in blocks] == list(truth["preference"])
    assert [int(b.get_attribute("data-index")) for b in blocks] == list(truth["segment_idx"])

    # click segment 2: both players at its start (frame 32 = 2.0 s)
    page.click("[data-testid=segment][data-index='2']")
    page.wait_for_function("() => Math.abs(document.querySelector('[data-testid=video-left]').currentTime - 2) < 0.01")
    left, right = clocks(page)
    start = truth["t_start_s"].iloc[2]
    assert left == pytest.approx(start, abs=1e-3) and right == pytest.approx(start, abs=1e-3)

    # play about a second from segment 0 (loop off): the clocks never differ by more than one frame
    page.uncheck("[data-testid=loop]")
    page.click("[data-testid=segment][data-index='0']")
    page.uncheck("[data-testid=loop]")
    samples = play_and_sample(page, 20)
    assert samples[-1][0] > samples[0][0] + 0.5, samples  # it played
    assert max(abs(a - b) for a, b in samples) <= ONE_FRAME, samples

    # loop segment 1 and play across the wrap: still within a frame, and time stays inside the segment
    page.click("[data-testid=segment][data-index='1']")
    samples = play_and_sample(page, 30)
    assert max(abs(a - b) for a, b in samples) <= ONE_FRAME, samples
    assert all(1.0 - 1e-3 <= a < 2.0 + ONE_FRAME for a, _ in samples), samples
    assert any(later < earlier for (earlier, _), (later, _) in zip(samples, samples[1:])), "never wrapped"

    # frame step
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(100)
    left, right = clocks(page)
    assert left == pytest.approx(right, abs=1e-6)

    # label by keyboard: segment 0 "right better" (non-blind: right is b), then segment 1 tie (auto-advanced)
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("2")
    page.wait_for_selector("[data-testid=segment][data-index='0'][data-human='b']")
    page.keyboard.press("3")
    page.wait_for_selector("[data-testid=segment][data-index='1'][data-human='tie']")
    saved = read_table(human, LABELS)
    rows = saved.set_index("segment_idx")
    assert set(saved["pair_id"]) == {pair_id}
    assert rows.loc[0, "preference"] == "b" and rows.loc[1, "preference"] == "tie"
    assert set(saved["annotator"]) == {"alice"} and set(saved["judge_model"]) == {"human"}
    assert rows.loc[0, "frame_start"] == 0 and rows.loc[0, "frame_end"] == truth["frame_end"].iloc[0]

    # reload: the labels are shown again
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.get_attribute("[data-testid=segment][data-index='0']", "data-human") == "b"
    assert page.get_attribute("[data-testid=segment][data-index='1']", "data-human") == "tie"
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.screenshot(path=str(tmp_path / "review.png"))
    page.close()


def test_blind_mode_hides_the_judge_and_translates_sides(browser, review, data, tmp_path):
    human = tmp_path / "blind.parquet"
    r = review(
        "--labels",
        str(data["labels"]),
        "--human",
        str(human),
        "--annotator",
        "bob",
        "--blind",
        "--order",
        "random",
        "--seed",
        "3",
    )
    page = open_page(browser, r.url)
    blocks = page.query_selector_all("[data-testid=segment]")
    assert blocks and all(b.get_attribute("data-judge") == "" for b in blocks)
    assert "judge" not in page.inner_text("#timeline") and "judge-x" not in page.content()
    lefts = {}
    for i in range(4):  # label segment 0 of every pair "left better"
        page.goto(r.url + f"#{i}")
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        pair = httpx.get(r.url + f"api/pairs/{i}").json()
        lefts[pair["pair_id"]] = pair["left"]
        page.keyboard.press("1")
        page.wait_for_selector(f"[data-testid=segment][data-index='0'][data-human='{pair['left']}']")
    assert set(lefts.values()) == {"a", "b"}, "the sides were never shuffled"
    saved = read_table(human, LABELS).set_index("pair_id")
    for pid, left in lefts.items():
        assert saved.loc[pid, "preference"] == left and saved.loc[pid, "shown_left"] == left
    page.close()


def test_restart_resumes_and_annotators_keep_their_own_rows(browser, review, data, tmp_path):
    human = tmp_path / "shared.parquet"
    first = review("--labels", str(data["labels"]), "--human", str(human), "--annotator", "carol", "--order", "table")
    page = open_page(browser, first.url)
    for _ in range(3):  # every segment of the first pair, pressed as fast as the keyboard goes
        page.keyboard.press("1")
    for k in range(3):
        page.wait_for_selector(f"[data-testid=segment][data-index='{k}'][data-human='a']")
    page.close()
    first.stop()
    # a restart opens the first unfinished pair; a second annotator writes rows beside carol's
    again = review("--labels", str(data["labels"]), "--human", str(human), "--annotator", "carol", "--order", "table")
    page = open_page(browser, again.url)
    assert page.inner_text("[data-testid=pair-id]") == data["ids"][1]
    page.close()
    other = review("--labels", str(data["labels"]), "--human", str(human), "--annotator", "dan", "--order", "table")
    page = open_page(browser, other.url)
    assert page.inner_text("[data-testid=pair-id]") == data["ids"][0]
    assert page.get_attribute("[data-testid=segment][data-index='0']", "data-human") == ""
    page.keyboard.press("2")
    page.wait_for_selector("[data-testid=segment][data-index='0'][data-human='b']")
    page.close()
    saved = read_table(human, LABELS)
    mine = saved[saved["annotator"] == "carol"]
    assert len(mine) == 3 and set(mine["preference"]) == {"a"}
    assert len(saved[saved["annotator"] == "dan"]) == 1
    assert len(pd.read_json(Path(str(human) + ".journal.jsonl"), lines=True)) == 4


def test_a_jury_table_shows_one_block_per_segment(browser, review, data, tmp_path):
    """A jury's labels hold every segment once per judge: the timeline shows the jury's block only, and the
    details panel lists its members' answers."""
    rows = []
    for judge, flip in (("x", False), ("y", True), ("jury", False)):
        t = data["judge"].drop(columns=["artifact"]).copy()
        if flip:
            t["preference"] = t["preference"].map({"a": "b", "b": "a", "tie": "tie"})
        rows.append(t.assign(judge=judge, judge_model=judge))
    jury = write_table(pd.concat(rows, ignore_index=True), tmp_path / "jury.parquet", LABELS)
    r = review("--labels", str(jury), "--human", str(tmp_path / "h.parquet"), "--order", "table")
    pair = httpx.get(r.url + "api/pairs/0").json()
    assert [s["segment_idx"] for s in pair["segments"]] == [0, 1, 2]
    assert {s["judge"]["judge_model"] for s in pair["segments"]} == {"jury"}
    assert [o["judge"] for o in pair["segments"][0]["other_judges"]] == ["x", "y"]
    page = open_page(browser, r.url)
    assert len(page.query_selector_all("[data-testid=segment]")) == 3
    assert len(page.query_selector_all("#details tr.other-judge")) == 2
    page.close()


def test_keys_label_the_selected_segment_counter_and_messages_are_live_and_the_queue_ends(
    browser, review, data, tmp_path
):
    """Playing into segment 1 does not move the selection: the key labels segment 0, the one outlined. The done
    counter moves without a reload, a pair's "saved" message does not follow to the next pair, Enter on the last
    pair says the queue ended, and labeling the last segment says all done."""
    human = tmp_path / "human.parquet"
    r = review("--human", str(human), "--annotator", "bob")
    page = open_page(browser, r.url)
    assert page.inner_text("[data-testid=done]") == "done 0/4"
    page.uncheck("[data-testid=loop]")
    page.keyboard.press(" ")
    page.wait_for_function("() => document.querySelector('[data-testid=video-left]').currentTime > 1.2")
    page.keyboard.press(" ")
    page.wait_for_selector("[data-testid=segment][data-index='1'][data-playhead='1']")
    assert page.get_attribute("[data-testid=segment][data-index='0']", "data-selected") == "1"
    page.keyboard.press("1")
    page.wait_for_selector("[data-testid=segment][data-index='0'][data-human]:not([data-human=''])")
    assert page.get_attribute("[data-testid=segment][data-index='1']", "data-human") == ""
    page.keyboard.press("3")  # segments 1 and 2, no delay between presses
    page.keyboard.press("3")
    page.wait_for_function("() => document.querySelector('[data-testid=done]').textContent === 'done 1/4'")
    assert page.inner_text("[data-testid=saved]").startswith("saved: segment 2")
    first = page.inner_text("[data-testid=pair-id]")
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.querySelector('[data-testid=pair-id]').textContent !== id", arg=first)
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("[data-testid=saved]") == ""  # the last pair's message stays with it
    for _ in range(2):  # pairs 2 and 3 of 4
        pid = page.inner_text("[data-testid=pair-id]")
        for key in "123":
            page.keyboard.press(key)
        page.keyboard.press("Enter")
        page.wait_for_function("id => document.querySelector('[data-testid=pair-id]').textContent !== id", arg=pid)
        page.wait_for_selector("body[data-ready='1']")
    page.keyboard.press("Enter")  # on the last pair, unfinished
    page.wait_for_function("() => document.querySelector('[data-testid=saved]').textContent.startsWith('end of')")
    assert "3 of 4 pairs done" in page.inner_text("[data-testid=saved]")
    for key in "213":
        page.keyboard.press(key)
    page.wait_for_selector("body[data-done='1']")
    assert page.inner_text("[data-testid=done]") == "done 4/4"
    assert page.inner_text("[data-testid=saved]").startswith("all done: 4 of 4 pairs labeled")
    assert len(read_table(human, LABELS)) == 12
    page.close()


def test_a_reasoning_judges_thoughts_show_per_order_in_the_details_panel(browser, review, data, tmp_path):
    """The side panel shows each order's thought (a reasoning judge), folded to its start, whole when opened; text,
    never markup; a hosted judge's hidden thought says so."""
    t = data["judge"].drop(columns=["artifact"]).copy()
    long = "The hands in the first video melt at 0.4 s while the second keeps five fingers <b>clearly</b>. " * 2
    t["reasoning_ab"] = long
    t["reasoning_ba"] = ""
    labels = write_table(t, tmp_path / "thinking.parquet", LABELS)
    r = review("--labels", str(labels), "--human", str(tmp_path / "h.parquet"), "--order", "table")
    page = open_page(browser, r.url)
    ab = page.locator("[data-testid=thought-ab]")
    assert ab.locator("summary").inner_text().startswith("The hands in the first video melt")
    assert ab.locator("summary").inner_text().endswith("…") and not ab.locator("pre").is_visible()
    ab.locator("summary").click()
    assert ab.locator("pre").is_visible() and ab.locator("pre").inner_text() == long  # the whole thought, as text
    assert page.locator("[data-testid=thought-ab] b").count() == 0  # escaped, not rendered
    assert page.locator("[data-testid=thought-ba] summary").inner_text() == "(not returned by the endpoint)"
    page.close()


def test_uncertain_order_marks_the_asked_segments_and_says_why(browser, review, data, tmp_path):
    """--order uncertain --budget 2: the two least sure segments' pairs, in that order; the asked segment is marked on
    the timeline and the details panel says why it was chosen; the header counts the asked segments."""
    r = review("--labels", str(data["labels"]), "--human", str(tmp_path / "h.parquet"), "--order", "uncertain",
               "--budget", "2")  # fmt: skip
    page = open_page(browser, r.url)
    assert page.inner_text("[data-testid=pair-id]") == data["ids"][2]
    assert "uncertain (2 segments asked)" in page.inner_text("#mode")
    marked = [b.get_attribute("data-asked") for b in page.query_selector_all("[data-testid=segment]")]
    assert marked == ["0", "1", "0"]
    page.click("[data-testid=segment][data-index='1']")
    assert page.inner_text("[data-testid=asked-because]") == "judge's confidence 0.41"
    page.click("[data-testid=segment][data-index='0']")
    assert page.locator("[data-testid=asked-because]").count() == 0
    assert r.proc.poll() is None and httpx.get(r.url + "api/session").json()["pairs"] == 2
    page.close()
