"""`--help` shows every default it states: "[default: …]" is rich markup unless escaped, and vanished before."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from app.cli import app

CASES = [
    ("label", "[default: 0.05]"),
    ("label", "[default: segment_preference_v1]"),
    ("generate", "[default: 0.65]"),
    ("evaluate", "[default: vllm]"),
]


@pytest.mark.parametrize("command,expected", CASES)
def test_help_shows_the_defaults(command, expected):
    r = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert expected in re.sub(r"\s+", " ", r.output.replace("│", " ")), r.output
