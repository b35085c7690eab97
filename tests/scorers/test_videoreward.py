"""VideoReward's loading code with a tiny random model of its class, in its checkpoint layout; and the scorer
server it runs in, through `densedpo label --judge score --api transformers`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from labeler.config import LabelConfig
from labeler.frames import prepare_pair
from labeler.journal import journal_path_for, read_journal
from labeler.judges.score import VIDEOREWARD_TEXT
from labeler.plan import plan_pairs
from labeler.segments import sample_frame_indices
from scorers.server import parse_request
from scorers.videoreward import REWARD_TOKENS, VideoReward, convert_state_dict, decode_data_url, make_tiny_videoreward
from tests.conftest import run_cli

TEXT = "Rate it. Visual: <|VQ_reward|> Motion: <|MQ_reward|> Alignment: <|TA_reward|>"


def frames(seed: int, n: int = 4) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).integers(0, 255, (n, 56, 56, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_videoreward(tmp_path_factory):
    return make_tiny_videoreward(tmp_path_factory.mktemp("videoreward"), seed=1)


def test_zero_head_gives_the_normalisation_alone(tmp_path):
    norm = {"VQ_mean": 1.0, "VQ_std": 2.0, "MQ_mean": -0.5, "MQ_std": 0.5, "TA_mean": 0.0, "TA_std": 4.0}
    model = VideoReward(make_tiny_videoreward(tmp_path, zero_head=True, norm=norm))
    scores, tokens = model.score(TEXT, frames(0))
    assert scores == pytest.approx([(0 - 1.0) / 2.0, (0 + 0.5) / 0.5, 0.0]) and tokens > 10


def test_checkpoint_in_videoaligns_layout_loads_every_weight(tiny_videoreward):
    import torch

    saved = torch.load(tiny_videoreward / "checkpoint-1" / "model.pth", weights_only=True)
    assert any(k.startswith("visual.") for k in saved) and any(k.startswith("model.layers.") for k in saved)
    model = VideoReward(tiny_videoreward)  # strict: a missing or unexpected key is an error
    loaded = model.model.state_dict()
    for key, value in convert_state_dict(saved).items():
        assert torch.equal(loaded[key].cpu(), value), key
    assert model.processor.tokenizer.convert_tokens_to_ids(list(REWARD_TOKENS)) == model.model.special_token_ids
    a, _ = model.score(TEXT, frames(1))
    b, _ = model.score(TEXT, frames(2))
    assert a == model.score(TEXT, frames(1))[0] and a != b  # deterministic, and the video matters
    # The three rewards are rm_head's three outputs, each at its own token (VideoAlign's diagonal).
    raw = [(s * model.norm[f"{d}_std"]) + model.norm[f"{d}_mean"] for s, d in zip(a, ("VQ", "MQ", "TA"))]
    batch = model.processor(
        text=[
            model.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": TEXT}]}],
                tokenize=False,
                add_generation_prompt=True,
            )
        ],
        videos=[np.stack(frames(1))],
        return_tensors="pt",
    )
    ids = batch["input_ids"][0].tolist()
    positions = [ids.index(t) for t in model.model.special_token_ids]
    with torch.no_grad():
        hidden = model.model.model(**batch).last_hidden_state[0]
        expected = [float(hidden[p] @ model.model.rm_head.weight[i]) for i, p in enumerate(positions)]
    assert raw == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_a_prompt_without_the_reward_tokens_is_refused(tiny_videoreward):
    with pytest.raises(ValueError, match="three reward tokens"):
        VideoReward(tiny_videoreward).score("no tokens here", frames(0))


def test_server_request_contract():
    url = "data:image/jpeg;base64,AAAA"
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ],
        "use_activation": False,
    }
    assert parse_request(body, "m") == ("hi", [url])
    assert "does not exist" in parse_request({**body, "model": "other"}, "m")
    assert "use_activation" in parse_request({**body, "use_activation": True}, "m")
    bad = {**body, "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}]}]}
    assert "bad content part" in parse_request(bad, "m")


@pytest.mark.slow  # runs the stage's CLI in fresh interpreters (torch imports) or trains
def test_label_with_videoreward_in_its_own_process(tiny_videoreward, synthetic, tmp_path):
    pairs, _ = synthetic
    out = tmp_path / "vr.parquet"
    r = run_cli(
        "label",
        "--pairs",
        pairs,
        "--out",
        out,
        "--judge",
        "score",
        "--api",
        "transformers",
        "--model",
        tiny_videoreward,
        "--score-weights",
        "1,1,1",
        "--min-confidence",
        "0",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out)
    assert len(df) == 9 and (df["judge"] == f"score:{tiny_videoreward.name}").all() and (df["status"] == "ok").all()
    _, results = read_journal(journal_path_for(out))
    assert len(results) == 18  # one request per video segment
    # The served score is the model's score of the segment's frames, summed (Overall = VQ + MQ + TA).
    cfg = LabelConfig(pairs=pairs, server=["-"])
    plan = plan_pairs(cfg)[1]
    seg = plan.segments[1]
    urls = prepare_pair(plan, [seg], cfg)
    shown = [decode_data_url(urls["a"][k]) for k in sample_frame_indices(seg, plan.info.fps, cfg.sample_fps)]
    direct, _ = VideoReward(tiny_videoreward).score(VIDEOREWARD_TEXT.format(caption=plan.prompt), shown)
    row = df[(df["pair_id"] == plan.pair_id) & (df["segment_idx"] == seg.segment_idx)].iloc[0]
    assert row["score_a"] == pytest.approx(sum(direct), rel=1e-5)
    served = json.loads(results[(row["judge"], f"{plan.pair_id}:{seg.segment_idx}:a")].raw_response)
    assert served == pytest.approx(direct, rel=1e-5)
