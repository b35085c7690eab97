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
