"""Run files: `densedpo <stage> --config <run file>` repeats the run's settings, never its one-time actions."""

from __future__ import annotations

from pathlib import Path

import yaml

from densedpo.config import build_config, write_run_file


def test_one_shot_flags_never_reach_a_run_file(tmp_path):
    """A killed `label --restart` rerun from its run file (as the README advises) must not delete the journal again."""
    from dpo.train import TrainConfig
    from generation.engine import GenerateConfig
    from labeler.config import LabelConfig

    label = LabelConfig(pairs=Path("p.parquet"), server=["http://x"], restart=True, retry_parse_errors=True)
    train = TrainConfig(pairs=Path("p"), labels=Path("l"), model="m", resume=Path("run/checkpoint-2"))
    generate = GenerateConfig(sources=Path("s"), model="m")
    cases = [("label", label, {"restart", "retry_parse_errors"}), ("train", train, {"resume"})]
    for name, cfg, gone in cases + [("generate", generate, set())]:
        path = write_run_file(tmp_path / f"{name}.run.yaml", name, cfg)
        recorded = yaml.safe_load(path.read_text())
        assert not gone & set(recorded), name
        again = build_config(type(cfg), path)  # the run file re-runs: every other setting is as it was
        for key in set(recorded):
            was, now = getattr(cfg, key), getattr(again, key)
            if isinstance(was, Path):  # run files hold absolute paths: they are read from anywhere
                assert Path(now).is_absolute() and Path(now) == was.resolve(), (name, key)
            else:
                assert now == was, (name, key)
        for key in gone:
            assert getattr(again, key) in (False, None), (name, key)
