"""`densedpo generate`: real clips -> structurally aligned pairs (SDEdit) or independent pairs (vanilla).

generate_pairs() reads top to bottom: 1 plan (sources, shard, η and seeds per source, skip finished pairs),
2 load the diffusers pipeline, 3 per source: read and resize the clip, encode prompt and clip once, denoise both
seeds as one batch from σ ≈ η, decode, write videos/latents/embeddings, then the row; 4 merge the rows into
pairs.parquet; 5 summarise.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.files import atomic_path, atomic_write_text, finished_files
from densedpo.latents import LatentCodec
from densedpo.lora import check_lora, lora_digest
from densedpo.progress import progress_bar
from densedpo.tables import PAIRS, SOURCES, read_table, resolve_path, write_table
from generation.sdedit import (
    frames_that_fit,
    make_pair_id,
    nearest_sigma_index,
    noise_to_level,
    pair_randomness,
    sigmas_in_range,
    source_frame_indices,
)

MODES = ("sdedit", "vanilla")


@dataclass
class GenerateConfig:
    sources: Path
    model: str
    out: Path = Path("pairs")
    mode: str = "sdedit"
    eta_min: float = 0.65
    eta_max: float = 0.8
    steps: int = 40
    guidance: float = 8.0
    num_frames: int = 81
    fps: float = 16.0
    height: int = 480
    width: int = 832
    offset_s: float = 0.0
    seed: int = 0
    negative_prompt: str = ""
    max_sequence_length: int = 512
    shard: str | None = None  # "i/n"
    cpu_offload: bool = False
    vae_tiling: bool = False
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    max_sources: int | None = None
    lora: Path | None = None  # pairs from the current policy: a LoRA `train` wrote, on top of --model

    def check(self) -> None:
        if self.mode not in MODES:
            raise DenseDPOError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if not 0.0 < self.eta_min <= self.eta_max <= 1.0:
            raise DenseDPOError(f"need 0 < --eta-min <= --eta-max <= 1, got {self.eta_min} and {self.eta_max}.")
        check_sampler_settings(self)
        check_lora(self.lora)
        parse_shard(self.shard)

    def settings(self) -> dict:
        """What changes the videos of a pair besides source, model, mode, η and seeds (part of the pair id)."""
        return {
            "steps": self.steps,
            "guidance": self.guidance,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "height": self.height,
            "width": self.width,
            "offset_s": self.offset_s,
            "negative_prompt": self.negative_prompt,
        }


def model_id(model: str) -> str:
    """What tables record as the model: a local folder as an absolute path (valid from any working directory), a
    hub id as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def check_sampler_settings(cfg) -> None:
    """The checks every config the Sampler runs shares (generate's, sample's): frames, size, steps, fps, dtype."""
    if cfg.num_frames < 1 or (cfg.num_frames - 1) % 4:
        k = max(0, (cfg.num_frames - 1) // 4)
        raise DenseDPOError(
            f"--num-frames must be 4k+1 for Wan's causal VAE (e.g. {4 * k + 1} or {4 * k + 5}), got {cfg.num_frames}."
        )
    if cfg.height % 16 or cfg.width % 16:
        raise DenseDPOError(f"--height and --width must be multiples of 16, got {cfg.height}x{cfg.width}.")
    if cfg.steps < 1 or cfg.fps <= 0:
        raise DenseDPOError("--steps and --fps must be positive.")
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise DenseDPOError(f"--dtype must be auto, float32, bfloat16 or float16, got {cfg.dtype!r}.")


def parse_shard(shard: str | None) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    try:
        i, n = (int(x) for x in shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise DenseDPOError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {shard!r}.") from None
    return i, n


@dataclass
class PairTask:
    source_row: int
    source_id: str
    prompt: str
    video: Path
    pair_id: str
    eta: float | None
    seed_a: int
    seed_b: int
    start_s: float = 0.0  # the clip's span in its file (sources.parquet's start_s / end_s)
    end_s: float | None = None


def plan_tasks(cfg: GenerateConfig, rank: int, world: int) -> tuple[list[PairTask], int]:
    """(tasks of this shard still to do, number already finished). Sources are split by index modulo world."""
    sources = read_table(cfg.sources, SOURCES)
    if cfg.max_sources is not None:
        sources = sources.iloc[: cfg.max_sources]
    tasks, done = [], 0
    policy = {"lora": lora_digest(cfg.lora)} if cfg.lora is not None else {}  # base pairs keep their ids
    for i, row in enumerate(sources.itertuples(index=False)):
        if i % world != rank:
            continue
        eta, seed_a, seed_b = pair_randomness(cfg.seed, row.source_id, cfg.eta_min, cfg.eta_max)
        if cfg.mode == "vanilla":
            eta = None
        pid = make_pair_id(row.source_id, cfg.model, cfg.mode, eta, seed_a, seed_b, **cfg.settings(), **policy)
        if (cfg.out / "rows" / f"{pid}.json").exists():
            done += 1
            continue
        video = resolve_path(cfg.sources, row.video)
        start, end = source_span(row)
        tasks.append(PairTask(i, row.source_id, row.prompt, video, pid, eta, seed_a, seed_b, start, end))
    return tasks, done


def source_span(row) -> tuple[float, float | None]:
    """(start, end) seconds of a source inside its file: its start_s / end_s columns when set, else the file."""
    start, end = getattr(row, "start_s", None), getattr(row, "end_s", None)
    start = 0.0 if start is None or start != start else float(start)
    return start, (None if end is None or end != end else float(end))


# ---------------------------------------------------------------------------------------------- clip


class SourceUnusable(DenseDPOError):
    """A source clip that cannot make a pair (unreadable, too short): skipped with its reason, the run goes on."""


@dataclass
class ClipCheck:
    """What probing the plan's clips found: the reason each unusable one cannot make a pair, and how many frames
    (4k+1) each readable clip could give at the run's fps and offset."""

    problems: dict[str, str]
    too_short: list[str]
    fits: dict[str, int]  # source_id -> frames that fit

    def advice(self, cfg: GenerateConfig) -> str:
        """Which --num-frames / --offset-s would let the too-short clips make pairs ("" when none is too short)."""
        short = [self.fits[s] for s in self.too_short if s in self.fits]
        if not short:
            return ""
        tips = []
        n = min(short)
        if n >= 5:
            tips.append(f"--num-frames {n} ({(n - 1) / cfg.fps:.2f} s at {cfg.fps:g} fps), which fits all of them")
        if cfg.offset_s > 0:
            tips.append("--offset-s 0, which gives them more frames")
        if not tips:
            tips.append("a lower --fps spreads the frames over more of each clip")
        return "; ".join(tips)


def check_clips(tasks: list[PairTask], cfg: GenerateConfig, until_usable: bool = False) -> ClipCheck:
    """Probe each task's clip (readable, long enough for cfg's frames at cfg's fps from cfg's offset) without
    decoding it. until_usable: stop at the first clip that can make a pair (the run's cheap start-up check)."""
    from densedpo.video import probe

    check = ClipCheck({}, [], {})
    for task in tasks:
        try:
            info = probe(task.video)
        except DenseDPOError as e:
            check.problems[task.source_id] = str(e)
            continue
        frames, offset = span_frames(info.fps, info.num_frames, task.start_s, task.end_s), task.start_s + cfg.offset_s
        check.fits[task.source_id] = frames_that_fit(info.fps, frames, cfg.fps, offset)
        try:
            source_frame_indices(info.fps, frames, cfg.fps, cfg.num_frames, offset)
        except ValueError as e:
            check.problems[task.source_id] = str(e)
            check.too_short.append(task.source_id)
            continue
        if until_usable:
            break
    return check


def nothing_to_make(n_sources: int, check: ClipCheck, cfg: GenerateConfig) -> str:
    """The one line of a run none of whose sources can make a pair."""
    short = len(check.too_short)
    need = cfg.offset_s + (cfg.num_frames - 1) / cfg.fps
    parts = [f"none of the {n_sources} sources can make a pair"]
    if short:
        parts.append(
            f"{short} too short for {cfg.num_frames} frames at {cfg.fps:g} fps from {cfg.offset_s:g} s "
            f"(more than {need:.2f} s)"
        )
    if len(check.problems) > short:
        parts.append(f"{len(check.problems) - short} unreadable")
    advice = check.advice(cfg)
    return ": ".join(parts[:2]) + "".join(f", {p}" for p in parts[2:]) + (f". Try {advice}." if advice else ".")


def span_frames(fps: float, num_frames: int, start_s: float, end_s: float | None) -> int:
    """How many of the file's frames a clip ending at end_s may use (frame indices count from the file's start)."""
    return num_frames if end_s is None else min(num_frames, int(np.floor(end_s * fps + 1e-6)))


def load_clip(path: Path, cfg: GenerateConfig, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """The source resampled to cfg.fps, cfg.num_frames from start_s + cfg.offset_s (not past end_s), resized and
    center-cropped.

    Returns uint8 (T, H, W, 3). Raises SourceUnusable with the reason when the clip is unusable.
    """
    from densedpo.video import probe, read_frames, resize

    try:
        info = probe(path)
        frames = span_frames(info.fps, info.num_frames, start_s, end_s)
        idx = source_frame_indices(info.fps, frames, cfg.fps, cfg.num_frames, start_s + cfg.offset_s)
        frames = read_frames(path, idx)
    except (DenseDPOError, ValueError) as e:  # only the clip's own problems; a bug elsewhere stays a crash
        raise SourceUnusable(str(e)) from None
    h, w = frames.shape[1:3]
    scale = max(cfg.height / h, cfg.width / w)
    rh, rw = max(cfg.height, round(h * scale)), max(cfg.width, round(w * scale))
    y0, x0 = (rh - cfg.height) // 2, (rw - cfg.width) // 2
    out = np.empty((len(frames), cfg.height, cfg.width, 3), np.uint8)
    for k, f in enumerate(frames):
        r = resize(f, rw, rh)
        out[k] = r[y0 : y0 + cfg.height, x0 : x0 + cfg.width]
    return out


# ---------------------------------------------------------------------------------------------- model


class Sampler:
    """A diffusers video pipeline's parts, driven by our own loop so that η is a σ and both seeds batch."""

    def __init__(self, cfg, device: str | None = None):
        """cfg: a GenerateConfig, or any config with the same sampler fields (`sample`'s SampleConfig, + lora)."""
        import torch
        from diffusers import DiffusionPipeline

        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if cfg.dtype == "auto":
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            dtype = getattr(torch, cfg.dtype)
        try:
            # The Wan VAE stays in float32: it is numerically fragile in half precision.
            pipe = DiffusionPipeline.from_pretrained(cfg.model, dtype={"vae": torch.float32, "default": dtype})
        except (OSError, ValueError) as e:
            raise DenseDPOError(f"cannot load --model {cfg.model!r} as a diffusers pipeline: {e}") from None
        for part in ("transformer", "vae", "scheduler", "text_encoder"):
            if getattr(pipe, part, None) is None:
                raise DenseDPOError(f"--model {cfg.model!r} has no {part}; densedpo needs a Wan-style video pipeline.")
        if not hasattr(pipe.scheduler, "set_begin_index") or "sigmas" not in dir(pipe.scheduler):
            raise DenseDPOError(f"the scheduler {type(pipe.scheduler).__name__} is not a flow-matching scheduler.")
        lora = getattr(cfg, "lora", None)
        self.lora_sha256 = lora_digest(lora)
        if lora is not None:  # the LoRA `train` saved, loaded as diffusers loads any LoRA of this pipeline
            try:
                pipe.load_lora_weights(str(lora))
            except (OSError, ValueError, KeyError) as e:
                raise DenseDPOError(f"cannot load --lora {lora} into {cfg.model!r}: {e}") from None
        if cfg.vae_tiling:
            pipe.vae.enable_tiling()
        if cfg.cpu_offload and self.device.type == "cuda":
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        for module in (pipe.transformer, pipe.vae, pipe.text_encoder):
            module.eval().requires_grad_(False)
        self.pipe, self.cfg, self.dtype = pipe, cfg, dtype
        self.temporal = int(getattr(pipe, "vae_scale_factor_temporal", 4))
        self.spatial = int(getattr(pipe, "vae_scale_factor_spatial", 8))
        self.codec = LatentCodec(pipe.vae, self.device)

    def schedule(self, steps: int | None = None) -> tuple[list[float], object]:
        """Per-step σ (without the final 0) and timesteps for cfg.steps (or `steps`), under the model's flow shift."""
        s = self.pipe.scheduler
        s.set_timesteps(steps or self.cfg.steps, device=self.device)
        return [float(x) for x in s.sigmas[: len(s.timesteps)]], s.timesteps

    def eta_range_warning(self) -> str | None:
        """One line when no step of cfg.steps' schedule has σ in [eta_min, eta_max] (every pair then starts
        outside the range), naming the fewest steps whose schedule has one; None when the grid fits."""
        lo, hi = self.cfg.eta_min, self.cfg.eta_max
        sigmas, _ = self.schedule()
        if sigmas_in_range(sigmas, lo, hi).any():
            return None
        fits = next(
            (n for n in range(self.cfg.steps + 1, 1001) if sigmas_in_range(self.schedule(n)[0], lo, hi).any()), None
        )
        self.schedule()
        nearest = sigmas[nearest_sigma_index(sigmas, (lo + hi) / 2)]
        fix = f"--steps {fits} has one" if fits else "widen --eta-min/--eta-max"
        return (
            f"warning: no step of the {self.cfg.steps}-step schedule has σ in [{lo:g}, {hi:g}]; pairs start at the "
            f"nearest, σ {nearest:.3f}; {fix}."
        )

    def encode_prompt(self, prompt: str):
        """(prompt_embeds, negative_prompt_embeds or None), each (1, L, D), encoded once per pair."""
        with self.torch.no_grad():
            pos, neg = self.pipe.encode_prompt(
                prompt=prompt,
                negative_prompt=self.cfg.negative_prompt,
                do_classifier_free_guidance=self.cfg.guidance > 1.0,
                num_videos_per_prompt=1,
                max_sequence_length=self.cfg.max_sequence_length,
                device=self.device,
            )
        return pos.to(self.dtype), (neg.to(self.dtype) if neg is not None else None)

    def encode_video(self, frames: np.ndarray):
        """uint8 (T, H, W, 3) -> normalised latents (1, C, T', H/8, W/8), the space the transformer works in."""
        return self.codec.encode(frames)

    def decode(self, latents) -> np.ndarray:
        """(B, C, T', h, w) normalised latents -> uint8 (B, T, H, W, 3)."""
        return self.codec.decode(latents)

    def noise(self, seeds: list[int], shape: tuple[int, ...]):
        """One Gaussian draw per seed, made on the CPU so a seed gives the same noise on every device."""
        torch = self.torch
        draws = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds]
        return torch.stack(draws).to(self.device, torch.float32)

    def denoise(self, x, timesteps, start_index: int, pos, neg):
        """Run the scheduler from step `start_index` to 0 on a batch; both videos share every call.

        With CFG the conditional and unconditional passes of the whole batch go through the transformer as one
        batch of 2B.
        """
        torch = self.torch
        sched = self.pipe.scheduler
        sched.set_begin_index(start_index)
        b = x.shape[0]
        cfg_on = neg is not None
        emb = torch.cat([pos.expand(b, -1, -1)] + ([neg.expand(b, -1, -1)] if cfg_on else []))
        for t in timesteps[start_index:]:
            inp = torch.cat([x, x]) if cfg_on else x
            with torch.no_grad():
                v = self.pipe.transformer(
                    hidden_states=inp.to(self.dtype),
                    timestep=t.expand(inp.shape[0]),
                    encoder_hidden_states=emb,
                    return_dict=False,
                )[0].float()
            if cfg_on:
                cond, uncond = v.chunk(2)
                v = uncond + self.cfg.guidance * (cond - uncond)
            x = sched.step(v, t, x, return_dict=False)[0]
        return x

    def latent_shape(self) -> tuple[int, ...]:
        c = self.pipe.transformer.config.in_channels
        t = (self.cfg.num_frames - 1) // self.temporal + 1
        return (c, t, self.cfg.height // self.spatial, self.cfg.width // self.spatial)


# ---------------------------------------------------------------------------------------------- one pair


def make_pair(sampler: Sampler, task: PairTask, cfg: GenerateConfig) -> dict:
    """Generate one pair and write its files; return its row (written by the caller, last)."""
    from densedpo.video import write_video

    sigmas, timesteps = sampler.schedule()
    pos, neg = sampler.encode_prompt(task.prompt)
    noise = sampler.noise([task.seed_a, task.seed_b], sampler.latent_shape())
    if cfg.mode == "sdedit":
        clip = load_clip(task.video, cfg, task.start_s, task.end_s)
        x0 = sampler.encode_video(clip)  # encoded once, shared by both seeds
        start = nearest_sigma_index(sigmas, task.eta, cfg.eta_min, cfg.eta_max)
        start_sigma = sigmas[start]
        x = noise_to_level(x0.expand_as(noise), noise, start_sigma)
    else:
        clip, start = None, 0  # the paper's baseline: two full generations from independent noise
        start_sigma = sigmas[0]
        x = noise
    latents = sampler.denoise(x, timesteps, start, pos, neg)
    video_a, video_b = sampler.decode(latents)

    out, pid = cfg.out, task.pair_id
    rel = {
        "video_a": f"videos/{pid}_a.mp4",
        "video_b": f"videos/{pid}_b.mp4",
        "latents_a": f"latents/{pid}_a.safetensors",
        "latents_b": f"latents/{pid}_b.safetensors",
        "prompt_embeds": f"embeds/{pid}.safetensors",
        "source_video": f"sources/{pid}_source.mp4" if clip is not None else None,
    }
    write_video(out / rel["video_a"], video_a, cfg.fps)
    write_video(out / rel["video_b"], video_b, cfg.fps)
    if clip is not None:
        write_video(out / rel["source_video"], clip, cfg.fps)
    _save_tensors(out / rel["latents_a"], {"latents": latents[0]})
    _save_tensors(out / rel["latents_b"], {"latents": latents[1]})
    _save_tensors(out / rel["prompt_embeds"], {"prompt_embeds": pos[0]})
    return {
        "pair_id": pid,
        "source_id": task.source_id,
        "prompt": task.prompt,
        **rel,
        "num_frames": cfg.num_frames,
        "fps": cfg.fps,
        "height": cfg.height,
        "width": cfg.width,
        "mode": cfg.mode,
        "strength": task.eta,
        "start_sigma": start_sigma,
        "seed_a": task.seed_a,
        "seed_b": task.seed_b,
        "num_inference_steps": cfg.steps,
        "guidance_scale": cfg.guidance,
        "model_id": model_id(cfg.model),
        "lora_sha256": sampler.lora_sha256,
    }


def _save_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))


def _write_row(out: Path, row: dict) -> None:
    """The row goes last, atomically: a pair without its row file is unfinished and is redone."""
    atomic_write_text(out / "rows" / f"{row['pair_id']}.json", json.dumps(row))


def merge_rows(out: Path) -> Path | None:
    """pairs.parquet from every finished row under out/rows (all shards), in pair-id order, no duplicates.

    Under one lock on the table, the rows read inside it: shards that finish together merge one after the
    other, and the last merge holds every shard's rows (never a shard's stale view written over a newer one)."""
    from densedpo.locks import waiting

    with waiting(out / ".pairs.parquet.merge.lock"):
        rows = [json.loads(p.read_text()) for p in finished_files(out / "rows", "*.json")]
        if not rows:
            return None
        df = pd.DataFrame(rows).drop_duplicates("pair_id").sort_values(["source_id", "pair_id"])
        return write_table(df.reset_index(drop=True), out / "pairs.parquet", PAIRS)


# ---------------------------------------------------------------------------------------------- the stage


@dataclass
class GenerateResult:
    pairs_path: Path | None
    made: int
    already_done: int
    skipped: dict[str, str]  # source_id -> reason
    seconds_per_pair: float


def output_lock(cfg: GenerateConfig):
    """One writer per shard of --out (a plain run is shard 0/1; each accelerate/torchrun rank is a shard)."""
    from densedpo.locks import exclusive

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, world = (int(os.environ.get("RANK", "0")), world) if world > 1 else parse_shard(cfg.shard)
    return exclusive(
        cfg.out / f".generate-shard-{rank}-of-{world}.lock",
        f"--out {cfg.out} (shard {rank}/{world})",
        "choose another --out, or split the sources between runs with --shard i/n",
    )


def generate_pairs(cfg: GenerateConfig, console=None, progress: bool = True, on_planned=None) -> GenerateResult:
    """Make this process's pairs into cfg.out (see the module docstring). on_planned() runs once the plan holds a
    clip that can make a pair (the CLI writes its run file there: a run that can make nothing leaves no file)."""
    with output_lock(cfg):
        return _generate_pairs(cfg, console, progress, on_planned or (lambda: None))


def _generate_pairs(cfg: GenerateConfig, console, progress: bool, on_planned) -> GenerateResult:
    from rich.console import Console

    console = console or Console(stderr=True)

    # 1. Plan: this process's share of the sources; finished pairs (row file present) are skipped. A run (not an
    #    accelerate rank, whose peers wait for it) none of whose clips can make a pair stops here, before any file.
    rank, world, state = _distributed(cfg)
    tasks, done = plan_tasks(cfg, rank, world)
    if tasks and state is None:
        check = check_clips(tasks, cfg, until_usable=True)
        if len(check.problems) == len(tasks):
            raise DenseDPOError(nothing_to_make(len(tasks), check, cfg))
    on_planned()

    # 2. Load the pipeline once; say so when the schedule's σ grid misses the η range.
    sampler = Sampler(cfg, device=str(state.device) if state is not None else None) if tasks else None
    warning = sampler.eta_range_warning() if sampler is not None and cfg.mode == "sdedit" else None
    if warning and rank == 0:
        console.print(warning, style="yellow", markup=False, highlight=False, soft_wrap=True)

    # 3. One pair per source: files first, row last.
    skipped: dict[str, str] = {}
    made, t_pairs = 0, 0.0
    with progress_bar(console, "pairs", progress and rank == 0) as bar:
        task_id = bar.add_task("generating", total=len(tasks))
        for task in tasks:
            t0 = time.perf_counter()
            try:
                row = make_pair(sampler, task, cfg)
            except SourceUnusable as e:  # only the clip's own problems are skipped; anything else stops the run
                skipped[task.source_id] = str(e)
            else:
                _write_row(cfg.out, row)
                made += 1
                t_pairs += time.perf_counter() - t0
            bar.advance(task_id)

    # 4. Merge every shard's rows (under accelerate: once, after everyone finished).
    if state is not None:
        state.wait_for_everyone()
    pairs_path = merge_rows(cfg.out) if rank == 0 or state is None else cfg.out / "pairs.parquet"
    return GenerateResult(pairs_path, made, done, skipped, t_pairs / made if made else float("nan"))


def _distributed(cfg: GenerateConfig):
    """(rank, world, accelerate state or None). `accelerate launch` wins over --shard."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState()
        return state.process_index, state.num_processes, state
    rank, world = parse_shard(cfg.shard)
    return rank, world, None


def dry_run_plan(cfg: GenerateConfig) -> dict:
    """The plan, with every clip probed: how many pairs can be made, which clips cannot and what would fit them."""
    rank, world = parse_shard(cfg.shard)
    tasks, done = plan_tasks(cfg, rank, world)
    check = check_clips(tasks, cfg)
    etas = [t.eta for t in tasks if t.eta is not None and t.source_id not in check.problems]
    short = len(check.too_short)
    return {
        "pairs to make": len(tasks) - len(check.problems),
        "already finished": done,
        "clips too short": f"{short}: {check.advice(cfg)}" if short else 0,
        "clips unreadable": len(check.problems) - short,
        "mode": cfg.mode,
        "eta range drawn": f"{min(etas):.3f}–{max(etas):.3f}" if etas else "-",
        "frames / fps / size": f"{cfg.num_frames} / {cfg.fps:g} / {cfg.width}x{cfg.height}",
        "steps / guidance": f"{cfg.steps} / {cfg.guidance:g}",
    }
