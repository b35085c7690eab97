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


def test_train_help_lists_every_key_with_its_default_from_the_dataclass():
    """`train --help` lists every -o key with the config dataclass's own default and help (not a copy)."""
    import dataclasses

    from dpo.config import TrainConfig

    r = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert r.exit_code == 0
    text = re.sub(r"\s+", " ", r.output)
    required = {"pairs", "labels", "model"}
    for f in dataclasses.fields(TrainConfig):
        if f.name in required | {"out", "resume", "overwrite"}:
            continue
        default = "none" if f.default is None else f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help"
        assert f"{f.name}={default}: {f.metadata['help']}" in text, f.name
    assert "lr=1e-05:" in text and "annotators=none: majority" in text
