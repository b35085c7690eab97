"""`densedpo serve`'s settings, and the one-service-per-database lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServiceConfig:
    db: Path = Path("jobs.sqlite")
    data_root: Path = Path(".")
    server: list[str] = field(default_factory=list)
    model: str | None = None
    max_running_jobs: int = 2
    token_file: Path | None = None
    max_upload_mb: float = 64.0
    concurrency: int = 32  # requests in flight per job
    max_failure_rate: float = 0.05
    max_images: int = 40  # images per request the VLM server accepts (vLLM's --limit-mm-per-prompt)


def db_lock(cfg: ServiceConfig):
    """One service per database: a second one would requeue the first's running jobs and run them twice."""
    from densedpo.locks import exclusive

    return exclusive(cfg.db.with_name(cfg.db.name + ".lock"), f"--db {cfg.db}", "give this service its own --db")
