"""`densedpo rounds --config rounds.yaml`: DenseDPO past one round, on the policy's own pairs.

Round k (folder OUT/round-k/) reads top to bottom:
1. sources: its own slice of --sources (rows (k-1)·n … k·n-1; `reuse_sources: true` gives every round the first n);
2. generate: SDEdit pairs from the base model with the previous round's LoRA (round 1: the base alone);
3. label: the judge on those pairs;
4. train: from the previous round's LoRA (`-o init_lora`), against the base or the previous round (`reference`);
5. sample: the round's LoRA; the base once (OUT/base-samples), on the same prompts and seeds;
6. evaluate: the round against the base, and (k ≥ 2) against the previous round.
A stage enters OUT/round-k/stages.json only once it finished: a rerun after a kill at any moment skips finished
stages and continues the unfinished one (generate skips finished pairs, label answers from its journal, train
resumes from its last checkpoint, sample skips finished videos). OUT/report.json, report.md and plots/ gather
the figures of every finished round, with intervals.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.config import build_config
from densedpo.errors import DenseDPOError
from densedpo.files import atomic_write_text
from densedpo.tables import SOURCES, read_table, resolve_path, write_table

STAGES = ("sources", "generate", "label", "train", "sample", "evaluate")
SET_BY_ROUNDS = {  # keys of each section that rounds sets itself, per round
    "generate": ("sources", "model", "out", "lora"),
    "label": ("pairs", "out"),
    "train": ("pairs", "labels", "model", "out", "init_lora", "reference", "resume", "overwrite"),
    "sample": ("model", "lora", "out"),
    "evaluate": ("base", "policies", "out"),
}


@dataclass
class RoundsConfig:
    model: str
    sources: Path
    out: Path = Path("rounds")
    rounds: int = 2
    sources_per_round: int | None = None  # default: the sources split evenly over the rounds
    reuse_sources: bool = False  # every round on the same first sources_per_round clips
    reference: str = "base"  # train's -o reference from round 2 on: base (the paper's) or previous
    generate: dict = field(default_factory=dict)
    label: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    sample: dict = field(default_factory=dict)
    evaluate: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.rounds < 1:
            raise DenseDPOError(f"rounds must be at least 1, got {self.rounds}.")
        if self.reference not in ("base", "previous"):
            raise DenseDPOError(f"reference must be base or previous, got {self.reference!r}.")
        for name, cls in stage_classes().items():  # every section's keys now, not when its stage comes (hours later)
            values = getattr(self, name)
            if not isinstance(values, dict):
                raise DenseDPOError(f"{name}: must be a mapping of {name}'s settings, got {values!r}.")
            taken = sorted(set(values) & set(SET_BY_ROUNDS[name]))
            if taken:
                raise DenseDPOError(f"{name}.{taken[0]} is set by rounds for each round; remove it.")
            unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                valid = sorted({f.name for f in dataclasses.fields(cls)} - set(SET_BY_ROUNDS[name]))
                raise DenseDPOError(f"{name}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}.")
        if not self.label.get("model") and not self.label.get("server") and not self.label.get("judges"):
            raise DenseDPOError("label: name the judge: model (densedpo starts vLLM), server (URLs) or judges (file).")
        n = len(read_table(self.sources, SOURCES))
        per = self.per_round(n)
        need = per if self.reuse_sources else per * self.rounds
        if per < 1 or need > n:
            raise DenseDPOError(
                f"--sources {self.sources} has {n} clips; {self.rounds} rounds of {per} fresh clips need {need}: "
                "add clips, lower sources_per_round, or set reuse_sources: true."
            )

    def per_round(self, n_sources: int) -> int:
        return self.sources_per_round or n_sources // self.rounds


def stage_classes() -> dict[str, type]:
    from dpo.config import TrainConfig
    from evaluation.evaluate import EvaluateConfig
    from generation.engine import GenerateConfig
    from generation.sample import SampleConfig
    from labeler.config import LabelConfig

    return {"generate": GenerateConfig, "label": LabelConfig, "train": TrainConfig, "sample": SampleConfig,
            "evaluate": EvaluateConfig}  # fmt: skip


def load_rounds_config(path: Path) -> RoundsConfig:
    try:
        return build_config(RoundsConfig, path)
    except DenseDPOError as e:
        raise DenseDPOError(f"--config {path}: {e}") from None


# ---------------------------------------------------------------------------------------------- stages


class Stages:
    """A round's finished stages and what each recorded (OUT/round-k/stages.json, rewritten atomically)."""

    def __init__(self, folder: Path):
        self.path = folder / "stages.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def done(self, stage: str) -> bool:
        return stage in self.data

    def finish(self, stage: str, facts: dict) -> None:
        self.data[stage] = facts
        atomic_write_text(self.path, json.dumps(self.data, indent=2))


def section(cfg: RoundsConfig, name: str, cls, **values):
    """A stage's config: the YAML's section under what rounds sets for this round, checked as the command would."""
    try:
        return build_config(cls, None, **{**getattr(cfg, name), **values})
    except DenseDPOError as e:
        raise DenseDPOError(f"rounds {name}: {e}") from None


def stage_sources(cfg: RoundsConfig, k: int, folder: Path) -> dict:
    """This round's slice of the sources, video paths made absolute (the slice lives in another folder)."""
    table = read_table(cfg.sources, SOURCES)
    per = cfg.per_round(len(table))
    start = 0 if cfg.reuse_sources else (k - 1) * per
    part = table.iloc[start : start + per].copy()
    part["video"] = [str(resolve_path(cfg.sources, v)) for v in part["video"]]
    write_table(part, folder / "sources.parquet", SOURCES)
    return {"sources": len(part), "first_source": str(part["source_id"].iloc[0]), "rows": [start, start + per]}


def stage_generate(cfg: RoundsConfig, folder: Path, lora: Path | None, console, progress: bool) -> dict:
    from densedpo.lora import lora_digest
    from generation.engine import GenerateConfig, generate_pairs

    gen = section(cfg, "generate", GenerateConfig, sources=folder / "sources.parquet", model=cfg.model,
                  out=folder / "pairs", lora=lora)  # fmt: skip
    result = generate_pairs(gen, console=console, progress=progress)
    return {
        "pairs": result.made + result.already_done,
        "skipped": len(result.skipped),
        "lora_sha256": lora_digest(lora),
    }


def label_config(cfg: RoundsConfig, pairs: Path, out: Path):
    """The judge's LabelConfig: the section over the judge folder's own request layout (as `label` does)."""
    from labeler.config import LabelConfig, judge_folder_defaults

    layout = judge_folder_defaults(cfg.label.get("model"))
    return section(cfg, "label", LabelConfig, pairs=pairs, out=out, **{**layout, **cfg.label})


def stage_label(cfg: RoundsConfig, folder: Path, console, progress: bool) -> dict:
    from labeler.engine import label_pairs

    result = label_pairs(label_config(cfg, folder / "pairs" / "pairs.parquet", folder / "labels.parquet"), console,
                         progress=progress)  # fmt: skip
    return {"coverage": decided_share(result.labels), "segments": int(len(result.labels))}


def decided_share(labels: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """The share of segments the judge decided (ok, a or b), with a bootstrap 95% interval over pairs."""
    from densedpo.tables import JURY
    from labeler.aggregate import decided

    if "judge" in labels.columns and labels["judge"].eq(JURY).any():
        labels = labels[labels["judge"].eq(JURY)]
    per_pair = labels.assign(d=decided(labels).astype(float)).groupby("pair_id")["d"].agg(["sum", "count"])
    s, c = per_pair["sum"].to_numpy(), per_pair["count"].to_numpy()
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(s), (n_boot, len(s)))
    shares = s[draws].sum(axis=1) / c[draws].sum(axis=1)
    lo, hi = np.percentile(shares, [2.5, 97.5])
    return {"value": round(float(s.sum() / c.sum()), 4), "ci": [round(float(lo), 4), round(float(hi), 4)]}


def stage_train(cfg: RoundsConfig, folder: Path, lora: Path | None, console, progress: bool) -> dict:
    """Train from the previous LoRA; a killed run continues from its last checkpoint, else starts over."""
    from dpo.config import TrainConfig
    from dpo.train import train

    out = folder / "train"
    checkpoints = sorted(out.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    resume = checkpoints[-1].parent if checkpoints else None
    run = section(cfg, "train", TrainConfig, pairs=folder / "pairs" / "pairs.parquet", labels=folder / "labels.parquet",
                  model=cfg.model, out=out, init_lora=lora, reference=cfg.reference if lora else "base",
                  resume=resume, overwrite=resume is None)  # fmt: skip
    result = train(run, console=console, progress=progress)
    return {"steps": result.steps, "val_implicit_accuracy": result.val_accuracy, "pairs_kept": result.counts["kept"],
            "reference": run.reference, "init_lora": str(lora) if lora else None}  # fmt: skip


def stage_sample(cfg: RoundsConfig, folder: Path, console, progress: bool) -> dict:
    """The round's LoRA, and the base once (a finished base folder is skipped video by video)."""
    from generation.sample import SampleConfig, sample

    base = section(cfg, "sample", SampleConfig, model=cfg.model, out=cfg.out / "base-samples")
    sample(base, console, progress=progress)
    policy = section(cfg, "sample", SampleConfig, model=cfg.model, lora=folder / "train" / "final",
                     out=folder / "samples")  # fmt: skip
    result = sample(policy, console, progress=progress)
    return {"samples": result.made + result.already_done}


def stage_evaluate(cfg: RoundsConfig, k: int, folder: Path, console) -> dict:
    from evaluation.evaluate import EvaluateConfig, evaluate

    judge = label_config(cfg, Path("-"), Path("-"))
    facts = {}
    bases = {"vs_base": cfg.out / "base-samples"}
    if k > 1:
        bases["vs_previous"] = cfg.out / f"round-{k - 1}" / "samples"
    for name, base in bases.items():
        ev = section(cfg, "evaluate", EvaluateConfig, base=base, policies={f"round-{k}": folder / "samples"},
                     out=folder / f"eval-{name.replace('_', '-')}")  # fmt: skip
        facts[name] = figures_of(evaluate(ev, judge, console=console).report, f"round-{k}")
    return facts


def figures_of(report: dict, policy: str) -> dict:
    """The figures the rounds report follows, from an evaluate report: the first judge's net wins, motion."""
    p = report["policies"][policy]
    judges = p.get("judges") or {}
    first = next(iter(judges.values()), {})
    out = {f: first.get(f) for f in ("segment_net_win", "clip_net_win")}
    out.update({f: p.get(f) for f in ("dynamic_degree_policy", "dynamic_degree_base", "dynamic_degree_diff")})
    return out


# ---------------------------------------------------------------------------------------------- the run


def run_rounds(cfg: RoundsConfig, console=None, progress: bool = False) -> dict:
    """Every round in order, each stage once (module docstring); returns the report across rounds. `progress`: each
    stage's own progress bar (the CLI's default)."""
    from rich.console import Console

    console = console or Console(stderr=True)
    cfg.out.mkdir(parents=True, exist_ok=True)
    lora = None
    for k in range(1, cfg.rounds + 1):
        folder = cfg.out / f"round-{k}"
        folder.mkdir(exist_ok=True)
        stages = Stages(folder)
        for stage in STAGES:
            if stages.done(stage):
                console.print(f"round {k}: {stage} finished before, skipped")
                continue
            console.rule(f"round {k} of {cfg.rounds}: {stage}")
            stages.finish(stage, run_stage(cfg, k, stage, lora, console, progress))
        write_report(cfg)
        lora = folder / "train" / "final"
    return write_report(cfg)


def run_stage(cfg: RoundsConfig, k: int, stage: str, lora: Path | None, console, progress: bool = False) -> dict:
    """One stage of round k; returns what stages.json records of it."""
    folder = cfg.out / f"round-{k}"
    if stage == "sources":
        return stage_sources(cfg, k, folder)
    if stage == "generate":
        return stage_generate(cfg, folder, lora, console, progress)
    if stage == "label":
        return stage_label(cfg, folder, console, progress)
    if stage == "train":
        return stage_train(cfg, folder, lora, console, progress)
    if stage == "sample":
        return stage_sample(cfg, folder, console, progress)
    return stage_evaluate(cfg, k, folder, console)


FIGURES = (  # (report key, stage, figure, words)
    ("net_win_vs_base", "evaluate", ("vs_base", "segment_net_win"), "segment net win vs base"),
    ("net_win_vs_previous", "evaluate", ("vs_previous", "segment_net_win"), "segment net win vs previous round"),
    ("dynamic_degree", "evaluate", ("vs_base", "dynamic_degree_policy"), "dynamic degree (policy)"),
    ("dynamic_degree_base", "evaluate", ("vs_base", "dynamic_degree_base"), "dynamic degree (base)"),
    ("label_coverage", "label", ("coverage",), "label coverage (segments decided)"),
)


def report_rows(cfg: RoundsConfig) -> list[dict]:
    """One row per round with a finished stage: each figure as {"value", "ci"} (None where not there yet)."""
    rows = []
    for k in range(1, cfg.rounds + 1):
        stages = Stages(cfg.out / f"round-{k}").data
        if not stages:
            break
        row = {"round": k, "stages_finished": list(stages)}
        for name, stage, path, _ in FIGURES:
            value = stages.get(stage)
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            row[name] = value
        train = stages.get("train") or {}
        row["reference"], row["train_steps"] = train.get("reference"), train.get("steps")
        rows.append(row)
    return rows


def write_report(cfg: RoundsConfig) -> dict:
    """OUT/report.json, report.md and plots/<figure>.png: every figure by round, with its 95% interval."""
    from densedpo.stats import with_interval

    rows = report_rows(cfg)
    report = {"model": cfg.model, "rounds_planned": cfg.rounds, "reference": cfg.reference, "rounds": rows}
    atomic_write_text(cfg.out / "report.json", json.dumps(report, indent=2))

    def cell(name, fig):
        signed = name.startswith("net_win")
        return with_interval(fig["value"], *fig["ci"], signed=signed) if isinstance(fig, dict) and fig else "–"

    header = "| round | " + " | ".join(w for *_, w in FIGURES) + " |"
    lines = ["# densedpo rounds", "", f"Base: `{cfg.model}`; reference from round 2: {cfg.reference}. 95% intervals.",
             "", header, "|---" * (len(FIGURES) + 1) + "|"]  # fmt: skip
    lines += [f"| {r['round']} | " + " | ".join(cell(n, r[n]) for n, *_ in FIGURES) + " |" for r in rows]
    atomic_write_text(cfg.out / "report.md", "\n".join(lines) + "\n")
    plot_rounds(rows, cfg.out / "plots")
    return report


def plot_rounds(rows: list[dict], folder: Path) -> list[Path]:
    """One PNG per figure: its value by round with the interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, _, _, words in FIGURES:
        points = [(r["round"], r[name]) for r in rows if isinstance(r[name], dict) and r[name].get("value") is not None]
        if not points:
            continue
        ks = [k for k, _ in points]
        values = np.array([f["value"] for _, f in points])
        lo = values - np.array([f["ci"][0] for _, f in points])
        hi = np.array([f["ci"][1] for _, f in points]) - values
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.errorbar(ks, values, yerr=[lo, hi], marker="o", capsize=4)
        if name.startswith("net_win"):
            ax.axhline(0.0, color="k", lw=0.8, ls=":")  # no better, no worse
        ax.set_xticks(ks)
        ax.set_xlabel("round")
        ax.set_title(words)
        fig.tight_layout()
        paths.append(folder / f"{name}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
