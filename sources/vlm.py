"""Questions to a VLM about a whole clip, for `densedpo sources`: a yes/no filter (constrained like the segment
labels: vLLM's structured_outputs, the probability of yes from the first token's logprobs) and a caption for
clips without one. Same servers, flags and client as `label`; every answer is journaled as it arrives
(kill-safe, resumable: a clip is never asked the same question twice)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from densedpo.errors import DenseDPOError
from densedpo.files import JsonlWriter, read_jsonl

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts" / "sources"
FRAMES_PER_CLIP = 8
FRAME_SIDE = 448


@dataclass(frozen=True)
class ClipPrompt:
    name: str
    kind: str  # yes_no | caption
    instruction: str
    sha256: str
    choices: tuple[str, ...] = ()
    max_tokens: int = 8

    @property
    def key(self) -> str:
        return f"{self.name}@{self.sha256[:8]}"


def load_clip_prompt(name_or_path: str) -> ClipPrompt:
    """A prompt of prompts/sources/ by name (dynamics_v1, caption_v1) or a YAML file of the same shape."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPTS_DIR / f"{name_or_path}.yaml"
        if not path.exists() and (PROMPTS_DIR / f"{name_or_path}_v1.yaml").exists():
            path = PROMPTS_DIR / f"{name_or_path}_v1.yaml"  # `--filter-prompt dynamics`: the current version
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml")))
        raise DenseDPOError(f"prompt {name_or_path!r} not found; use one of {names} or a path to a YAML file.")
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in ("yes_no", "caption") or "instruction" not in data:
        raise DenseDPOError(f"prompt file {path} needs `kind: yes_no|caption` and an `instruction`.")
    if not all(isinstance(c, str) for c in data.get("choices", ())):
        raise DenseDPOError(f"prompt file {path}: quote the choices (YAML reads a bare yes/no as true/false).")
    choices = tuple(data.get("choices", ()))
    if kind == "yes_no" and (len(choices) != 2 or choices[0][:1] == choices[1][:1]):
        raise DenseDPOError(f"prompt file {path}: a yes_no prompt needs two choices with different first letters.")
    return ClipPrompt(
        name=str(data.get("name", path.stem)),
        kind=kind,
        instruction=str(data["instruction"]),
        sha256=hashlib.sha256(raw).hexdigest(),
        choices=choices,
        max_tokens=int(data.get("max_tokens", 8)),
    )


def clip_frames(video: str, fps: float, start_s: float, end_s: float, n: int = FRAMES_PER_CLIP) -> list[str]:
    """n frames spread evenly over the clip's span, as JPEG data URLs (longer side at most FRAME_SIDE)."""
    from densedpo.video import read_frames
    from labeler.frames import encode_frame

    first, last = int(np.ceil(start_s * fps - 1e-6)), max(int(np.ceil(start_s * fps - 1e-6)), int(end_s * fps) - 1)
    idx = sorted({int(round(x)) for x in np.linspace(first, last, n)})
    return [encode_frame(f, FRAME_SIDE, 90) for f in read_frames(video, idx)]


def request_body(model: str, prompt: ClipPrompt, caption: str | None, frames: Sequence[str], api: str = "vllm") -> dict:
    """One chat request: the instruction around the clip's frames; for yes/no constrained to the choices (vLLM's
    structured_outputs, or the OpenAI API's response_format JSON schema with api="openai")."""
    text = prompt.instruction.format(num_frames=len(frames), caption=caption or "(none)").strip()
    intro, _, question = text.partition("\n")
    content = [{"type": "text", "text": intro}, *({"type": "image_url", "image_url": {"url": u}} for u in frames)]
    content.append({"type": "text", "text": question.strip()})
    body = {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0.0}
    if api == "openai":  # only fields the OpenAI chat-completions API defines
        from labeler.judges.chat import answer_schema

        body["max_completion_tokens"] = prompt.max_tokens if prompt.kind == "caption" else 16
        if prompt.kind == "yes_no":
            body.update(response_format=answer_schema(prompt.choices), logprobs=True, top_logprobs=5)
        return body
    if prompt.kind == "yes_no":
        body.update(
            max_tokens=max(len(c) for c in prompt.choices) + 2,
            logprobs=True,
            top_logprobs=5,
            structured_outputs={"choice": list(prompt.choices)},
        )
    else:
        body["max_tokens"] = prompt.max_tokens
    return body


def read_answer(body: dict, prompt: ClipPrompt, api: str = "vllm") -> dict:
    """{"answer", "p"} from a response: for yes/no, the choice and p = the probability of the first choice (yes)."""
    from labeler.parse import choice_probabilities, json_answer, json_choice_probabilities

    try:
        choice = body["choices"][0]
        content = (choice["message"]["content"] or "").strip()
    except (KeyError, IndexError, TypeError):
        return {"answer": None, "p": None, "error": f"no answer in the response: {str(body)[:200]}"}
    if prompt.kind == "caption":
        return {"answer": content or None, "p": None, "error": None if content else "empty caption"}
    tokens = (choice.get("logprobs") or {}).get("content") or [{}]
    if api == "openai":
        answer, error = json_answer(content, prompt.choices)
        if error:
            return {"answer": None, "p": None, "error": error}
        probs = json_choice_probabilities(tokens, content, prompt.choices)
        content = answer
    elif content not in prompt.choices:
        return {"answer": None, "p": None, "error": f"answer {content!r} is not one of {list(prompt.choices)}"}
    else:
        probs = choice_probabilities(tokens[0].get("top_logprobs") or [], prompt.choices)
    p_first = probs[0] if probs else (1.0 if content == prompt.choices[0] else 0.0)
    return {"answer": content, "p": round(float(p_first), 6), "error": None}


@dataclass
class Question:
    source_id: str
    prompt: ClipPrompt
    video: str
    fps: float
    start_s: float
    end_s: float
    caption: str | None
    digest: str = ""  # the clip's content digest (bytes and span)
    model: str = ""  # the model that answers

    @property
    def key(self) -> str:
        """The journal's key: the prompt's content, the clip's id and bytes, the caption shown and the model. An
        answer is reused only for the same question to the same model (another --model, another folder with the
        same ids, or a new caption asks again)."""
        asked = hashlib.sha256(f"{self.model}\n{self.caption}\n{self.digest}".encode()).hexdigest()[:12]
        return f"{self.prompt.key}:{self.source_id}:{asked}"


async def ask_all(
    questions: list[Question], pool, model: str, journal: Path, concurrency: int, on_answer=None, api: str = "vllm"
) -> dict:
    """Every question not yet in the journal, `concurrency` at a time; returns {key: answer} of journal + new."""
    answers = {row["key"]: row for row in read_jsonl(journal)} if journal.exists() else {}
    todo = [q for q in questions if q.key not in answers or answers[q.key].get("error")]
    writer = JsonlWriter(journal)
    gate = asyncio.Semaphore(concurrency)

    async def one(q: Question) -> None:
        async with gate:
            frames = await asyncio.to_thread(clip_frames, q.video, q.fps, q.start_s, q.end_s)
            try:
                path = "/chat/completions" if api == "openai" else "/v1/chat/completions"
                body = await pool.post(path, request_body(model, q.prompt, q.caption, frames, api), q.key)
                row = {"key": q.key, **read_answer(body, q.prompt, api)}
            except Exception as e:  # a request that failed after the client's retries: not journaled, asked again
                answers[q.key] = {"key": q.key, "answer": None, "p": None, "error": f"request failed: {e}"}
                return
            writer.write(row)
            answers[q.key] = row
            if on_answer:
                on_answer()

    try:
        await asyncio.gather(*(one(q) for q in todo))
    finally:
        writer.close()
    return answers
