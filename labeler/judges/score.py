"""Scorer judges: a reward model scores each video's segment; the higher score is preferred.

One request per video segment (units "a" and "b"): no order is shown, so there is nothing to swap, and each
video segment is sent once instead of twice (half the images of a chat judge).
Served by vLLM's pooling runner (`vllm serve MODEL --runner pooling --convert classify`): `POST /classify` with chat
`messages` and `use_activation: false` answers the raw outputs `{"data": [{"probs": [...]}]}`; the score is
`score_weights · outputs` (default: the first output). VideoReward, which vLLM cannot serve, runs in densedpo's own
scorer server (scorers/server.py, `--api transformers`), which answers the same `/classify` shape.
"""

from __future__ import annotations

import json
import math

from densedpo.errors import DenseDPOError
from labeler.aggregate import aggregate_scores
from labeler.client import PROBE_REQUEST_ID, RequestFailed
from labeler.judges import Judge, JudgeSpec, short_sha
from labeler.judges.chat import resolve_model
from labeler.parse import OrderResult

SCORE_TEXT = "A video generated for the caption: {caption}"
VIDEOREWARD_TEXT = (  # the three reward tokens VideoReward reads (scorers/videoreward.py); not its training prompt
    'Rate this generated video for the text prompt "{caption}" from 0 to 10.\n'
    "Visual quality: <|VQ_reward|>\nMotion quality: <|MQ_reward|>\nText alignment: <|TA_reward|>"
)
POOLING_ARGS = ("--runner", "pooling", "--convert", "classify")


def score_messages(text: str, caption: str, frames: list[str]) -> list[dict]:
    content = [{"type": "text", "text": text.format(caption=caption)}]
    content += [{"type": "image_url", "image_url": {"url": u}} for u in frames]
    return [{"role": "user", "content": content}]


def weighted_score(outputs: list[float], weights: list[float] | None) -> float:
    """The score of one video segment from the model's raw outputs (default: the first output)."""
    if weights is None:
        return float(outputs[0])
    if len(weights) != len(outputs):
        raise ValueError(f"{len(weights)} score weights for {len(outputs)} model outputs")
    return float(sum(w * o for w, o in zip(weights, outputs)))


class ScoreJudge(Judge):
    kind = "score"
    units = ("a", "b")
    path = "/classify"

    def __init__(self, spec: JudgeSpec):
        super().__init__(spec)
        self.text = spec.score_text or (VIDEOREWARD_TEXT if spec.api == "transformers" else SCORE_TEXT)

    confidence_from = "score difference (Rao-Kupper)"

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "text_sha": short_sha(self.text), "score_weights": self.spec.score_weights}

    async def start(self, pool) -> None:
        self.bind(await resolve_model(pool, self.spec))
        body = {"model": self.model, "messages": score_messages(self.text, "a probe", []), "use_activation": False}
        try:
            resp = await pool.post(self.path, body, request_id=PROBE_REQUEST_ID)
        except RequestFailed as e:
            raise DenseDPOError(
                f"the scorer at {pool.urls[0]} did not answer POST /classify ({e}); serve the reward model with "
                f"`vllm serve MODEL {' '.join(POOLING_ARGS)}`. Body: {(e.body or '')[:300]}"
            ) from e
        outputs = _outputs(resp)
        if outputs is None:
            raise DenseDPOError(
                f"the scorer at {pool.urls[0]} answered /classify without data[0].probs: {json.dumps(resp)[:300]}"
            )
        weights = self.spec.score_weights
        if weights is not None and len(weights) != len(outputs):
            raise DenseDPOError(
                f"--score-weights has {len(weights)} weights but {self.model} has {len(outputs)} "
                "outputs: give one weight per output."
            )

    def request(self, unit: str, caption: str, frames_a: list[str], frames_b: list[str]) -> dict:
        frames = frames_a if unit == "a" else frames_b
        return {"model": self.model, "messages": score_messages(self.text, caption, frames), "use_activation": False}

    def read(self, body: dict, request_id: str, unit: str) -> OrderResult:
        prompt_tokens, _ = self.usage(body)
        outputs = _outputs(body)
        if outputs is None:
            return OrderResult(
                request_id,
                unit,
                "parse_error",
                raw_response=json.dumps(body)[:2000],
                error="response has no data[0].probs",
                judge=self.id,
            )
        score = weighted_score(outputs, self.spec.score_weights)
        if not math.isfinite(score):
            return OrderResult(
                request_id,
                unit,
                "parse_error",
                raw_response=json.dumps(outputs),
                error=f"score {score} is not finite",
                judge=self.id,
            )
        return OrderResult(
            request_id,
            unit,
            "ok",
            raw_response=json.dumps(outputs),
            judge=self.id,
            score=score,
            prompt_tokens=prompt_tokens,
        )

    def combine(self, results: dict[str, OrderResult], min_confidence: float) -> dict:
        return aggregate_scores(results["a"], results["b"], self.spec.tie_margin, self.spec.score_scale, min_confidence)

    def answer_columns(self, results: dict[str, OrderResult]) -> dict:
        return {"score_a": results["a"].score, "score_b": results["b"].score}

    def images_per_request(self, frames_per_video: int) -> int:
        return frames_per_video


def _outputs(body: dict) -> list[float] | None:
    try:
        outputs = body["data"][0]["probs"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(x, (int, float)) for x in outputs):
        return None
    return [float(x) for x in outputs]
