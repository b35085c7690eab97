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


def test_small_numbers_keep_their_digits():
    from app.summaries import number

    assert number(1e-5) == "1e-05" and number(0.5) == "0.500" and number(0.0) == "0.000" and number(123.4) == "123.400"
