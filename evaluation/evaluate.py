"""`densedpo evaluate`: did training help? The paper's model comparison (Tables 1-2, 8) for the user's own model.

evaluate() reads top to bottom: 1 pair every policy sample with the base sample of the same (prompt_id, k)
(eval/pairs.parquet, video_a = policy), 2 judge every segment through the labeler's engine (journal, resume,
juries: eval/labels.parquet), 3 measure each video's motion by VBench's dynamic-degree rule (densedpo.motion),
4 optionally probe the judge's motion bias with frozen copies of base videos, 5 figures with intervals from a
bootstrap over prompts, the sample size a ±0.05 net win needs, and a warning when the judge that evaluates is
the judge whose labels trained the policy, 6 write report.json, report.md and plots.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.tables import LABELS, PAIRS, read_table, resolve_path, write_table
from evaluation.figures import (
    motion_figures,
    preference_figures,
    samples_for_precision,
    static_win_figures,
    tie_based_samples,
)
from evaluation.pairing import pair_samples
from labeler.config import JURY, LabelConfig

PROBE_POINTS = (0.0, 0.25, 0.5, 0.75)  # where in the clip the frozen copy's one frame is taken


@dataclass
class EvaluateConfig:
    base: Path
    policies: dict[str, Path] = field(default_factory=dict)
    out: Path = Path("eval")
    judge: bool = True  # False: motion only (no judge, no server)
    raft_weights: Path | None = None
    motion_bias_probe: int = 0
    vbench_python: Path | None = None
    vbench_cache: Path | None = None
    bootstrap: int = 1000
    seed: int = 0

    def check(self) -> None:
        if not self.policies:
            raise DenseDPOError("give at least one --policy NAME=FOLDER (the trained model's samples).")
        bad = [n for n in self.policies if not n or ":" in n or "/" in n or n == "base" or n.startswith("base-for-")]
        if bad:
            raise DenseDPOError(
                f"--policy name {bad[0]!r}: use a short name without ':' or '/', other than 'base' and 'base-for-…'."
            )
        if (self.vbench_python is None) != (self.vbench_cache is None):
            raise DenseDPOError("--vbench-python and --vbench-cache go together (VBench's python, its weights).")
        if self.bootstrap < 1 or self.motion_bias_probe < 0:
            raise DenseDPOError("--bootstrap must be at least 1 and --motion-bias-probe at least 0.")


@dataclass
class EvaluateResult:
    report: dict
    out: Path


def evaluate(cfg: EvaluateConfig, label_cfg: LabelConfig | None, console=None, scorer_command=()) -> EvaluateResult:
    from rich.console import Console

    console = console or Console(stderr=True)
    cfg.check()
    cfg.out.mkdir(parents=True, exist_ok=True)
    # 1. Pairs.
    pairs_path, pairs = pair_samples(cfg.base, cfg.policies, cfg.out)
    report: dict = {"base": str(cfg.base), "policies": {}, "pairs": str(pairs_path), "bootstrap_draws": cfg.bootstrap}
    # 2. Preference.
    labels = None
    if cfg.judge:
        labels = _judge(label_cfg, pairs_path, cfg.out / "labels.parquet", console, scorer_command)
    # 3. Motion.
    flow, method = _flow(cfg.raft_weights)
    motion = video_motions(pairs, pairs_path, flow, method, console)
    motion.to_parquet(cfg.out / "motion.parquet", index=False)  # per sample, for plots and scripts
    report["motion_method"] = method
    for name in cfg.policies:
        mine = pairs[pairs["policy"] == name]
        entry: dict = {"samples": int(len(mine)), "prompts": int(mine["prompt_id"].nunique())}
        entry.update(motion_figures(motion[motion["policy"] == name], cfg.bootstrap, cfg.seed))
        if labels is not None:
            entry["judges"] = {
                judge: _with_power(preference_figures(rows, mine, cfg.bootstrap, cfg.seed), len(mine))
                for judge, rows in judges_of(labels[labels["pair_id"].isin(mine["pair_id"])]).items()
            }
        report["policies"][name] = entry
    if cfg.vbench_python is not None:
        report["vbench"], base_of = vbench_report(cfg, pairs, pairs_path)
        for name in cfg.policies:
            base = report["vbench"][base_of[name]]
            report["policies"][name]["vbench"] = {
                dim: {"value": score, "base": base[dim], "diff": score - base[dim]}
                for dim, score in report["vbench"][name].items()
            }
    # 4. The motion-bias probe.
    if cfg.judge and cfg.motion_bias_probe:
        report["probe"] = motion_bias_probe(cfg, label_cfg, pairs, pairs_path, console, scorer_command)
    # 5. Guards.
    if labels is not None:
        report["self_preference"] = self_preference(pairs, labels)
        for warning in report["self_preference"]:
            console.print(f"[yellow]warning:[/] {warning}")
    # 6. Files.
    from evaluation.report import write_report

    write_report(report, cfg.out)
    return EvaluateResult(report, cfg.out)


def _judge(label_cfg: LabelConfig, pairs_path: Path, out: Path, console, scorer_command) -> pd.DataFrame:
    import dataclasses

    from labeler.engine import label_pairs

    if label_cfg is None:
        raise DenseDPOError("evaluate needs a judge: --server URL, --model M or --judges FILE (or --no-judge).")
    cfg = dataclasses.replace(label_cfg, pairs=pairs_path, out=out)
    cfg.check()
    result = label_pairs(cfg, console=console, scorer_command=scorer_command)
    if result.summary["failure_rate"] > cfg.max_failure_rate:
        raise DenseDPOError(
            f"{result.summary['failure_rate']:.1%} of the judge's segments failed; the labels are in {out}: fix the "
            "server and rerun the same command (answered segments are not asked again)."
        )
    return result.labels


def judges_of(labels: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each judge's rows (a jury: every member and the jury); a table without judge ids is one judge."""
    if "judge" not in labels.columns or labels["judge"].isna().all():
        return {str(labels["judge_model"].iloc[0]) if len(labels) else "judge": labels}
    return {str(j): g for j, g in labels.groupby("judge", sort=True)}


def _with_power(figs: dict, samples: int) -> dict:
    net = figs["segment_net_win"]
    per_sample = figs["segments"] / max(samples, 1)
    tie = figs["segment_tie_rate"]["value"]
    figs["power"] = {
        "samples_for_net_win_pm_0.05": samples_for_precision(net, samples),
        "samples_for_net_win_pm_0.05_if_segments_independent": (
            tie_based_samples(tie, per_sample, net["value"] or 0.0) if tie is not None else None
        ),
        "samples_now": samples,
    }
    return figs


# ---------------------------------------------------------------------------------------------- motion


def _flow(raft_weights: Path | None):
    if raft_weights is None:
        return None, "farneback"
    from densedpo.motion import raft_flow

    if not Path(raft_weights).is_file():
        raise DenseDPOError(f"--raft-weights {raft_weights} not found: give torchvision raft_large weights (a file).")
    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return raft_flow(raft_weights, device=device), "raft"
    except (RuntimeError, KeyError) as e:
        raise DenseDPOError(f"--raft-weights {raft_weights} are not torchvision raft_large weights: {e}") from None


def video_motions(pairs: pd.DataFrame, pairs_path: Path, flow, method: str, console) -> pd.DataFrame:
    """Per pair: each side's VBench dynamic degree and mean motion (a base video shared by policies is measured
    once)."""
    from densedpo.motion import segment_motion_means, video_motion
    from densedpo.progress import progress_bar
    from densedpo.video import probe, read_frames

    cache: dict[Path, object] = {}

    def measure(rel: str):
        path = resolve_path(pairs_path, rel)
        if path not in cache:
            frames, fps = read_frames(path), probe(path).fps
            m = video_motion(frames, fps, flow=flow, method=method)
            cache[path] = (m, segment_motion_means(m, fps, len(frames)))
        return cache[path]

    rows = []
    with progress_bar(console, "pairs") as bar:
        task = bar.add_task(f"motion ({method})", total=len(pairs))
        for r in pairs.itertuples(index=False):
            (a, seg_a), (b, seg_b) = measure(r.video_a), measure(r.video_b)
            rows.append(
                {
                    "pair_id": r.pair_id,
                    "policy": r.policy,
                    "prompt_id": r.prompt_id,
                    "dynamic_policy": float(a.dynamic),
                    "dynamic_base": float(b.dynamic),
                    "motion_policy": a.mean_top5_px,
                    "motion_base": b.mean_top5_px,
                    **{f"segment_motion_diff_{i}": pa - pb for i, (pa, pb) in enumerate(zip(seg_a, seg_b))},
                }
            )
            bar.advance(task)
    return pd.DataFrame(rows)


def vbench_report(cfg: EvaluateConfig, pairs: pd.DataFrame, pairs_path: Path) -> tuple[dict, dict[str, str]]:
    """VBench's six dimensions of each policy's paired samples and of the base samples they are paired with (in
    VBench's own environment), and which base run each policy is compared with.

    VBench scores whole folders, so each run gets a folder of links to exactly its paired samples: a base sampled
    on more prompts than a policy, or a leftover file of a killed `sample`, never enters a difference. Policies
    paired with the same base samples share one base run ("base"); others get "base-for-NAME"."""
    from evaluation.vbench_adapter import DIMENSIONS, check_weights, vbench_scores

    check_weights(Path(cfg.vbench_cache), list(DIMENSIONS))  # before any folder is made
    runs: dict[str, pd.DataFrame] = {}
    base_of: dict[str, str] = {}
    base_sets: dict[frozenset, str] = {}
    for name, g in pairs.groupby("policy", sort=False):
        runs[str(name)] = g.assign(video=g["video_a"])
        key = frozenset(g["video_b"])
        if key not in base_sets:
            base_sets[key] = "base" if not base_sets else f"base-for-{name}"
            runs[base_sets[key]] = g.assign(video=g["video_b"])
        base_of[str(name)] = base_sets[key]
    folders, tables = {}, {}
    for run, g in runs.items():
        folder = cfg.out / "vbench" / "videos" / run
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        names = []
        for rel in g["video"]:
            target = resolve_path(pairs_path, rel)
            link = folder / target.name
            link.symlink_to(target)
            names.append(link.name)
        folders[run], tables[run] = folder, pd.DataFrame({"video": names, "prompt": list(g["prompt"])})
    bases = set(base_sets.values())
    order = [r for r in runs if r in bases] + [r for r in runs if r not in bases]
    folders, tables = {r: folders[r] for r in order}, {r: tables[r] for r in order}
    return vbench_scores(folders, tables, cfg.vbench_python, cfg.vbench_cache, cfg.out / "vbench"), base_of


# ---------------------------------------------------------------------------------------------- probe


def frozen_copy(frames: np.ndarray, at: float) -> np.ndarray:
    """The clip with one frame (at this fraction of its length) repeated: same length, same fps, no motion."""
    k = min(len(frames) - 1, int(at * len(frames)))
    return np.repeat(frames[k : k + 1], len(frames), axis=0)


def motion_bias_probe(cfg, label_cfg, pairs, pairs_path, console, scorer_command) -> dict:
    """Frozen copies of N base videos against the originals through the same judge (paper Table 8)."""
    from densedpo.files import file_sha256
    from densedpo.video import probe, read_frames, write_video

    out = cfg.out / "probe"
    base = pairs.drop_duplicates("video_b").head(cfg.motion_bias_probe)
    rows = []
    for r in base.itertuples(index=False):
        src = resolve_path(pairs_path, r.video_b)
        frames, fps = read_frames(src), probe(src).fps
        digest = file_sha256(src)[:12]  # the copy is made from these bytes: the journal reuses answers only for them
        for at in PROBE_POINTS:
            name = f"{digest}-frozen{int(at * 100):02d}"
            write_video(out / "videos" / f"{name}.mp4", frozen_copy(frames, at), fps)
            video = {"video_a": f"videos/{name}.mp4", "video_b": str(src)}
            pair_id = f"probe:{r.prompt_id}:{r.k}:{name}"
            rows.append({"pair_id": pair_id, "prompt": r.prompt, **video, "prompt_id": r.prompt_id, "frozen_at": at})
    probe_pairs = pd.DataFrame(rows)
    probe_path = write_table(probe_pairs, out / "pairs.parquet", PAIRS)
    labels = _judge(label_cfg, probe_path, out / "labels.parquet", console, scorer_command)
    return {
        "videos": int(len(base)),
        "frozen_at": list(PROBE_POINTS),
        "judges": {
            judge: static_win_figures(rows, probe_pairs, cfg.bootstrap, cfg.seed)
            for judge, rows in judges_of(labels).items()
        },
    }


# ---------------------------------------------------------------------------------------------- guards


def training_judges(lora: str | None) -> set[str]:
    """The judges whose labels trained a LoRA: its train run file (beside or above the LoRA folder) -> its labels
    table -> the judge column (and judge_model). Empty when any step is missing."""
    import yaml

    if not lora:
        return set()
    folder = Path(lora)
    for run in (folder, folder.parent):
        run_file = run / "train.run.yaml"
        if run_file.is_file():
            labels = (yaml.safe_load(run_file.read_text()) or {}).get("labels")
            path = Path(labels).expanduser() if labels else None
            if path is not None and not path.is_absolute():
                path = run / path  # run files hold absolute paths; a hand-written one, relative to itself
            if path is None or not path.is_file():
                return set()
            table = read_table(path, LABELS)
            names = set(table["judge_model"].dropna().map(_model_name))
            if "judge" in table.columns:
                names |= set(table["judge"].dropna())
            return names - {JURY}
    return set()


def _model_name(model: str) -> str:
    """A judge model's identity for comparison: the last part of its path or hub id (`/models/X`, `Qwen/X` and `X`
    are one model; what a vLLM server serves is named by its folder)."""
    return str(model).rstrip("/").rsplit("/", 1)[-1]


def self_preference(pairs: pd.DataFrame, labels: pd.DataFrame) -> list[str]:
    """A warning per policy trained on this judge's labels: its figures favour the policy by construction."""
    evaluating = set(labels["judge_model"].dropna().map(_model_name))
    if "judge" in labels.columns:
        evaluating |= set(labels["judge"].dropna())
    warnings = []
    for name, g in pairs.groupby("policy"):
        lora = g["policy_lora"].dropna().iloc[0] if g["policy_lora"].notna().any() else None
        both = sorted(training_judges(lora) & (evaluating - {JURY}))
        if both:
            warnings.append(
                f"policy {name} was trained on labels of {', '.join(both)}, the judge that evaluates it: its "
                "preference figures are biased toward the policy; let a held-out judge decide."
            )
    return warnings
