"""The tiny judge's cache: a crashed training leaves no folder behind for good; the layout file is whole."""

import os
import subprocess
import sys

from app.tiny_judge import JudgeRecipe, cached_tiny_judge


def test_dead_trainings_are_removed_and_live_ones_kept(tmp_path):
    recipe = JudgeRecipe()
    final = tmp_path / f"tiny-judge-{recipe.digest()}"
    final.mkdir()
    (final / "training.json").write_text("{}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tiny-judge-0123456789ab.tmp-{dead.pid}"  # another recipe's, killed mid-training
    live = tmp_path / f".tiny-judge-0123456789ab.tmp-{os.getpid()}"  # a training still running
    for d in (stale, live):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
    assert cached_tiny_judge(recipe, root=tmp_path) == final
    assert not stale.exists() and live.exists()
    layout = [p for p in final.iterdir() if p.suffix == ".yaml"]
    assert len(layout) == 1 and "prompt:" in layout[0].read_text()
    assert not [p for p in final.iterdir() if p.name.startswith(".")]  # no temporary file left beside it
