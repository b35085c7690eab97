"""An async client for one or more OpenAI-compatible servers (vLLM, hosted APIs), shared by load, with retries,
an optional request rate cap and an API key that never leaves the Authorization header.

aiohttp rather than httpx: at 32+ requests in flight httpx's connection pool spent more CPU per request than
the whole rest of the labeler (see docs/benchmarks.md), and on a CPU box that CPU is taken from the server.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import aiohttp

from densedpo.errors import DenseDPOError

PROBE_REQUEST_ID = "densedpo-probe"  # the judge's start-up check, not a segment's request
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class RequestFailed(Exception):
    """A request that failed after its retries (or with a non-retryable status)."""

    def __init__(self, message: str, body: str | None = None):
        super().__init__(message)
        self.body = body


@dataclass
class _Server:
    url: str
    in_flight: int = 0
    down_until: float = 0.0
    consecutive_failures: int = 0
    requests: int = 0
    latencies_s: list[float] = field(default_factory=list)


class ServerPool:
    """Sends each request to the live server with the fewest requests in flight.

    Retries connection errors, timeouts, 429 and 5xx with exponential backoff and jitter (a Retry-After header
    is believed, up to a minute); a server that refuses connections is skipped for a while so its requests go
    elsewhere. `max_rps` spaces request starts (retries included) across the pool. `api_key` is sent as a bearer
    token and masked out of every error and body this pool returns.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_connections: int = 256,
        max_rps: float | None = None,
        api_key: str | None = None,
        openai_base: bool = False,
    ):
        """vLLM URLs may end in /v1 or not (its routes are /v1/... and /tokenize, /classify); with openai_base the
        URL is an OpenAI-style base URL as given (https://HOST/v1, .../v1beta/openai) and paths follow it."""
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.max_rps = max_rps
        self._next_start = 0.0
        self._api_key = api_key
        self.models_path = "/models" if openai_base else "/v1/models"
        self.servers = [_Server(u.rstrip("/") if openai_base else u.rstrip("/").removesuffix("/v1")) for u in urls]
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> ServerPool:
        # The session binds to the running event loop, so it is made here rather than in __init__.
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else None
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=10.0),
            connector=aiohttp.TCPConnector(limit=self.max_connections),
            headers=headers,
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def latencies_s(self) -> list[float]:
        return [x for s in self.servers for x in s.latencies_s]

    async def check(self) -> list[str]:
        """GET /v1/models (or the OpenAI base's /models) on every server; returns the first answer's model ids.

        Raises a DenseDPOError naming every URL when none answers.
        """
        errors, models = [], None
        for s in self.servers:
            try:
                models_url = f"{s.url}{self.models_path}"
                async with self._http.get(models_url, timeout=aiohttp.ClientTimeout(total=10.0)) as r:
                    r.raise_for_status()
                    ids = [m["id"] for m in (await r.json()).get("data", [])]
                models = models if models is not None else ids
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as e:
                s.down_until = time.monotonic() + 5.0
                errors.append(self.redact(f"{s.url} ({type(e).__name__}: {e})"))
        if models is None:
            raise DenseDPOError(
                f"no VLM server answered at {', '.join(errors)}. Start one (e.g. `vllm serve MODEL`) and pass its "
                "URL with --server, or omit --server and pass --model to let densedpo start vLLM itself."
            )
        return models

    def redact(self, text: str | None) -> str | None:
        """`text` with the API key masked (some endpoints echo part of a bad key)."""
        if text is None or not self._api_key:
            return text
        text = text.replace(self._api_key, "***")
        return text.replace(self._api_key[-8:], "***") if len(self._api_key) >= 16 else text

    async def _pace(self) -> None:
        """Wait for this request's start slot under max_rps."""
        if not self.max_rps:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + 1.0 / self.max_rps
        if start > now:
            await asyncio.sleep(start - now)

    def _pick(self) -> _Server:
        now = time.monotonic()
        live = [s for s in self.servers if s.down_until <= now]
        if not live:
            return min(self.servers, key=lambda s: s.down_until)
        return min(live, key=lambda s: (s.in_flight, s.requests))

    async def post(self, path: str, body: dict, request_id: str | None = None) -> dict:
        """POST JSON to the least-loaded server; returns the decoded JSON body or raises RequestFailed."""
        last_error, last_body, retry_after = "no attempt made", None, None
        headers = {"X-Request-Id": request_id} if request_id else None
        for attempt in range(self.max_retries + 1):
            await self._pace()
            server = self._pick()
            wait = server.down_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            server.in_flight += 1
            server.requests += 1
            t0 = time.perf_counter()
            try:
                async with self._http.post(f"{server.url}{path}", json=body, headers=headers) as r:
                    status, text = r.status, await r.text()
                    retry_after = _retry_after_s(r.headers.get("Retry-After"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
                server.consecutive_failures += 1
                server.down_until = time.monotonic() + min(30.0, self.backoff_s * 2**server.consecutive_failures)
                last_error, last_body = f"{server.url}: {type(e).__name__}: {e}".rstrip(": "), None
            else:
                server.consecutive_failures = 0
                if status == 200:
                    server.latencies_s.append(time.perf_counter() - t0)
                    try:
                        return json.loads(text)
                    except ValueError as e:
                        raise RequestFailed(f"{server.url}: response is not JSON", self.redact(text[:2000])) from e
                last_error, last_body = f"{server.url}: HTTP {status}", self.redact(text[:2000])
                if status not in RETRYABLE_STATUS:
                    raise RequestFailed(last_error, last_body)
            finally:
                server.in_flight -= 1
            if attempt < self.max_retries:
                # A server that says when to come back (429/503 Retry-After) is believed, up to a minute.
                backoff = self.backoff_s * 2**attempt * (0.5 + random.random())
                await asyncio.sleep(retry_after if retry_after is not None else backoff)
                retry_after = None
        raise RequestFailed(f"{last_error} (after {self.max_retries + 1} attempts)", last_body)

    async def tokenize(self, model: str, text: str) -> list[int] | None:
        """Token ids of `text` via vLLM's /tokenize, or None when the server has no such route."""
        try:
            out = await self.post("/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
        except RequestFailed:
            return None
        return list(out.get("tokens", [])) or None


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (HTTP dates are ignored), capped at 60."""
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else None
    except ValueError:
        return None
