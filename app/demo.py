"""The built-in demo: every stage on data and models made here, in a few minutes on 2 CPU cores.

generate (tiny random Wan) -> label (a tiny judge trained here, through an embedded vLLM) -> eval-labels (the
judge against synthetic truth) -> train (dense Flow-DPO on the judge's labels) -> sample (base and trained LoRA,
paired by seed) -> evaluate (did training help: preference per segment and motion).
"""

from __future__ import annotations

from pathlib import Path


def run_demo(out: Path, num_pairs: int = 4, console=None) -> dict:
    from rich.console import Console

    console = console or Console(stderr=True)
    out = Path(out)
    wan, judge = _models(out, console)  # 1
    _generate(out, wan, num_pairs, console)  # 2, 3
    pairs, labels, summary, figures = _label_and_measure(out, judge, num_pairs, console)  # 4, 5
    run = _train(out, wan, pairs, labels, console)  # 6
    evaluation = _did_training_help(out, wan, judge, run.out / "final", console)  # 7, 8
    console.print(
        f"[bold]judge vs synthetic truth:[/] segment accuracy {_fmt(figures['segment_accuracy'])}, coverage "
        f"{_fmt(figures['coverage'])}, position consistency {_fmt(figures['position_consistency'])}"
    )
    console.print(
        "[yellow]The tiny models are stand-ins: the judge only knows synthetic artifacts and the Wan model is random. "
        "With real models (Wan 2.1, Qwen2.5-VL-7B on a GPU host) the same commands are the real thing.[/]"
    )
    return {
        **summary,
        "segment_accuracy": figures["segment_accuracy"]["value"],
        "position_consistency": figures["position_consistency"]["value"],
        "train_steps": run.steps,
        "val_implicit_accuracy": run.val_accuracy,
        "evaluation": evaluation,
    }


def _models(out: Path, console):
    """1. A tiny random Wan 2.1 pipeline (built once) and the tiny trained judge (trained once per machine on
    synthetic artifact pairs, cached by its recipe)."""
    from app.tiny_judge import JudgeRecipe, cached_tiny_judge
    from densedpo.tiny import make_tiny_wan

    console.rule("1. tiny models: random Wan 2.1, trained Qwen2-VL judge")
    wan = out / "tiny-wan"
    if not (wan / "model_index.json").exists():
        make_tiny_wan(wan)
    judge = cached_tiny_judge(JudgeRecipe(), console=console)
    console.print(f"judge: {judge} — {judge_card(judge)}")
    return wan, judge


def _generate(out: Path, wan: Path, num_pairs: int, console):
    """2. Source clips: rendered moving shapes with captions (2 s at 16 fps). 3. SDEdit pairs: each clip noised
    to eta ~ U(0.65, 0.8) and denoised with two seeds."""
    from app.summaries import print_generate_summary
    from densedpo.synthetic import make_synthetic_sources
    from generation.engine import GenerateConfig, generate_pairs

    console.rule("2. source clips")
    sources = make_synthetic_sources(out / "sources", num_sources=num_pairs, num_frames=40, height=64, width=64)
    console.rule("3. generate SDEdit pairs (tiny Wan 2.1)")
    cfg = GenerateConfig(
        sources=sources, model=str(wan), out=out / "pairs", steps=10, guidance=5.0, num_frames=33, height=64, width=64
    )
    result = generate_pairs(cfg, console=console)
    print_generate_summary(result)
    return result


def _label_and_measure(out: Path, judge: Path, num_pairs: int, console):
    """4. Label. The random Wan's pairs are noise, so the judge labels pairs whose per-segment truth is known by
    construction (an artifact in one video of a segment, or none): held-out seeds, never seen in training.
    5. How good are these labels? The judge against the synthetic truth."""
    from app.summaries import print_judge_report, print_label_summary
    from densedpo.synthetic import make_synthetic_pairs
    from labeler.config import LabelConfig, judge_folder_defaults
    from labeler.engine import label_pairs
    from review.judge_report import evaluate_judges

    console.rule("4. label segments (embedded vLLM, the trained tiny judge, both orders)")
    pairs, truth = make_synthetic_pairs(
        out / "labeled_pairs", num_pairs=max(40, 2 * num_pairs), num_frames=49, height=64, width=64, seed=11
    )
    layout = judge_folder_defaults(str(judge))  # the judge's own prompt, frames per second and video items
    cfg = LabelConfig(pairs=pairs, out=out / "labels.parquet", model=str(judge), concurrency=16, **layout)
    result = label_pairs(cfg, console=console)
    print_label_summary(result.summary, result.out)
    console.rule("5. eval-labels: the judge against the synthetic truth")
    report = evaluate_judges([result.out], [truth], n_boot=500)
    print_judge_report(report)
    figures = next(iter(report["references"][0]["judges"].values()))
    return pairs, result.out, result.summary, figures


def _train(out: Path, wan: Path, pairs: Path, labels: Path, console):
    """6. A few dense Flow-DPO steps on the judge's labels (videos without latents: the trainer encodes them once
    into a cache, as it would for human-labeled pairs brought from elsewhere)."""
    from dpo.train import TrainConfig, train

    console.rule("6. train dense Flow-DPO on the judge's labels (LoRA on the tiny Wan transformer)")
    cfg = TrainConfig(
        pairs=pairs,
        labels=labels,
        model=str(wan),
        out=out / "run",
        overwrite=True,  # a rerun of the demo trains again
        max_steps=20,
        warmup_steps=5,
        lr=1e-3,
        lora_rank=8,
        batch_size=2,
        val_fraction=0.25,
        eval_every=10,
        save_every=20,
        log_every=5,
    )
    run = train(cfg, console=console)
    last = run.history[-1]
    console.print(
        f"trained {run.steps} steps: loss {last['loss']:.4f}, implicit accuracy {last['implicit_accuracy']:.2f}, "
        f"held-out implicit accuracy {run.val_accuracy:.2f}; LoRA in {run.out / 'final'}"
    )
    return run


def _did_training_help(out: Path, wan: Path, judge: Path, lora: Path, console) -> dict:
    """7. Sample the base model and the trained LoRA on the same prompts and seeds. 8. Evaluate: the trained tiny
    judge per segment, motion by VBench's rule. With a random Wan both sides are noise: the figures show the
    machinery, not a result."""
    import shutil

    from evaluation.evaluate import EvaluateConfig, evaluate
    from evaluation.report import print_report
    from generation.sample import SampleConfig, sample
    from labeler.config import LabelConfig, judge_folder_defaults

    console.rule("7. sample the base model and the trained LoRA (same prompts, same seeds)")
    for stale in (out / "samples" / "dense", out / "eval"):  # a rerun trained a new LoRA: its samples are new
        shutil.rmtree(stale, ignore_errors=True)
    prompts = out / "eval_prompts.txt"
    prompts.write_text("a red circle bounces\na blue square slides left\na green ball rolls over sand\n")
    small = dict(steps=10, guidance=5.0, num_frames=33, height=64, width=64, fps=16.0, seeds_per_prompt=2)
    sample(SampleConfig(prompts=str(prompts), model=str(wan), out=out / "samples" / "base", **small), console)
    sample(
        SampleConfig(prompts=str(prompts), model=str(wan), lora=lora, out=out / "samples" / "dense", **small), console
    )
    console.rule("8. evaluate: did training help? (the trained tiny judge, VBench's dynamic-degree rule)")
    layout = judge_folder_defaults(str(judge))
    label_cfg = LabelConfig(pairs=Path("-"), model=str(judge), concurrency=16, **layout)
    policies = {"dense": out / "samples" / "dense"}
    cfg = EvaluateConfig(base=out / "samples" / "base", policies=policies, out=out / "eval", bootstrap=500)
    result = evaluate(cfg, label_cfg, console=console)
    print_report(result.report)
    console.print(
        "[yellow]The tiny random Wan makes noise videos and 20 LoRA steps on noise change little: these figures are "
        "noise too. They show the comparison a real run makes (README: Did training help?).[/]"
    )
    return result.report


def judge_card(folder: Path) -> str:
    """The judge's own figures, from the training.json its trainer wrote (never copied by hand into docs)."""
    import json

    t = json.loads((folder / "training.json").read_text())
    return (
        f"{t['parameters']:,} parameters, trained in {t['train_seconds']:.0f} s on {t['torch_threads']} threads; "
        f"held-out accuracy {t['heldout_accuracy']:.3f} over first/second/tie ({t['heldout_examples']} examples)"
    )


def _fmt(fig: dict) -> str:
    from densedpo.stats import with_interval

    return with_interval(fig["value"], *fig["ci95"])
