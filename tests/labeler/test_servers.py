"""A managed server that dies while starting: the error names the likely cause (vLLM's last line often only says
"See root cause above") and the log."""

from __future__ import annotations

import pytest

from labeler.servers import start_failure_cause

ROOT = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"


@pytest.mark.parametrize(
    "line, cause",
    [
        ("OSError: [Errno 98] Address already in use", "the port is taken (http://127.0.0.1:8123)"),
        ("ValueError: No available memory for the cache blocks.", "not enough memory for the model and its KV-cache"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "not enough memory"),
        ("OSError: /m does not appear to have a file named config.json.", "the model could not be loaded"),
        ("RuntimeError: something new", "first error in the log: 'RuntimeError: something new'"),
    ],
)
def test_the_cause_is_found_above_see_root_cause_above(line, cause):
    log = f"INFO 12-01 starting\nINFO # CPU blocks: 512, KV cache 1 GiB\nERROR 12-01 [core.py:700] {line}\n{ROOT}\n"
    text = start_failure_cause(log, "http://127.0.0.1:8123")
    assert text.startswith(cause), text
    assert "See root cause above" not in text and "\n" not in text


def test_memory_cause_says_how_much_memory_is_free():
    text = start_failure_cause("MemoryError\n", "")
    assert "GiB available now" in text
