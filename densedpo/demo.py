"""The built-in demo: every stage on data and models made here, in a few minutes on 2 CPU cores.

The tiny models are random: the demo shows the pipeline, formats and throughput, not label quality.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(out: Path, num_pairs: int = 4, console=None) -> dict:
    from rich.console import Console

    from densedpo.cli import print_label_summary
    from densedpo.synthetic import make_synthetic_pairs
    from densedpo.tiny import make_tiny_vlm
    from labeler.engine import LabelConfig, label_pairs

    console = console or Console(stderr=True)
    out = Path(out)
    # 1. A tiny random VLM (built once).
    vlm = out / "tiny-vlm"
    if not (vlm / "config.json").exists():
        console.rule("1. tiny VLM")
        make_tiny_vlm(vlm)
    # 2. Synthetic aligned pairs with known per-segment truth.
    console.rule("2. synthetic pairs")
    pairs, truth = make_synthetic_pairs(out / "pairs", num_pairs=num_pairs)
    console.print(f"{num_pairs} pairs → {pairs}")
    # 3. Label with an embedded vLLM server. min_confidence 0: a random model is never confident.
    console.rule("3. label (embedded vLLM, tiny random VLM)")
    cfg = LabelConfig(pairs=pairs, out=out / "labels.parquet", model=str(vlm), min_confidence=0.0, concurrency=16)
    result = label_pairs(cfg, console=console)
    print_label_summary(result.summary, result.out)
    console.print(
        "[yellow]The tiny VLM has random weights: these labels are noise. With a real VLM (e.g. Qwen2.5-VL-7B on a "
        "GPU host) the same command produces meaningful labels.[/]"
    )
    return result.summary
