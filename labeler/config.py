"""`densedpo label`'s settings: one typed config (flags or a run file), the judges it names, the jury's id, cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from densedpo.config import one_shot
from densedpo.errors import DenseDPOError
from densedpo.tables import JURY as JURY  # the judge id of a jury's combined rows, re-exported
from labeler.aggregate import JURY_RULES
from labeler.judges import JudgeSpec, load_jury
from labeler.prompts import DEFAULT_PROMPT


@dataclass
class LabelConfig:
    pairs: Path
    out: Path = Path("labels.parquet")
    server: list[str] = field(default_factory=list)
    model: str | None = None
    segment_seconds: float = 1.0
    sample_fps: float = 8.0
    min_confidence: float = 0.5
    concurrency: int = 32
    prompt: str = DEFAULT_PROMPT
    max_side: int = 448
    jpeg_quality: int = 90
    trim_to_shortest: bool = False
    max_failure_rate: float = 0.05
    max_retries: int = 4
    retry_backoff_s: float = 0.5
    request_timeout_s: float = 120.0
    top_logprobs: int = 20
    max_model_len: int | None = None
    restart: bool = one_shot(False)
    retry_parse_errors: bool = one_shot(False)
    # the judge (labeler/judges/): these flags make one judge; --judges YAML makes a jury of several
    judge: str = "chat"  # chat | score
    api: str = "vllm"  # vllm | openai | transformers (a scorer densedpo serves itself, scorers/)
    api_key_env: str | None = None
    samples: int = 0
    max_rps: float | None = None
    frames_as: str = "images"
    tie_margin: float = 0.0
    score_scale: float = 1.0
    score_weights: list[float] | None = None
    score_text: str | None = None
    price_in: float | None = None
    price_out: float | None = None
    calibration_temperature: float = 1.0  # eval-labels --fit-calibration fits it on people's labels
    reasoning: bool = False  # the judge thinks before it answers (labeler/judges/chat.py)
    reasoning_parser: str | None = None
    think_tokens: int = 1024
    reasoning_effort: str | None = None
    judges: Path | None = None
    combine: str | None = None  # a jury's rule (mean | majority); default: the YAML's, else mean

    def check(self) -> None:
        self.judge_specs()
        for name in ("segment_seconds", "sample_fps", "max_side", "concurrency", "top_logprobs"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):  # NaN fails `> 0`; inf would never end a segment
                raise DenseDPOError(f"--{name.replace('_', '-')} must be a positive finite number, got {value}.")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise DenseDPOError(f"--min-confidence must lie in [0, 1], got {self.min_confidence}.")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise DenseDPOError(f"--max-failure-rate must lie in [0, 1], got {self.max_failure_rate}.")
        if self.top_logprobs < 3:
            raise DenseDPOError("--top-logprobs must be at least 3 (one per choice).")
        if self.combine is not None and self.combine not in JURY_RULES:
            raise DenseDPOError(f"--combine must be one of {', '.join(JURY_RULES)}, got {self.combine!r}.")

    def judge_spec(self) -> JudgeSpec:
        """The one judge the flags describe."""
        return JudgeSpec(
            kind=self.judge,
            api=self.api,
            server=list(self.server),
            model=self.model,
            prompt=self.prompt,
            api_key_env=self.api_key_env,
            samples=self.samples,
            max_rps=self.max_rps,
            frames_as=self.frames_as,
            top_logprobs=self.top_logprobs,
            tie_margin=self.tie_margin,
            score_scale=self.score_scale,
            score_weights=self.score_weights,
            score_text=self.score_text,
            price_in=self.price_in,
            price_out=self.price_out,
            calibration_temperature=self.calibration_temperature,
            reasoning=self.reasoning,
            reasoning_parser=self.reasoning_parser,
            think_tokens=self.think_tokens,
            reasoning_effort=self.reasoning_effort,
        )

    def judge_specs(self) -> tuple[list[JudgeSpec], str]:
        """(the judges, the jury's rule): one judge from the flags, or the --judges file's (flags as defaults)."""
        if self.judges is None:
            spec = self.judge_spec()
            spec.check("label")
            return [spec], self.combine or "mean"
        specs, rule = load_jury(self.judges, self.judge_spec())
        return specs, self.combine or rule


def cost_usd(prompt_tokens: float, completion_tokens: float, spec: JudgeSpec) -> float:
    """Estimated cost at the spec's prices (USD per million tokens)."""
    return (prompt_tokens * (spec.price_in or 0) + completion_tokens * (spec.price_out or 0)) / 1e6


JUDGE_DEFAULTS_FILE = "densedpo-judge.yaml"  # in a judge's model folder: the request layout it was trained on
JUDGE_LAYOUT_KEYS = ("prompt", "sample_fps", "max_side", "segment_seconds", "frames_as", "reasoning_parser")


def judge_folder_defaults(model: str | None) -> dict:
    """The label settings a judge's model folder asks for (its `densedpo-judge.yaml`: e.g. the tiny trained judge
    reads its own short prompt at 4 frames per second); {} for any other model."""
    import yaml

    path = Path(model) / JUDGE_DEFAULTS_FILE if model else None
    if path is None or not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or set(data) - set(JUDGE_LAYOUT_KEYS):
        raise DenseDPOError(f"{path} may set only {', '.join(JUDGE_LAYOUT_KEYS)}; it holds {data!r}.")
    return data
