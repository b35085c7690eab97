"""Chat judges: a VLM asked which of two videos is better, in both orders, with constrained answers.

`VllmChatJudge` constrains with vLLM's `structured_outputs` (the answer is the bare choice, its first token carries
the probabilities). `OpenAIChatJudge` speaks only the OpenAI chat-completions API (hosted models such as o3,
SGLang, TGI, or vLLM itself): the answer is `{"answer": "<choice>"}` under a `response_format` JSON schema with an
enum; confidence from `logprobs` at the answer's token, or from the vote share of k samples (`n`) where the
endpoint gives no logprobs (reasoning models).

`ThinkingChatJudge` (vLLM, `reasoning: true`) lets the model think before it answers, in two requests per order:
the thought (unconstrained, at most `think_tokens`), then the same conversation with the assistant turn prefilled
up to the answer (`<think>` thought `</think>`, `continue_final_message`), whose constrained first answer token
gives the probabilities as for any chat judge. Words of the thought never count as the answer; the second
request's prompt repeats the first's, so vLLM's prefix cache computes little of it again.
"""

from __future__ import annotations

import asyncio
import dataclasses

from densedpo.errors import DenseDPOError
from labeler.aggregate import aggregate_segment
from labeler.client import PROBE_REQUEST_ID, RequestFailed
from labeler.judges import Judge, JudgeSpec
from labeler.parse import (
    REASONED,
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
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"  # DeepSeek-R1 / Qwen3 thinking markers
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
            resp = await pool.post(self.path, self.probe_body(body), request_id=PROBE_REQUEST_ID)
        except RequestFailed as e:
            raise DenseDPOError(f"the probe request to {pool.urls[0]} failed: {e}. Body: {(e.body or '')[:300]}") from e
        result = parse_response(self.answer_reply(resp), "probe", "ab", choices)
        if result.status != "ok":
            raise DenseDPOError(
                f"the VLM server does not constrain answers to {list(choices)} ({result.error}); densedpo needs "
                "vLLM with `structured_outputs` support (vLLM >= 0.10) and logprobs enabled; for another server "
                "use --api openai; a thinking model (its template opens <think>) needs --reasoning."
            )
        return max_tokens

    def probe_body(self, body: dict) -> dict:
        return body

    def answer_reply(self, reply: dict) -> dict:
        return reply

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
        effort = f":effort-{self.spec.reasoning_effort}" if self.spec.reasoning_effort else ""
        return f"chat:{model}:{self.prompt.name}@{self.prompt.sha256[:8]}{samples}{effort}"

    def body(self, messages: list[dict]) -> dict:
        body = {"model": self.model, "messages": messages, "response_format": answer_schema(self.prompt.choices)}
        if self.spec.reasoning_effort:
            body["reasoning_effort"] = self.spec.reasoning_effort
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
                self.path, self.body([{"role": "user", "content": PROBE_TEXT}]), request_id=PROBE_REQUEST_ID
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
            **hosted_reasoning(body) if self.spec.thinks else {},
        )


def hosted_reasoning(body: dict) -> dict:
    """What an OpenAI-compatible reply tells of the thought: its text where the endpoint returns it (vLLM, DeepSeek:
    `reasoning` / `reasoning_content` of the first choice; OpenAI's o-series returns none) and its length in tokens
    (`usage.completion_tokens_details.reasoning_tokens`, all samples together)."""
    text = reasoning_field((body.get("choices") or [{}])[0].get("message") or {})
    details = (body.get("usage") or {}).get("completion_tokens_details") or {}
    tokens = details.get("reasoning_tokens")
    return {
        "reasoning": text if text is not None else "",
        "reasoning_tokens": tokens if isinstance(tokens, int) else None,
    }


def top_choice(probs: tuple[float, ...] | list[float]) -> int:
    """Index of the most voted answer (first, second, tie); equal top votes give tie (index 2), so an even number
    of samples split between first and second adds no position bias of its own."""
    top = max(probs)
    winners = [i for i, p in enumerate(probs) if p == top]
    return winners[0] if len(winners) == 1 else 2


def reasoning_field(message: dict) -> str | None:
    """A reply message's thought as a reasoning parser files it: `reasoning` (vLLM), `reasoning_content` (older vLLM,
    DeepSeek's API); None when neither is there."""
    return next((message[k] for k in ("reasoning", "reasoning_content") if isinstance(message.get(k), str)), None)


def thought_of(message: dict) -> str | None:
    """The thought of a reply: its reasoning field (a server with --reasoning-parser), else the content up to
    `</think>` (a server without a parser); None if neither."""
    field = reasoning_field(message)
    if field is not None:
        return field.strip()
    content = message.get("content")
    if not isinstance(content, str):
        return None
    head, opened, rest = content.partition(THINK_OPEN)
    return (rest if opened else head).partition(THINK_CLOSE)[0].strip()


def prefilled(messages: list[dict], thought: str) -> list[dict]:
    """The conversation with the assistant turn written up to the answer: the thought, closed."""
    return [*messages, {"role": "assistant", "content": f"{THINK_OPEN}\n{thought}\n{THINK_CLOSE}\n\n"}]


def answer_after_thought(body: dict) -> dict:
    """A prefilled answer's reply as a plain chat judge reads it: after the prompt's `</think>` a reasoning parser
    still files the (constrained) answer under `reasoning`, since the output holds no end marker; it moves to
    `content`."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return body
    if message.get("content") is None and isinstance(message.get("reasoning"), str):
        choice = {**body["choices"][0], "message": {**message, "content": message["reasoning"], "reasoning": None}}
        return {**body, "choices": [choice, *body["choices"][1:]]}
    return body


class ThinkingChatJudge(VllmChatJudge):
    """A vLLM chat judge that thinks first (see the module docstring): per order, the thought, then the answer."""

    @property
    def confidence_from(self) -> str:
        return "logprobs at the answer after the thought"

    def default_id(self, model: str) -> str:
        return super().default_id(model) + ":think"

    def fingerprint(self) -> dict:
        settings = {"think_tokens": self.spec.think_tokens, "reasoning_effort": self.spec.reasoning_effort}
        return {**super().fingerprint(), "reasoning": settings}

    def probe_body(self, body: dict) -> dict:
        """The probe asks after an empty, closed thought: a thinking template opens a thought at the generation
        prompt, and vLLM constrains the answer only once the prompt has closed it."""
        return self.answer_body(body, "")

    def answer_reply(self, reply: dict) -> dict:
        return answer_after_thought(reply)

    def think_body(self, body: dict) -> dict:
        """The thought's request: the question, unconstrained, greedy, at most think_tokens."""
        think = {"model": body["model"], "messages": body["messages"], "max_tokens": self.spec.think_tokens}
        think.update(temperature=0.0)
        if self.spec.reasoning_effort:
            think["reasoning_effort"] = self.spec.reasoning_effort
        return think

    def answer_body(self, body: dict, thought: str) -> dict:
        """The answer's request: the judge's usual constrained body, the assistant turn prefilled with the thought."""
        messages = prefilled(body["messages"], thought)
        return {**body, "messages": messages, "continue_final_message": True, "add_generation_prompt": False}

    def read_thought(self, body: dict, request_id: str, unit: str) -> OrderResult:
        prompt_tokens, completion_tokens = self.usage(body)
        try:
            choice = body["choices"][0]
            thought = thought_of(choice["message"])
        except (KeyError, IndexError, TypeError):
            choice, thought = {}, None
        if thought is None:
            raw = str(body)[:2000]
            error = "the thought's reply has no choices[0].message with reasoning or content"
            return OrderResult(request_id, unit, "parse_error", raw_response=raw, error=error, judge=self.id)
        return OrderResult(
            request_id,
            unit,
            REASONED,
            judge=self.id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            reasoning=thought,
            reasoning_tokens=completion_tokens,
            reasoning_cut=choice.get("finish_reason") == "length",
        )

    async def ask(self, pool, body: dict, request_id: str, unit: str, journaled=None, save=None) -> OrderResult:
        """The thought (unless `journaled` holds it: a resumed run asks only the answer), saved as soon as it is
        in, then the answer after it; the result carries both requests' tokens."""
        thought = journaled if journaled is not None and journaled.status == REASONED else None
        if thought is None:
            reply = await pool.post(self.path, self.think_body(body), request_id=f"{request_id}:think")
            thought = self.read_thought(reply, request_id, unit)
            if thought.status != REASONED:
                return thought
            if save is not None:
                save(thought)
        reply = await pool.post(self.path, self.answer_body(body, thought.reasoning), request_id=request_id)
        answer = self.read(self.answer_reply(reply), request_id, unit)
        return dataclasses.replace(
            answer,
            reasoning=thought.reasoning,
            reasoning_tokens=thought.reasoning_tokens,
            reasoning_cut=thought.reasoning_cut,
            prompt_tokens=_add(thought.prompt_tokens, answer.prompt_tokens),
            completion_tokens=_add(thought.completion_tokens, answer.completion_tokens),
        )

    def answer_columns(self, results: dict[str, OrderResult]) -> dict:
        return {**super().answer_columns(results), **{f"reasoning_{u}": results[u].reasoning for u in self.units}}


def _add(x: int | None, y: int | None) -> int | None:
    return None if x is None and y is None else (x or 0) + (y or 0)
