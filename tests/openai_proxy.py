"""A strict OpenAI chat-completions proxy in front of a real vLLM server, for `label --api openai` tests.

It refuses (400, like the OpenAI API) any request field, message field, content part or response_format field
the OpenAI API does not define, so a vLLM-only field (`structured_outputs`, `guided_choice`, `use_activation`,
`video_url` parts, ...) fails the run. It checks the bearer key. With `logprobs=False` it behaves like a reasoning
model: it refuses `logprobs`, `top_logprobs` and any `temperature` but 1, and never returns logprobs. With
`rate_limit=k` the first k chat requests get 429 with `Retry-After: 0`. Everything else goes to vLLM unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from labeler.client import PROBE_REQUEST_ID
from tests.fake_openai import serve_in_thread, stop_thread_server

# The request fields of POST /v1/chat/completions in the OpenAI API reference.
CHAT_FIELDS = {
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
}
MESSAGE_FIELDS = {"role", "content", "name"}
REASONING_EFFORTS = {"none", "minimal", "low", "medium", "high", "xhigh"}
PART_FIELDS = {"text": {"type", "text"}, "image_url": {"type", "image_url"}}
IMAGE_URL_FIELDS = {"url", "detail"}
RESPONSE_FORMAT_TYPES = {"text", "json_object", "json_schema"}
JSON_SCHEMA_FIELDS = {"name", "description", "schema", "strict"}


def openai_problem(body, logprobs: bool) -> str | None:
    """What the OpenAI API would refuse in this chat request, or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(body) - CHAT_FIELDS)
    if unknown:
        return f"Unrecognized request argument supplied: {', '.join(unknown)}"
    for m in body.get("messages") or []:
        if not isinstance(m, dict) or set(m) - MESSAGE_FIELDS or m.get("role") not in ("system", "user", "developer"):
            return f"Invalid message: {str(m)[:80]}"
        if isinstance(m["content"], list):
            for part in m["content"]:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in PART_FIELDS or set(part) != PART_FIELDS[kind]:
                    return f"Invalid content part: {str(part)[:80]}"
                image = part.get("image_url") or {}
                bad_image = set(image) - IMAGE_URL_FIELDS or not str(image.get("url", "")).startswith("data:")
                if kind == "image_url" and bad_image:
                    return f"Invalid image_url: {str(part)[:80]}"
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or rf.get("type") not in RESPONSE_FORMAT_TYPES or set(rf) - {"type", "json_schema"}:
            return f"Invalid response_format: {str(rf)[:80]}"
        if rf["type"] == "json_schema" and (
            set(rf.get("json_schema") or {}) - JSON_SCHEMA_FIELDS or "name" not in rf["json_schema"]
        ):
            return f"Invalid response_format.json_schema: {str(rf)[:80]}"
    if "top_logprobs" in body and not (body.get("logprobs") is True and 0 <= body["top_logprobs"] <= 20):
        return "top_logprobs must be in 0..20 and needs logprobs: true"
    if "reasoning_effort" in body:
        if logprobs:  # a model with logprobs is not a reasoning model
            return "Unsupported parameter: 'reasoning_effort' is not supported with this model."
        if body["reasoning_effort"] not in REASONING_EFFORTS:
            return f"Invalid value for 'reasoning_effort': {body['reasoning_effort']!r}."
    if not logprobs:
        if "logprobs" in body or "top_logprobs" in body:
            return "Unsupported parameter: 'logprobs' is not supported with this model."
        if body.get("temperature", 1) != 1:
            return "Unsupported value: 'temperature' does not support 0.0 with this model. Only 1 is supported."
    return None


@dataclass
class OpenAIProxy:
    upstream: str
    api_key: str
    logprobs: bool = True
    rate_limit: int = 0
    url: str = ""
    refused: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # chat requests answered, by request id
    images: dict = field(default_factory=dict)  # request id -> the image URLs it carried
    limited: int = 0

    async def chat(self, request: Request):
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"message": "Incorrect API key provided: sk-...xxxx"}}, 401)
        rid = request.headers.get("x-request-id", "")
        body = await request.json()
        problem = openai_problem(body, self.logprobs)
        if problem:
            self.refused.append((rid, problem))
            return JSONResponse({"error": {"message": problem, "type": "invalid_request_error"}}, 400)
        if self.limited < self.rate_limit and rid != PROBE_REQUEST_ID:
            self.limited += 1
            return JSONResponse({"error": {"message": "Rate limit reached"}}, 429, headers={"Retry-After": "0"})
        self.counts[rid] += 1
        self.images[rid] = [
            p["image_url"]["url"]
            for m in body["messages"]
            if isinstance(m["content"], list)
            for p in m["content"]
            if p["type"] == "image_url"
        ]
        async with httpx.AsyncClient(timeout=120) as client:
            r = await client.post(f"{self.upstream}/v1/chat/completions", json=body)
        if r.status_code != 200 or self.logprobs:
            return Response(r.content, r.status_code, media_type="application/json")
        out = r.json()
        for choice in out["choices"]:
            choice["logprobs"] = None
        # As o-series replies: the thought's length is reported (the upstream model did not think: 0), its text not.
        usage = out.setdefault("usage", {})
        usage["completion_tokens_details"] = {"reasoning_tokens": 0, **(usage.get("completion_tokens_details") or {})}
        return JSONResponse(out)

    async def models(self, request: Request):
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"message": "Incorrect API key provided"}}, 401)
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(f"{self.upstream}/v1/models")
        return Response(r.content, r.status_code, media_type="application/json")

    def __enter__(self):
        self._server, self._thread, url = serve_in_thread(self.chat, self.models)
        self.url = url + "/v1"
        return self

    def __exit__(self, *exc):
        stop_thread_server(self._server, self._thread)
