"""VBench's quality dimensions of each sample folder, through VBench in a Python of its own.

VBench pins transformers 4.33 and numpy < 2, so it cannot share densedpo's environment: it runs as a subprocess
in `--vbench-python`, custom-input mode, one run per model, its weights read from `--vbench-cache` (VBench's
VBENCH_CACHE_DIR; TORCH_HOME beside it). Every weight file the six dimensions of the paper need is checked first:
a missing one is a one-line error naming it, never a download.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError

# The paper's six VBench dimensions (DenseDPO Tables 1-2) and the weight files VBench loads for each
# (vbench/utils.py: init_submodules; the aesthetic head from vbench/aesthetic_quality.py).
DIMENSIONS = {
    "subject_consistency": [
        "dino_model/dino_vitbase16_pretrain.pth",
        "dino_model/facebookresearch_dino_main/hubconf.py",
    ],
    "background_consistency": ["clip_model/ViT-B-32.pt"],
    "motion_smoothness": ["amt_model/amt-s.pth"],
    "dynamic_degree": ["raft_model/models/raft-things.pth"],
    "aesthetic_quality": ["clip_model/ViT-L-14.pt", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"],
    "imaging_quality": ["pyiqa_model/musiq_spaq_ckpt-358bb6af.pth"],
}


def check_weights(cache: Path, dimensions: list[str]) -> None:
    for dim in dimensions:
        if dim not in DIMENSIONS:
            raise DenseDPOError(f"VBench dimension {dim!r} is not one densedpo runs; use {', '.join(DIMENSIONS)}.")
        for rel in DIMENSIONS[dim]:
            if not (cache / rel).is_file():
                raise DenseDPOError(
                    f"--vbench-cache {cache} lacks {rel} (VBench's {dim}); put the file there (VBench would download "
                    "it: densedpo never does)."
                )


def vbench_scores(
    folders: dict[str, Path],
    samples: dict[str, pd.DataFrame],
    python: Path,
    cache: Path,
    out: Path,
    dimensions: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    """{model name: {dimension: score}} for each sample folder (base and policies)."""
    dimensions = list(dimensions or DIMENSIONS)
    if not Path(python).is_file():
        raise DenseDPOError(f"--vbench-python {python} not found: give the python of a virtualenv with vbench.")
    check_weights(Path(cache), dimensions)
    env = {**os.environ, "VBENCH_CACHE_DIR": str(cache), "TORCH_HOME": str(Path(cache) / "torch")}
    env.pop("PYTHONPATH", None)  # nothing of densedpo's environment leaks into VBench's
    # The runner is copied beside the job: run from densedpo's folder, its modules would shadow VBench's own.
    runner = out / "vbench_run.py"
    out.mkdir(parents=True, exist_ok=True)
    runner.write_text(Path(__file__).with_name("vbench_run.py").read_text())
    scores = {}
    for name, folder in folders.items():
        work = out / name
        work.mkdir(parents=True, exist_ok=True)
        table = samples[name]
        job = {
            "videos": str(Path(folder).resolve()),
            "name": name,
            "prompts": {Path(v).name: p for v, p in zip(table["video"], table["prompt"])},  # VBench's dict form
            "dimensions": dimensions,
            "output": str(work.resolve()),
        }
        (work / "job.json").write_text(json.dumps(job, indent=2))
        log = work / "vbench.log"
        with open(log, "w") as f:
            r = subprocess.run([str(python), str(runner), str(work / "job.json")], env=env, stdout=f, stderr=f)
        if r.returncode != 0:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise DenseDPOError(f"VBench failed on {folder} (exit {r.returncode}; log {log}): {tail}")
        results = json.loads((work / f"{name}_eval_results.json").read_text())
        scores[name] = {dim: float(results[dim][0]) for dim in dimensions}
    return scores
