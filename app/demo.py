"""The built-in demo: every stage on data and models made here, in a few minutes on 2 CPU cores.

The tiny models are random: the demo shows the pipeline, formats and throughput, not quality.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(out: Path, num_pairs: int = 4, console=None) -> dict:
    from rich.console import Console

    from app.summaries import print_generate_summary, print_label_summary
    from densedpo.synthetic import make_synthetic_pairs, make_synthetic_sources
    from densedpo.tiny import make_tiny_vlm, make_tiny_wan
    from dpo.train import TrainConfig, train
    from generation.engine import GenerateConfig, generate_pairs
    from labeler.engine import LabelConfig, label_pairs

    console = console or Console(stderr=True)
    out = Path(out)
    # 1. Tiny random models (built once): a Wan 2.1 pipeline and a Qwen2-VL judge.
    console.rule("1. tiny random models")
    wan, vlm = out / "tiny-wan", out / "tiny-vlm"
    if not (wan / "model_index.json").exists():
        make_tiny_wan(wan)
    if not (vlm / "config.json").exists():
        make_tiny_vlm(vlm)
    # 2. Source clips: rendered moving shapes with captions (2 s at 16 fps).
    console.rule("2. source clips")
    sources = make_synthetic_sources(out / "sources", num_sources=num_pairs, num_frames=40, height=64, width=64)
    # 3. SDEdit pairs: each clip noised to eta ~ U(0.65, 0.8) and denoised with two seeds.
    console.rule("3. generate SDEdit pairs (tiny Wan 2.1)")
    gen = generate_pairs(
        GenerateConfig(sources=sources, model=str(wan), out=out / "pairs", steps=10, guidance=5.0, num_frames=33,
                       height=64, width=64),
        console=console,
    )  # fmt: skip
    print_generate_summary(gen)
    # 4. Label every 1 s segment with an embedded vLLM server. min_confidence 0: a random model is never sure.
    console.rule("4. label segments (embedded vLLM, tiny random Qwen2-VL)")
    cfg = LabelConfig(pairs=gen.pairs_path, out=out / "labels.parquet", model=str(vlm), min_confidence=0.0,
                      concurrency=16)  # fmt: skip
    result = label_pairs(cfg, console=console)
    print_label_summary(result.summary, result.out)
    # 5. Train a few dense Flow-DPO steps. A random judge is position-biased (it answers the same position in
    #    both orders), so its labels are all ties and no pair passes the 20%-non-tie filter. The demo therefore
    #    trains on pairs whose per-segment truth is known by construction (synthetic artifacts), brought as
    #    videos without latents, as human-labeled data would be: the trainer encodes them once into a cache.
    console.rule("5. train dense Flow-DPO (LoRA on the tiny Wan transformer)")
    if result.summary["coverage"] > 0:
        pairs, labels = gen.pairs_path, result.out
    else:
        console.print("the tiny judge's labels are all ties; training on synthetic pairs with known segment truth")
        pairs, labels = make_synthetic_pairs(out / "truth_pairs", num_pairs=8, num_frames=33, height=64, width=64)
    run = train(
        TrainConfig(pairs=pairs, labels=labels, model=str(wan), out=out / "run", max_steps=20, warmup_steps=5,
                    lr=1e-3, lora_rank=8, batch_size=2, val_fraction=0.25, eval_every=10, save_every=20,
                    log_every=5),
        console=console,
    )  # fmt: skip
    last = run.history[-1]
    console.print(
        f"trained {run.steps} steps: loss {last['loss']:.4f}, implicit accuracy {last['implicit_accuracy']:.2f}, "
        f"held-out implicit accuracy {run.val_accuracy:.2f}; LoRA in {run.out / 'final'}"
    )
    console.print(
        "[yellow]The tiny models have random weights: these videos, labels and metrics only show the pipeline "
        "working. With real models (Wan 2.1, Qwen2.5-VL-7B on a GPU host) the same commands are the real thing.[/]"
    )
    return {**result.summary, "train_steps": run.steps, "val_implicit_accuracy": run.val_accuracy}
