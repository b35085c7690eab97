"""Chat judges: a VLM asked which of two videos is better, in both orders, with constrained answers.

`VllmChatJudge` constrains with vLLM's `structured_outputs` (the answer is the bare choice, its first token carries
the probabilities). `OpenAIChatJudge` speaks only the OpenAI chat-completions API (hosted models such as o3,
SGLang, TGI, or vLLM itself): the answer is `{"answer": "<choice>"}` under a `response_format` JSON schema with an
enum; confidence from `logprobs` at the answer's token, or from the vote share of k samples (`n`) where the
endpoint gives no logprobs (reasoning models).
"""

from __future__ import annotations

import asyncio
import dataclasses

from densedpo.errors import DenseDPOError
from labeler.aggregate import aggregate_segment
from labeler.client import RequestFailed
from labeler.judges import Judge, JudgeSpec
from labeler.parse import (
    OrderResult,
    by_preference,
    chosen_position,
    json_answer,
    json_choice_probabilities,
    parse_response,
    position_to_preference,
    vote_shares,
)
from labeler.prompts import DEFAULT_PROMPT, Prompt, load_prompt

PROBE_TEXT = "Ignore everything else and reply with the single word banana."
OPENAI_MAX_TOP_LOGPROBS = 20  # the OpenAI API refuses more


def video_url(image_urls: list[str]) -> str:
    """N JPEG data URLs -> one vLLM video item (`data:video/jpeg;base64,<frame>,<frame>,...`), the same bytes."""
    prefix = "data:image/jpeg;base64,"
    if not all(u.startswith(prefix) for u in image_urls):
        raise ValueError("frames must be JPEG data URLs")
    return "data:video/jpeg;base64," + ",".join(u[len(prefix) :] for u in image_urls)


def whole_patches(urls: list[str]) -> list[str]:
    """A video item's frames cut to an even count: Qwen-VL merges two frames per temporal patch, and for an odd
    count transformers repeats the last frame while vLLM's processor does otherwise (answers differed on exactly
    those segments), so neither is left to guess."""
    return urls[: len(urls) - len(urls) % 2] if len(urls) > 1 else urls


def build_messages(
    prompt: Prompt, caption: str, first: list[str], second: list[str], frames_as: str = "images"
) -> list[dict]:
    """One user message: intro, the first video's frames, the bridge, the second video's frames, the question.

    frames_as="video" sends each video's frames as one video item (Qwen2-VL merges two frames per temporal patch,
    about half the visual tokens; the temporal resolution halves with them).
    """
    intro, between, question = prompt.render(caption, len(first), len(second))

    def media(urls: list[str]) -> list[dict]:
        if frames_as == "video":
            return [{"type": "video_url", "video_url": {"url": video_url(whole_patches(urls))}}]
        return [{"type": "image_url", "image_url": {"url": u}} for u in urls]

    content = [
        {"type": "text", "text": intro},
        *media(first),
        {"type": "text", "text": between},
        *media(second),
        {"type": "text", "text": question},
    ]
    return [{"role": "user", "content": content}]


def build_body(model: str, messages: list[dict], choices: tuple[str, ...], max_tokens: int, top_logprobs: int) -> dict:
    # `structured_outputs` is vLLM's current field; the older `guided_choice` is accepted and silently ignored.
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": top_logprobs,
        "structured_outputs": {"choice": list(choices)},
    }


def answer_schema(choices: tuple[str, ...]) -> dict:
    """OpenAI `response_format`: a strict JSON schema whose only field is an enum of the prompt's choices."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "preference",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"answer": {"type": "string", "enum": list(choices)}},
                "required": ["answer"],
                "additionalProperties": False,
            },
        },
    }


async def resolve_model(pool, spec: JudgeSpec) -> str:
    """The model to ask: --model when the server serves it, else the server's first model."""
    served = await pool.check()
    if spec.model and served and spec.model not in served:
        raise DenseDPOError(
            f"--model {spec.model!r} is not served at {pool.urls[0]}; it serves {', '.join(served[:20])}."
        )
    model = spec.model or (served[0] if served else None)
    if not model:
        raise DenseDPOError(f"the server at {pool.urls[0]} serves no model; pass --model.")
    return model


class VllmChatJudge(Judge):
    kind = "chat"
    units = ("ab", "ba")
    path = "/v1/chat/completions"

    def __init__(self, spec: JudgeSpec):
        super().__init__(spec)
        self.prompt = load_prompt(spec.prompt or DEFAULT_PROMPT)
        self.max_tokens = 16

    def default_id(self, model: str) -> str:
        video = ":video" if self.spec.frames_as == "video" else ""
        return f"chat:{model}:{self.prompt.name}@{self.prompt.sha256[:8]}{video}"

    @property
    def confidence_from(self) -> str:
        """Where a row's confidence comes from (the label summary's judges table shows it)."""
        return f"votes of {self.spec.samples} samples" if self.spec.samples else "logprobs"

    def fingerprint(self) -> dict:
        return {
            **super().fingerprint(),
            "api": self.spec.api,
            "prompt_sha256": self.prompt.sha256,
            "frames_as": self.spec.frames_as,
            "samples": self.spec.samples,
        }

    async def start(self, pool) -> None:
        self.bind(await resolve_model(pool, self.spec))
        self.max_tokens = await self.check_constrained(pool)

    async def check_constrained(self, pool) -> int:
        """Fail loudly unless the server constrains answers to the prompt's choices; return max_tokens to use.

        The probe asks for a word outside the choices: a server that ignores the constraint (an old request field,
        another backend) answers something else, which we refuse to label with.
        """
        choices = self.prompt.choices
        token_ids = await asyncio.gather(*(pool.tokenize(self.model, c) for c in choices))
        if all(token_ids):
            firsts = [t[0] for t in token_ids]
            if len(set(firsts)) != len(firsts):
                raise DenseDPOError(
                    f"the choices {list(choices)} start with the same token for {self.model}; confidence from "
                    "first-token logprobs needs distinct first tokens: edit the prompt's choices."
                )
            max_tokens = max(len(t) for t in token_ids) + 2
        else:
            max_tokens = 16
        body = build_body(
            self.model, [{"role": "user", "content": PROBE_TEXT}], choices, max_tokens, self.spec.top_logprobs
        )
        try:
            resp = await pool.post(self.path, body, request_id="densedpo-probe")
        except RequestFailed as e:
            raise DenseDPOError(f"the probe request to {pool.urls[0]} failed: {e}. Body: {(e.body or '')[:300]}") from e
        result = parse_response(resp, "probe", "ab", choices)
        if result.status != "ok":
            raise DenseDPOError(
                f"the VLM server does not constrain answers to {list(choices)} ({result.error}); densedpo needs "
                "vLLM with `structured_outputs` support (vLLM >= 0.10) and logprobs enabled; for another server "
                "use --api openai."
            )
        return max_tokens

    def messages(self, unit: str, caption: str, frames_a: list[str], frames_b: list[str]) -> list[dict]:
        first, second = (frames_a, frames_b) if unit == "ab" else (frames_b, frames_a)
        return build_messages(self.prompt, caption, first, second, self.spec.frames_as)

    def request(self, unit: str, caption: str, frames_a: list[str], frames_b: list[str]) -> dict:
        msgs = self.messages(unit, caption, frames_a, frames_b)
        return build_body(self.model, msgs, self.prompt.choices, self.max_tokens, self.spec.top_logprobs)

    def read(self, body: dict, request_id: str, unit: str) -> OrderResult:
        r = parse_response(body, request_id, unit, self.prompt.choices)
        prompt_tokens, completion_tokens = self.usage(body)
        return dataclasses.replace(r, judge=self.id, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def combine(self, results: dict[str, OrderResult], min_confidence: float) -> dict:
        return aggregate_segment(results["ab"], results["ba"], min_confidence)

    def answer_columns(self, results: dict[str, OrderResult]) -> dict:
        return {"answer_ab": chosen_position(results["ab"]), "answer_ba": chosen_position(results["ba"])}


class OpenAIChatJudge(VllmChatJudge):
    """Any OpenAI-compatible chat endpoint: only fields the OpenAI API defines are sent."""

    path = "/chat/completions"  # relative to the base URL as given (https://HOST/v1)

    def default_id(self, model: str) -> str:
        samples = f":samples{self.spec.samples}" if self.spec.samples else ""
        return f"chat:{model}:{self.prompt.name}@{self.prompt.sha256[:8]}{samples}"

    def body(self, messages: list[dict]) -> dict:
        body = {"model": self.model, "messages": messages, "response_format": answer_schema(self.prompt.choices)}
        if self.spec.samples:  # at the endpoint's own temperature (reasoning models accept no other)
            body["n"] = self.spec.samples
            if self.spec.max_tokens:
                body["max_completion_tokens"] = self.spec.max_tokens
        else:
            body.update(
                temperature=0.0,
                logprobs=True,
                max_completion_tokens=self.spec.max_tokens or 64,
                top_logprobs=min(self.spec.top_logprobs, OPENAI_MAX_TOP_LOGPROBS),
            )
        return body

    async def start(self, pool) -> None:
        self.bind(await resolve_model(pool, self.spec))
        try:
            resp = await pool.post(
                self.path, self.body([{"role": "user", "content": PROBE_TEXT}]), request_id="densedpo-probe"
            )
        except RequestFailed as e:
            hint = ""
            if not self.spec.samples and "logprob" in (e.body or "").lower():
                hint = " The endpoint refuses logprobs (reasoning models do): pass --samples k."
            raise DenseDPOError(
                f"the probe request to {pool.urls[0]} failed: {e}. Body: {(e.body or '')[:300]}.{hint}"
            ) from e
        result = self.read(resp, "probe", "ab")
        if result.status != "ok":
            hint = ""
            if not self.spec.samples and "logprobs" in (result.error or ""):
                hint = "; pass --samples k to take the confidence from k answers per order instead"
            raise DenseDPOError(
                f"the endpoint {pool.urls[0]} does not answer as densedpo needs ({result.error}){hint}."
            )

    def request(self, unit: str, caption: str, frames_a: list[str], frames_b: list[str]) -> dict:
        return self.body(self.messages(unit, caption, frames_a, frames_b))

    def read(self, body: dict, request_id: str, unit: str) -> OrderResult:
        choices = self.prompt.choices
        prompt_tokens, completion_tokens = self.usage(body)

        def fail(msg: str, raw: str | None = None) -> OrderResult:
            return OrderResult(
                request_id,
                unit,
                "parse_error",
                raw_response=raw,
                error=msg,
                judge=self.id,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )

        try:
            replies = [c["message"]["content"] for c in body["choices"]]
            first = body["choices"][0]
        except (KeyError, IndexError, TypeError):
            return fail("response has no choices[].message.content", str(body)[:2000])
        if self.spec.samples:
            answers = [json_answer(c, choices) for c in replies]
            valid = [a for a, _ in answers if a is not None]
            if not valid:
                return fail(answers[0][1], " | ".join(map(str, replies)))
            probs = vote_shares(valid, choices)
            chosen = top_choice(probs)
            raw = " | ".join(valid)
        else:
            answer, why = json_answer(replies[0], choices)
            if answer is None:
                return fail(why, replies[0])
            tokens = ((first.get("logprobs") or {}).get("content")) or []
            if not tokens:
                return fail("response has no logprobs (the endpoint gives none?)", replies[0])
            probs = json_choice_probabilities(tokens, replies[0], choices)
            if probs is None:
                return fail("no logprobs for the answer's token", replies[0])
            chosen, raw = choices.index(answer), answer
        pref = by_preference(unit, probs)
        return OrderResult(
            request_id,
            unit,
            "ok",
            position_to_preference(unit)[chosen],
            pref["a"],
            pref["b"],
            pref["tie"],
            raw_response=raw,
            judge=self.id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


def top_choice(probs: tuple[float, ...] | list[float]) -> int:
    """Index of the most voted answer (first, second, tie); equal top votes give tie (index 2), so an even number
    of samples split between first and second adds no position bias of its own."""
    top = max(probs)
    winners = [i for i, p in enumerate(probs) if p == top]
    return winners[0] if len(winners) == 1 else 2
