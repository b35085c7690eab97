"""Versioned prompt files (prompts/*.yaml): load, render, hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from densedpo.errors import DenseDPOError

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_PROMPT = "segment_preference_v1"
_KEYS = {"name", "choices", "intro", "between", "question"}


@dataclass(frozen=True)
class Prompt:
    name: str
    choices: tuple[str, str, str]  # (first is better, second is better, tie)
    intro: str
    between: str
    question: str
    sha256: str

    def render(self, caption: str, num_frames_first: int, num_frames_second: int) -> tuple[str, str, str]:
        """The three text parts around the two runs of frames."""
        return (
            self.intro.format(caption=caption, num_frames=num_frames_first).strip(),
            self.between.format(caption=caption, num_frames=num_frames_second).strip(),
            self.question.format(caption=caption).strip(),
        )


def available_prompts() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def load_prompt(name_or_path: str = DEFAULT_PROMPT) -> Prompt:
    """Load a prompt by name (a file in prompts/) or by path to a YAML file of the same shape."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise DenseDPOError(
            f"--prompt {name_or_path!r} not found; use one of {', '.join(available_prompts())} or a path to a "
            "YAML file."
        )
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    if not isinstance(data, dict) or set(data) != _KEYS:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DenseDPOError(f"prompt file {path} must have exactly the keys {sorted(_KEYS)}; it has {got}.")
    choices = tuple(str(c) for c in data["choices"])
    if len(choices) != 3 or len({c[:1] for c in choices}) != 3:
        raise DenseDPOError(
            f"prompt file {path}: choices must be three answers (first better, second better, tie) that start "
            f"with different characters; got {list(choices)}."
        )
    return Prompt(
        name=str(data["name"]),
        choices=choices,  # type: ignore[arg-type]
        intro=str(data["intro"]),
        between=str(data["between"]),
        question=str(data["question"]),
        sha256=hashlib.sha256(raw).hexdigest(),
    )
