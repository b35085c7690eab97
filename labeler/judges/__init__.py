"""Judges: what differs between labelers, behind one small interface; the engine stays one for all.

For each segment the engine hands a judge the caption and the sampled frames of both videos (decoded once, as
JPEG data URLs, shared by every judge of a jury). A judge answers per *unit*:

- `chat` (chat.py): a VLM asked which video is better, units "ab" and "ba" (both orders), answers constrained to
  the prompt's choices; on vLLM (`api: vllm`, its `structured_outputs`) or any OpenAI-compatible endpoint
  (`api: openai`, the standard `response_format`), confidence from logprobs or from k samples.
- `score` (score.py): a reward model that scores one video's segment, units "a" and "b" (one request per video
  segment), the higher score wins; through vLLM's pooling runner (`/classify`), or, for a reward model vLLM
  cannot serve (VideoReward), densedpo's own scorer server (scorers/, `--api transformers`), which answers alike.

Each unit's answer is an OrderResult (probabilities of a better, b better, tie, or a score, plus the raw answer),
journaled under (judge id, request id); `combine` turns a segment's answers into a labels row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from densedpo.errors import DenseDPOError
from labeler.parse import OrderResult

KINDS = ("chat", "score")
APIS = ("vllm", "openai", "transformers")  # transformers: a scorer densedpo serves itself (scorers/)
FRAMES_AS = ("images", "video")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")  # OpenAI's values


@dataclass
class JudgeSpec:
    """One judge's configuration: the `label` flags, or one entry of a --judges YAML file."""

    kind: str = "chat"
    api: str = "vllm"
    server: list[str] = field(default_factory=list)
    model: str | None = None
    name: str | None = None  # the judge id in the table; default kind:model[:prompt@sha]
    prompt: str | None = None  # chat: prompt name or YAML (default segment_preference_v1)
    api_key_env: str | None = None  # the environment variable that holds the API key (never the key itself)
    samples: int = 0  # openai without logprobs: k answers per order, the vote share is the probability
    max_rps: float | None = None
    max_tokens: int | None = None  # openai: max_completion_tokens (default 64 with logprobs, unset with samples)
    frames_as: str = "images"
    top_logprobs: int = 20
    tie_margin: float = 0.0  # score: |score_a - score_b| <= margin is a tie
    score_scale: float = 1.0  # score: the difference is divided by this before the sigmoid
    score_weights: list[float] | None = None  # score: weights over the model's outputs (default: the first)
    score_text: str | None = None  # score: the text shown with a video (default SCORE_TEXT)
    price_in: float | None = None  # USD per million prompt tokens, for the cost estimate
    price_out: float | None = None  # USD per million completion tokens
    calibration_temperature: float = 1.0  # eval-labels --fit-calibration: the answers' probabilities are tempered
    min_confidence: float | None = None  # this judge's --min-confidence (eval-labels --fit-calibration: for a target)
    jury_weight: float = 1.0  # a jury member's weight in the jury's mean (eval-labels --fit-calibration fits them)
    reasoning: bool = False  # chat: the judge thinks first, then answers (chat.py: two requests per order on vLLM)
    reasoning_parser: str | None = None  # vLLM's --reasoning-parser for a server densedpo starts (implies reasoning;
    # with --server the server's own flag decides, and this only marks the judge as thinking)
    think_tokens: int = 1024  # the thinking budget: a thought is cut (and closed) after this many tokens
    reasoning_effort: str | None = None  # sent as `reasoning_effort` (hosted reasoning models); implies reasoning

    def check(self, where: str) -> None:
        def bad(flag: str, msg: str) -> DenseDPOError:
            return DenseDPOError(f"{where}: {flag} {msg}")

        if not (isinstance(self.server, list) and all(isinstance(u, str) for u in self.server)):
            raise bad("--server", f"must be a URL or a list of URLs, got {self.server!r}.")
        weights = self.score_weights
        if weights is not None and not (
            isinstance(weights, list) and weights and all(isinstance(w, (int, float)) for w in weights)
        ):
            raise bad("--score-weights", f"must be a list of numbers (YAML: [1, 1, 1]), got {weights!r}.")
        if self.kind not in KINDS:
            raise bad("--judge", f"must be one of {', '.join(KINDS)}, got {self.kind!r}.")
        if self.api not in APIS:
            raise bad("--api", f"must be one of {', '.join(APIS)}, got {self.api!r}.")
        if self.frames_as not in FRAMES_AS:
            raise bad("--frames-as", f"must be one of {', '.join(FRAMES_AS)}, got {self.frames_as!r}.")
        if not self.server and not self.model:
            raise bad(
                "--server/--model",
                "missing: pass --server URL of a running server, or --model to let densedpo start vLLM.",
            )
        if self.api == "openai":
            if self.kind != "chat":
                raise bad("--api openai", "is for chat judges; a scorer is served by vLLM (--judge score).")
            if not self.server or not self.model:
                raise bad(
                    "--api openai",
                    "needs --server https://HOST/v1 and --model NAME (densedpo starts no server for a hosted API).",
                )
            if self.frames_as == "video":
                raise bad("--frames-as video", "is a vLLM extension (video_url); the OpenAI API takes images only.")
        if self.api == "transformers" and (self.kind != "score" or not self.model or self.server):
            raise bad(
                "--api transformers",
                "runs a reward model with transformers (a VideoReward checkpoint): use "
                "it with --judge score and --model FOLDER, without --server.",
            )
        if self.samples < 0 or (self.samples and self.api != "openai"):
            raise bad("--samples", f"must be 0, or k >= 1 with --api openai; got {self.samples}.")
        for name in ("max_rps", "max_tokens", "score_scale", "price_in", "price_out"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise bad(f"--{name.replace('_', '-')}", f"must be positive, got {value}.")
        if self.min_confidence is not None and not (
            isinstance(self.min_confidence, (int, float)) and 0 <= self.min_confidence <= 1
        ):
            raise bad("min_confidence", f"must lie in [0, 1], got {self.min_confidence!r}.")
        if not (isinstance(self.jury_weight, (int, float)) and self.jury_weight > 0):
            raise bad("jury_weight", f"must be a positive number, got {self.jury_weight!r}.")
        if not self.calibration_temperature > 0:
            raise bad("--calibration-temperature", f"must be positive, got {self.calibration_temperature}.")
        self.check_reasoning(bad)
        if not self.tie_margin >= 0:
            raise bad("--tie-margin", f"must be >= 0, got {self.tie_margin}.")
        if self.top_logprobs < 3:
            raise bad("--top-logprobs", "must be at least 3 (one per choice).")
        if self.score_text is not None:
            try:
                self.score_text.format(caption="")
            except (KeyError, IndexError, ValueError) as e:
                msg = f"may hold only {{caption}} as a field (double other braces); {e!r}."
                raise bad("--score-text", msg) from None
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise bad("--api-key-env", f"names {self.api_key_env}, which is not set in the environment: export it.")

    @property
    def thinks(self) -> bool:
        """A reasoning judge: `reasoning: true`, or a reasoning parser or effort named."""
        return bool(self.reasoning or self.reasoning_parser or self.reasoning_effort)

    def check_reasoning(self, bad) -> None:
        if not self.thinks:
            return
        if self.kind != "chat":
            raise bad("--reasoning", "is for chat judges; a scorer does not think.")
        if self.reasoning_parser and self.api != "vllm":
            raise bad("--reasoning-parser", "is a flag of the vLLM server densedpo starts (--api vllm).")
        if self.api == "openai" and not self.samples:
            raise bad(
                "--reasoning",
                "with --api openai needs --samples k: a hosted reasoning model gives no logprobs at its answer; "
                "or serve the model with vLLM (--api vllm), where densedpo reads the answer token after the thought.",
            )
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise bad(
                "--reasoning-effort", f"must be one of {', '.join(REASONING_EFFORTS)}; got {self.reasoning_effort!r}."
            )
        if not (isinstance(self.think_tokens, int) and self.think_tokens >= 1):
            raise bad("--think-tokens", f"must be a positive number of tokens, got {self.think_tokens!r}.")

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


SPEC_KEYS = tuple(f.name for f in dataclasses.fields(JudgeSpec))


def load_jury(path: Path, defaults: JudgeSpec) -> tuple[list[JudgeSpec], str]:
    """Judges from a YAML file: `judges:` (a list of JudgeSpec fields; unset ones come from the flags) and
    optionally `combine: mean|majority`. Returns (specs, rule)."""
    import yaml

    from labeler.aggregate import JURY_RULES

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DenseDPOError(f"--judges {path}: cannot read it ({e}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("judges"), list) or not data["judges"]:
        raise DenseDPOError(f"--judges {path}: expected a mapping with a non-empty list `judges:` (see README).")
    unknown = sorted(set(data) - {"judges", "combine"})
    if unknown:
        raise DenseDPOError(f"--judges {path}: unknown key(s) {', '.join(unknown)}; allowed: judges, combine.")
    rule = data.get("combine", "mean")
    if rule not in JURY_RULES:
        raise DenseDPOError(f"--judges {path}: combine must be one of {', '.join(JURY_RULES)}, got {rule!r}.")
    specs = []
    for i, entry in enumerate(data["judges"]):
        if not isinstance(entry, dict):
            raise DenseDPOError(f"--judges {path}: judges[{i}] must be a mapping of judge settings.")
        extra = sorted(set(entry) - set(SPEC_KEYS))
        if extra:
            raise DenseDPOError(
                f"--judges {path}: judges[{i}] has unknown key(s) {', '.join(extra)}; allowed: {', '.join(SPEC_KEYS)}."
            )
        if isinstance(entry.get("server"), str):
            entry = {**entry, "server": [entry["server"]]}
        spec = dataclasses.replace(defaults, **entry)
        spec.check(f"--judges {path} judges[{i}]")
        specs.append(spec)
    return specs, rule


def model_label(model: str) -> str:
    """A model's name for ids: a local folder by its name (no machine paths in tables), a hub id as it is."""
    return Path(model).name if os.path.isabs(model) or Path(model).exists() else model


def short_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class Judge:
    """The interface. Subclasses set `kind`, `units`, `path` and implement the four methods below."""

    kind: str = ""
    units: tuple[str, ...] = ()
    path: str = ""

    def __init__(self, spec: JudgeSpec):
        self.spec = spec
        self.model: str | None = spec.model
        self.id: str | None = None

    def bind(self, model: str) -> None:
        """Fix the served model (from the server when the spec names none) and with it the judge id."""
        self.model = model
        self.id = self.spec.name or self.default_id(model_label(model))

    def default_id(self, model: str) -> str:
        return f"{self.kind}:{model}"

    def fingerprint(self) -> dict:
        """What changes the requests: a journal is reused only when it matches. Every field of a request body but
        its messages (the prompt's hash and the frame settings stand for those), so max_tokens, top_logprobs, n,
        temperature or a response format of other settings never reuse an old answer."""
        body = self.request(self.units[0], "", [], [])
        return {"id": self.id, "model": self.model, "request": {k: v for k, v in body.items() if k != "messages"}}

    async def ask(self, pool, body: dict, request_id: str, unit: str, journaled=None, save=None) -> OrderResult:
        """One unit's answer: post `body`, read the reply (RequestFailed propagates). `journaled` is the journal's
        entry for this unit and `save` journals an intermediate result (a reasoning judge's thought)."""
        return self.read(await pool.post(self.path, body, request_id=request_id), request_id, unit)

    async def start(self, pool) -> None:
        """Check the server answers as this judge needs (probe); raise DenseDPOError naming the fix."""
        raise NotImplementedError

    def request(self, unit: str, caption: str, frames_a: list[str], frames_b: list[str]) -> dict:
        """The request body for one unit of one segment (frames as data URLs, the same bytes in every unit)."""
        raise NotImplementedError

    def read(self, body: dict, request_id: str, unit: str) -> OrderResult:
        """The endpoint's answer as an OrderResult; anything unexpected is a parse_error, never silence."""
        raise NotImplementedError

    def combine(self, results: dict[str, OrderResult], min_confidence: float) -> dict:
        """The labels row's judgement fields from the segment's answers ({unit: result})."""
        raise NotImplementedError

    def answer_columns(self, results: dict[str, OrderResult]) -> dict:
        """Extra labels columns from the answers (per-order positions, scores)."""
        return {}

    def images_per_request(self, frames_per_video: int) -> int:
        return 2 * frames_per_video

    def usage(self, body: dict) -> tuple[int | None, int | None]:
        u = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(u, dict):
            return None, None
        return u.get("prompt_tokens"), u.get("completion_tokens")


def make_judge(spec: JudgeSpec) -> Judge:
    if spec.kind == "score":
        from labeler.judges.score import ScoreJudge

        return ScoreJudge(spec)
    from labeler.judges.chat import OpenAIChatJudge, ThinkingChatJudge, VllmChatJudge

    if spec.api == "openai":
        return OpenAIChatJudge(spec)
    return ThinkingChatJudge(spec) if spec.thinks else VllmChatJudge(spec)
