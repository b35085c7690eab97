"""Read one judge response: the constrained answer and renormalised choice probabilities, or a score."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass

# vLLM reports tokens masked by the grammar with a large negative logprob (-9999) rather than dropping them.
_MASKED_LOGPROB = -1000.0


@dataclass(frozen=True)
class OrderResult:
    """The outcome of one request of one judge for one segment, in terms of the pair (a/b), not of positions.

    A chat judge asks per order ("ab": video_a shown first, "ba"); a scorer per video ("a", "b") and fills `score`.
    The journal keys answers by (judge, request_id).
    """

    request_id: str  # pair_id:segment_idx:unit
    order: str  # the unit: "ab" | "ba" (chat) or "a" | "b" (scorer)
    status: str  # ok | parse_error | request_error; `reasoned`: a reasoning judge's thought, its answer not yet asked
    answer: str | None = None  # a | b | tie
    p_a: float | None = None
    p_b: float | None = None
    p_tie: float | None = None
    raw_response: str | None = None
    error: str | None = None
    judge: str | None = None  # the judge id (labels column `judge`)
    score: float | None = None  # a scorer's score of one video segment
    prompt_tokens: int | None = None  # as the endpoint reports usage
    completion_tokens: int | None = None
    reasoning: str | None = None  # a reasoning judge's thought before this answer
    reasoning_tokens: int | None = None  # the thought's length in tokens
    reasoning_cut: bool | None = None  # the thought reached the thinking budget and was closed there

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> OrderResult:
        return cls(**json.loads(line))

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.judge, self.request_id)


REASONED = "reasoned"  # OrderResult.status of a journaled thought whose answer is still to be asked


def position_to_preference(order: str) -> dict[int, str]:
    """Choice index (0 = first shown, 1 = second shown, 2 = tie) -> preference in terms of the pair."""
    if order == "ab":
        return {0: "a", 1: "b", 2: "tie"}
    if order == "ba":
        return {0: "b", 1: "a", 2: "tie"}
    raise ValueError(f"order must be 'ab' or 'ba', got {order!r}")


def chosen_position(result: OrderResult) -> str | None:
    """What one order's answer chose on screen (first, second, tie); None when it has no answer."""
    if result.answer is None:
        return None
    if result.answer == "tie":
        return "tie"
    shown_first = result.order[0]  # "ab": video_a was shown first
    return "first" if result.answer == shown_first else "second"


def choice_probabilities(top_logprobs: list[dict], choices: tuple[str, ...]) -> list[float] | None:
    """Probabilities over `choices` from the first answer token's top_logprobs, renormalised.

    Under a choice grammar, every token allowed at the first position is a prefix of exactly one choice
    (choices start with different characters), so a choice's probability is the sum over its prefix tokens.
    Returns None when no listed token is a prefix of any choice.
    """
    mass = [0.0] * len(choices)
    for entry in top_logprobs:
        token, logprob = entry.get("token", ""), entry.get("logprob")
        if not token or logprob is None or not logprob > _MASKED_LOGPROB:
            continue
        for i, choice in enumerate(choices):
            if choice.startswith(token):
                mass[i] += math.exp(logprob)
                break
    total = sum(mass)
    if total <= 0:
        return None
    return [m / total for m in mass]


def parse_response(body: dict, request_id: str, order: str, choices: tuple[str, ...]) -> OrderResult:
    """Turn a chat-completion body into an OrderResult; anything unexpected is a parse_error row, never silence."""
    raw = json.dumps(body, separators=(",", ":"))
    to_pref = position_to_preference(order)

    def fail(msg: str) -> OrderResult:
        return OrderResult(request_id, order, "parse_error", raw_response=raw, error=msg)

    try:
        choice0 = body["choices"][0]
        content = choice0["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return fail("response has no choices[0].message.content")
    text = (content or "").strip()
    if text not in choices:
        return fail(f"answer {text[:80]!r} is not one of {list(choices)} (is the server constraining answers?)")
    content_logprobs = ((choice0.get("logprobs") or {}).get("content")) or []
    if not content_logprobs or not content_logprobs[0].get("top_logprobs"):
        return fail("response has no logprobs.content[0].top_logprobs; request logprobs with top_logprobs >= 3")
    probs = choice_probabilities(content_logprobs[0]["top_logprobs"], choices)
    if probs is None:
        return fail("no top_logprobs token is a prefix of any choice")
    by_pref = {to_pref[i]: p for i, p in enumerate(probs)}
    return OrderResult(
        request_id,
        order,
        "ok",
        answer=to_pref[choices.index(text)],
        p_a=by_pref["a"],
        p_b=by_pref["b"],
        p_tie=by_pref["tie"],
        raw_response=text,
    )


_ANSWER_VALUE = re.compile(r'"answer"\s*:\s*"')


def json_answer(content: str | None, choices: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(choice, None) from a `{"answer": "<choice>"}` reply (OpenAI `response_format`), or (None, why not)."""
    try:
        value = json.loads(content or "")
    except ValueError:
        return None, f"answer {str(content)[:80]!r} is not JSON (is the endpoint honouring response_format?)"
    answer = value.get("answer") if isinstance(value, dict) else None
    if answer not in choices:
        return None, f"answer {str(content)[:80]!r} is not one of {list(choices)} (is response_format honoured?)"
    return answer, None


def json_choice_probabilities(tokens: list[dict], content: str, choices: tuple[str, ...]) -> list[float] | None:
    """Probabilities over `choices` at the token where the JSON answer's value begins, renormalised.

    The reply is `{"answer":"<choice>"}`; the token covering the value's first character decides the choice. That
    token may begin before the value (e.g. `":"f`): its alternatives must share that prefix, and what follows must
    be a prefix of `<choice>"` (or extend it). Returns None when the tokens do not spell the content.
    """
    m = _ANSWER_VALUE.search(content)
    if m is None or not "".join(t.get("token", "") for t in tokens).startswith(content):  # (+ an end token)
        return None
    start, pos = m.end(), 0
    for entry in tokens:
        end = pos + len(entry.get("token", ""))
        if end > start:
            prefix = content[pos:start]
            mass = [0.0] * len(choices)
            for alt in entry.get("top_logprobs") or []:
                token, logprob = alt.get("token", ""), alt.get("logprob")
                if logprob is None or not logprob > _MASKED_LOGPROB or not token.startswith(prefix):
                    continue
                rest = token[len(prefix) :]
                for i, choice in enumerate(choices):
                    target = choice + '"'
                    if rest and (target.startswith(rest) or rest.startswith(target)):
                        mass[i] += math.exp(logprob)
                        break
            total = sum(mass)
            return [x / total for x in mass] if total > 0 else None
        pos = end
    return None


def vote_shares(answers: list[str], choices: tuple[str, ...]) -> list[float]:
    """Share of `answers` for each choice (the probability of a judge without logprobs, from k samples)."""
    return [sum(a == c for a in answers) / len(answers) for c in choices]


def by_preference(order: str, probs: list[float]) -> dict[str, float]:
    """Choice-index probabilities (first, second, tie) -> {"a", "b", "tie"} for the order they were asked in."""
    to_pref = position_to_preference(order)
    return {to_pref[i]: p for i, p in enumerate(probs)}
