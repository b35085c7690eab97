"""The service's bearer token: where it comes from, and the dependency every route but /healthz requires."""

from __future__ import annotations

import hmac
import logging
import os
import secrets

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from densedpo.errors import DenseDPOError
from densedpo.files import atomic_write_text
from service.config import ServiceConfig

log = logging.getLogger("densedpo.serve")


def load_token(cfg: ServiceConfig) -> str:
    """From --token-file, else DENSEDPO_TOKEN, else a new random token written next to the database."""
    if cfg.token_file is not None:
        if not cfg.token_file.exists():
            raise DenseDPOError(f"--token-file {cfg.token_file} not found.")
        token = cfg.token_file.read_text().strip()
    else:
        token = os.environ.get("DENSEDPO_TOKEN", "").strip()
    if token:
        return token
    path = cfg.db.with_name(cfg.db.name + ".token")
    if not path.exists():  # created 0600: no moment in which another user could read it
        atomic_write_text(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    log.warning("no --token-file or DENSEDPO_TOKEN: using the token in %s", path)
    return path.read_text().strip()


def bearer_auth(token: str):
    """A FastAPI dependency: 401 unless the request carries `Authorization: Bearer <token>` (constant-time check)."""
    bearer = HTTPBearer(auto_error=False)

    def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = creds.credentials if creds else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return auth


PUBLIC_PATHS = ("/healthz", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")


class TokenGate:
    """ASGI middleware: a request without the bearer token is answered 401 before a byte of its body is read, so
    an unauthenticated upload is never parsed or spooled to disk (FastAPI reads a form before it runs the
    route's dependencies). The routes keep their dependency too: it documents the scheme in OpenAPI."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            return await self.app(scope, receive, send)
        body = b'{"detail":"missing or wrong bearer token"}'
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
