"""The demo's own statements come from files the code wrote, not from numbers copied into docs."""

from __future__ import annotations

import json


def test_the_judge_card_reads_the_folders_training_json(tmp_path):
    from app.demo import judge_card

    figures = {"parameters": 684416, "train_seconds": 246.6, "torch_threads": 2, "heldout_accuracy": 0.41666}
    (tmp_path / "training.json").write_text(json.dumps({**figures, "heldout_examples": 144}))
    assert judge_card(tmp_path) == (
        "684,416 parameters, trained in 247 s on 2 threads; held-out accuracy 0.417 over first/second/tie "
        "(144 examples)"
    )
