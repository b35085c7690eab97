"""An in-process fake OpenAI-compatible server, only for faults a real vLLM cannot produce on demand:
429/5xx bursts, malformed bodies, unconstrained answers, slow responses. It counts requests per request id.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from labeler.vllm_server import free_port


def completion(content: str, top: dict[str, float] | None = None) -> dict:
    top = top or {"f": -0.1, "s": -2.5, "t": -3.0}
    entries = [{"token": t, "logprob": lp} for t, lp in top.items()]
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": {"content": [{"token": content[:1], "logprob": -0.1, "top_logprobs": entries}]}}],
    }  # fmt: skip


def position_answer(request_id: str) -> dict:
    """Consistent judge: always prefers video_a, whichever position it is shown in."""
    if request_id.endswith(":ab"):
        return completion("first", {"f": -0.05, "s": -3.5, "t": -4.0})
    return completion("second", {"s": -0.05, "f": -3.5, "t": -4.0})


@dataclass
class FakeServer:
    """`script(request_id, n_seen)` returns (status, body) for a chat request; n_seen counts earlier tries."""

    script: object = None
    delay_s: float = 0.0
    counts: Counter = field(default_factory=Counter)
    url: str = ""

    def __post_init__(self):
        self.script = self.script or (lambda rid, n: (200, position_answer(rid)))

    async def chat(self, request: Request):
        rid = request.headers.get("x-request-id", "")
        await request.json()
        n = self.counts[rid]
        self.counts[rid] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, body = self.script(rid, n)
        if isinstance(body, str):
            return PlainTextResponse(body, status_code=status)
        return JSONResponse(body, status_code=status)

    async def models(self, request: Request):
        return JSONResponse({"data": [{"id": "fake-vlm"}]})

    def start(self):
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"]),
                                Route("/v1/models", self.models)])  # fmt: skip
        port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self):
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def chat_requests(self) -> Counter:
        return Counter({k: v for k, v in self.counts.items() if k != "densedpo-probe"})
