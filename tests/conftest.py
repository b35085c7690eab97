"""Session fixtures: one tiny VLM, one real vLLM server and one synthetic dataset per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Components a run promises (CI: DENSEDPO_REQUIRE=vllm,chromium,schemathesis): a test that would skip for one of
# them fails instead, naming it. Locally, without the variable, such tests skip and say why.
REQUIRED = {c.strip() for c in os.environ.get("DENSEDPO_REQUIRE", "").split(",") if c.strip()}


def missing(component: str, reason: str):
    """Skip (or, when DENSEDPO_REQUIRE names the component, fail) a test that needs `component`."""
    if component in REQUIRED:
        pytest.fail(f"{component} is required in this run (DENSEDPO_REQUIRE) but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_module(component: str, module: str, install: str):
    import importlib.util

    if importlib.util.find_spec(module) is None:
        missing(component, f"{module} is not installed ({install})")


# Markers follow what a test starts, so `-m "not vllm and not slow and not browser"` (the fast lane) is real.
MARK_BY_FIXTURE = {"vllm_server": "vllm", "pooling_server": "vllm", "browser": "browser", "trained_judge": "slow"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, mark in MARK_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    from densedpo.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="session")
def vllm_server(tiny_vlm, tmp_path_factory):
    """A real vLLM OpenAI-compatible server for the tiny VLM, started once per test session."""
    require_module("vllm", "vllm", "bash scripts/setup.sh")
    from labeler.servers import managed_vllm

    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with managed_vllm(str(tiny_vlm), log_path=log, max_images=40, max_videos=2, max_model_len=2048) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2-VL with a one-output reward head (densedpo.tiny, score_outputs=1)."""
    from densedpo.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("tiny-rm"), seed=3, score_outputs=1)


@pytest.fixture(scope="session")
def pooling_server(tiny_reward_model, tmp_path_factory):
    """A real vLLM pooling server (`--runner pooling --convert classify`) for the tiny reward model."""
    require_module("vllm", "vllm", "bash scripts/setup.sh")
    from labeler.judges.score import POOLING_ARGS
    from labeler.servers import managed_vllm

    log = tmp_path_factory.mktemp("vllm-pooling") / "vllm.log"
    with managed_vllm(
        str(tiny_reward_model), log_path=log, max_images=20, max_model_len=2048, extra_args=POOLING_ARGS
    ) as url:
        yield url


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """3 synthetic pairs of 49 frames at 16 fps (3 segments each) and their truth labels."""
    from densedpo.synthetic import make_synthetic_pairs

    return make_synthetic_pairs(tmp_path_factory.mktemp("synthetic"), num_pairs=3)


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `densedpo ...` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def trained_judge() -> Path:
    """The tiny trained judge (app/tiny_judge.py), trained once per machine and recipe (minutes the first time)."""
    from app.tiny_judge import cached_tiny_judge

    return cached_tiny_judge()


def _chromium() -> str:
    require_module("chromium", "playwright", "pip install playwright")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing("chromium", "no chromium on PATH: `apt-get install -y chromium` (scripts/setup.sh does where it may)")
    return path


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright driving the system chromium), once per test module (Playwright's sync API
    holds an event loop of its own: modules that run asyncio never share it)."""
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()
