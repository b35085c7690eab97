"""An in-process fake OpenAI-compatible server, only for faults a real vLLM cannot produce on demand:
429/5xx bursts, malformed bodies, unconstrained answers, slow responses, requests held until the test
acts (`Hold`, also used by a pass-through gate to real vLLM). It counts requests per request id.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from labeler.client import PROBE_REQUEST_ID
from labeler.servers import free_port


def completion(content: str, top: dict[str, float] | None = None) -> dict:
    top = top or {"f": -0.1, "s": -2.5, "t": -3.0}
    entries = [{"token": t, "logprob": lp} for t, lp in top.items()]
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": {"content": [{"token": content[:1], "logprob": -0.1, "top_logprobs": entries}]},
            }
        ],
    }


def position_answer(request_id: str) -> dict:
    """Consistent judge: always prefers video_a, whichever position it is shown in."""
    if request_id.endswith(":ab"):
        return completion("first", {"f": -0.05, "s": -3.5, "t": -4.0})
    return completion("second", {"s": -0.05, "f": -3.5, "t": -4.0})


MODEL = "fake-vlm"
MAX_IMAGES = 40  # as `--limit-mm-per-prompt '{"image": 40}'`
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs


def check_request(body) -> str | None:
    """What vLLM would refuse in a chat request (its 400/404), or None. Strict on every field densedpo sends."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if body.get("model") != MODEL:
        return f"The model `{body.get('model')}` does not exist."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    images = 0
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            return f"bad message {str(m)[:80]}"
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return "content must be a string or a list of parts"
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            url = (part.get("image_url") or {}).get("url", "") if kind == "image_url" else ""
            if not url.startswith("data:image/jpeg;base64,") or len(url) < 40:
                return f"bad content part {str(part)[:80]}"
            images += 1
    if images > MAX_IMAGES:
        return f"At most {MAX_IMAGES} image(s) may be provided in one prompt."
    if not (isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 0):
        return "max_tokens must be a positive integer"
    if body.get("logprobs") is not True or not (
        isinstance(body.get("top_logprobs"), int) and 0 < body["top_logprobs"] <= MAX_LOGPROBS
    ):
        return f"logprobs must be true and top_logprobs in 1..{MAX_LOGPROBS}"
    choice = (body.get("structured_outputs") or {}).get("choice")
    if not (isinstance(choice, list) and choice and all(isinstance(c, str) for c in choice)):
        return "structured_outputs.choice must be a list of strings (densedpo's answers are constrained)"
    if "guided_choice" in body:
        return "guided_choice is a legacy field that current vLLM ignores; densedpo must not rely on it"
    return None


def serve_in_thread(chat, models) -> tuple[uvicorn.Server, threading.Thread, str]:
    """A uvicorn server for the two routes on a free loopback port, in a daemon thread: (server, thread, url)."""
    return serve_in_thread_app(
        Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
    )


def serve_in_thread_app(app: Starlette) -> tuple[uvicorn.Server, threading.Thread, str]:
    """`app` on a free loopback port, in a daemon thread: (server, thread, url)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def stop_thread_server(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=5)


class Hold:
    """A server's segment requests past the next n wait until `release()` (`hold_after(n)`): a run held there cannot
    finish before the test has acted on it (killed, cancelled, raced it), however fast or loaded the machine is.
    The order of events is the test's, not the clock's."""

    def __init__(self):
        self.admit, self.passed, self.held = math.inf, 0, 0
        self.open = threading.Event()
        self.open.set()

    def hold_after(self, n: int) -> None:
        self.admit, self.held = self.passed + n, 0
        self.open.clear()

    def release(self) -> None:
        self.admit = math.inf
        self.open.set()

    async def wait_turn(self, request_id: str) -> None:
        if not request_id or request_id == PROBE_REQUEST_ID:  # model lists, tokenizing, the probe: never held
            return
        if self.passed >= self.admit:
            self.held += 1
            while not self.open.is_set():
                await asyncio.sleep(0.02)
        self.passed += 1


@dataclass
class FakeServer:
    """`script(request_id, n_seen)` returns (status, body) for a chat request; n_seen counts earlier tries.

    Every request is checked as strictly as vLLM would (`check_request`): a body vLLM refuses gets its 400 here,
    and `refused` collects them (tests assert it stays empty). `bodies` keeps the last body per request id.
    """

    script: object = None
    delay_s: float | object = 0.0  # seconds, or a function of the request id
    counts: Counter = field(default_factory=Counter)
    url: str = ""
    bodies: dict = field(default_factory=dict)
    refused: list = field(default_factory=list)
    arrivals: dict = field(default_factory=dict)  # request id -> monotonic arrival time of each try
    hold: Hold = field(default_factory=Hold)

    def __post_init__(self):
        self.script = self.script or (lambda rid, n: (200, position_answer(rid)))

    async def chat(self, request: Request):
        rid = request.headers.get("x-request-id", "")
        try:
            body = await request.json()
        except ValueError:
            body = None
        problem = check_request(body)
        if problem is not None:
            self.refused.append((rid, problem))
            status = 404 if "does not exist" in problem else 400
            return JSONResponse({"error": {"message": problem, "type": "BadRequestError", "code": status}}, status)
        self.bodies[rid] = body
        self.arrivals.setdefault(rid, []).append(time.monotonic())
        n = self.counts[rid]
        self.counts[rid] += 1
        await self.hold.wait_turn(rid)
        delay = self.delay_s(rid) if callable(self.delay_s) else self.delay_s
        if delay and rid != PROBE_REQUEST_ID:  # the probe answers at once
            await asyncio.sleep(delay)
        status, body, *headers = self.script(rid, n)  # an optional third item: response headers
        headers = headers[0] if headers else None
        if isinstance(body, str):
            return PlainTextResponse(body, status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    async def models(self, request: Request):
        return JSONResponse({"data": [{"id": MODEL}]})

    def start(self):
        self._server, self._thread, self.url = serve_in_thread(self.chat, self.models)
        return self

    def stop(self):
        self.hold.release()
        stop_thread_server(self._server, self._thread)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is None:
            assert not self.refused, f"densedpo sent requests vLLM would refuse: {self.refused[:3]}"

    def chat_requests(self) -> Counter:
        return Counter({k: v for k, v in self.counts.items() if k != PROBE_REQUEST_ID})
