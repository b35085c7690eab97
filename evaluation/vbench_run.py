"""Runs inside VBench's own Python (`--vbench-python`), never imported by densedpo: VBench pins transformers 4.33
and numpy < 2. Standard library and vbench only.

    python vbench_run.py JOB.json

JOB.json: {"videos": folder, "name": run name, "prompts": {file name: prompt}, "dimensions": [...],
"output": folder}. VBench writes {output}/{name}_eval_results.json ({dimension: [score, per-video results]}).
"""

import json
import sys


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    from vbench import VBench

    try:
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    except ImportError:  # VBench itself needs torch; a test stand-in may not
        device = "cpu"
    bench = VBench(device, job.get("full_info", ""), job["output"])
    bench.evaluate(
        videos_path=job["videos"],
        name=job["name"],
        prompt_list=job["prompts"],
        dimension_list=job["dimensions"],
        local=True,
        mode="custom_input",
    )


if __name__ == "__main__":
    main(sys.argv[1])
