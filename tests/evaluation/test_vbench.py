"""The VBench adapter against a stand-in `vbench` package in a virtualenv of its own: the real VBench cannot be
installed beside densedpo (transformers 4.33, numpy < 2) and needs weights this machine does not have. The
stand-in checks what the real one needs (custom-input mode, local weights, the prompt dict keyed by file name,
every listed video present, VBENCH_CACHE_DIR) and writes VBench's real result file format."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from densedpo.errors import DenseDPOError
from evaluation.evaluate import EvaluateConfig, evaluate
from evaluation.vbench_adapter import DIMENSIONS
from tests.evaluation.helpers import sample_folder
from tests.evaluation.test_figures import moving

STAND_IN = textwrap.dedent("""
    import json, os
    class VBench:
        def __init__(self, device, full_info_dir, output_path):
            self.output = output_path
            os.makedirs(output_path, exist_ok=True)
        def evaluate(self, videos_path, name, prompt_list, dimension_list, local, mode):
            assert mode == "custom_input" and local is True, (mode, local)
            assert os.environ["VBENCH_CACHE_DIR"] and os.path.isdir(os.environ["VBENCH_CACHE_DIR"])
            assert "PYTHONPATH" not in os.environ
            assert isinstance(prompt_list, dict) and prompt_list, prompt_list
            # VBench's custom input: every file of the folder is a video it scores, and must have a prompt
            assert sorted(os.listdir(videos_path)) == sorted(prompt_list), (os.listdir(videos_path), prompt_list)
            for file_name, prompt in prompt_list.items():
                assert os.sep not in file_name and os.path.isfile(os.path.join(videos_path, file_name)), file_name
                assert isinstance(prompt, str) and prompt
            score = {"base": 0.5}.get(name, 0.75)
            results = {d: [score, [{"video_path": os.path.join(videos_path, f), "video_results": score}
                                   for f in prompt_list]] for d in dimension_list}
            with open(os.path.join(self.output, name + "_eval_results.json"), "w") as f:
                json.dump(results, f)
""")


@pytest.fixture(scope="module")
def vbench_python(tmp_path_factory):
    env = tmp_path_factory.mktemp("vbench-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python*/site-packages"))
    (site / "vbench").mkdir()
    (site / "vbench" / "__init__.py").write_text(STAND_IN)
    return env / "bin" / "python"


def folders(tmp_path):
    prompts = {"p0": "a cat", "p1": "a dog"}
    base = sample_folder(tmp_path / "base", {(p, 0): moving(17) for p in prompts}, prompts, fps=16.0)
    policy = sample_folder(tmp_path / "policy", {(p, 0): moving(17, seed=3) for p in prompts}, prompts, fps=16.0)
    return base, policy


def full_cache(root):
    for files in DIMENSIONS.values():
        for rel in files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"weights")
    return root


def test_vbench_scores_per_model_and_as_differences(vbench_python, tmp_path):
    base, policy = folders(tmp_path)
    cache = full_cache(tmp_path / "cache")
    vbench = dict(vbench_python=vbench_python, vbench_cache=cache)
    cfg = EvaluateConfig(
        base=base, policies={"dense": policy}, out=tmp_path / "eval", judge=False, bootstrap=50, **vbench
    )
    report = evaluate(cfg, None).report
    assert set(report["vbench"]) == {"base", "dense"}
    vb = report["policies"]["dense"]["vbench"]
    assert set(vb) == set(DIMENSIONS)  # VBench's own names
    assert vb["dynamic_degree"] == {"value": 0.75, "base": 0.5, "diff": 0.25}
    job = json.loads((tmp_path / "eval" / "vbench" / "dense" / "job.json").read_text())
    assert job["prompts"] == {"p0-0.mp4": "a cat", "p1-0.mp4": "a dog"}


def test_a_missing_weight_file_is_named_and_nothing_runs(vbench_python, tmp_path):
    base, policy = folders(tmp_path)
    cache = full_cache(tmp_path / "cache")
    (cache / "amt_model" / "amt-s.pth").unlink()
    vbench = dict(vbench_python=vbench_python, vbench_cache=cache)
    cfg = EvaluateConfig(base=base, policies={"dense": policy}, out=tmp_path / "eval", judge=False, **vbench)
    with pytest.raises(DenseDPOError, match=r"lacks amt_model/amt-s\.pth \(VBench's motion_smoothness\)"):
        evaluate(cfg, None)
    assert not (tmp_path / "eval" / "vbench").exists()


def test_vbench_scores_exactly_the_paired_samples(vbench_python, tmp_path):
    """A base sampled on more prompts than the policy, and a leftover temporary file of a killed `sample` in the
    base folder: VBench sees only the samples that are paired, the same prompts on both sides."""
    prompts = {"p0": "a cat", "p1": "a dog", "p2": "a bird"}
    base = sample_folder(tmp_path / "base", {(p, 0): moving(17) for p in prompts}, prompts, fps=16.0)
    (base / "p2-1.mp4.tmp").write_bytes(b"half a video")
    some = {p: prompts[p] for p in ("p0", "p1")}
    policy = sample_folder(tmp_path / "policy", {(p, 0): moving(17, seed=3) for p in some}, some, fps=16.0)
    cache = full_cache(tmp_path / "cache")
    cfg = EvaluateConfig(
        base=base,
        policies={"dense": policy},
        out=tmp_path / "eval",
        judge=False,
        bootstrap=20,
        vbench_python=vbench_python,
        vbench_cache=cache,
    )
    report = evaluate(cfg, None).report
    assert report["policies"]["dense"]["vbench"]["dynamic_degree"]["base"] == 0.5
    for run in ("base", "dense"):
        job = json.loads((tmp_path / "eval" / "vbench" / run / "job.json").read_text())
        assert job["prompts"] == {"p0-0.mp4": "a cat", "p1-0.mp4": "a dog"}, run
