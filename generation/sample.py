"""`densedpo sample`: videos from prompts with a model and, optionally, a LoRA that `train` made, paired by seed.

sample() reads top to bottom: 1 plan (prompts x seeds_per_prompt; this shard's share; finished samples are
skipped), 2 load the pipeline (and the LoRA) once, 3 per prompt: encode the caption once, draw each sample's
initial noise on a CPU generator from its own seed, denoise the prompt's samples as one batch, write the videos
(and latents), then each row last, 4 merge every shard's rows into samples.parquet under one lock.

Pairing is the point: the seed of sample (prompt_id, k) is a function of --seed, prompt_id and k only, and the
noise is drawn on the CPU, so a base run and a policy run start from identical noise on any device, process
count, shard or resume; `evaluate` compares them sample by sample.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.files import atomic_write_text, file_sha256, finished_files
from densedpo.lora import check_lora, lora_digest
from densedpo.progress import progress_bar
from densedpo.tables import SAMPLES, read_table, write_table
from generation.engine import Sampler, check_sampler_settings, model_id, parse_shard

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts" / "eval"
PROMPT_SETS = {"vbench-dynamic": "vbench_dynamic_degree.txt", "vbench-all": "vbench_all_dimension.txt"}


@dataclass
class SampleConfig:
    prompts: str | None
    model: str
    out: Path = Path("samples/base")
    lora: Path | None = None
    seeds_per_prompt: int = 1
    seed: int = 0
    steps: int = 40
    guidance: float = 8.0
    num_frames: int = 81
    fps: float = 16.0
    height: int = 480
    width: int = 832
    negative_prompt: str = ""
    max_sequence_length: int = 512
    shard: str | None = None
    cpu_offload: bool = False
    vae_tiling: bool = False
    dtype: str = "auto"
    save_latents: bool = False
    max_prompts: int | None = None
    # t2v: from pure noise. sdedit: each held-out clip of --sources noised to its η and denoised with the two seeds of
    # its pair (k = 0, 1), exactly as `generate` draws them: base and policy edit the same clip from the same noise.
    mode: str = "t2v"
    sources: Path | None = None
    eta_min: float = 0.65
    eta_max: float = 0.8
    offset_s: float = 0.0

    def check(self) -> None:
        if self.mode not in ("t2v", "sdedit"):
            raise DenseDPOError(f"--mode must be t2v or sdedit, got {self.mode!r}.")
        if self.mode == "t2v" and not self.prompts:
            raise DenseDPOError("--prompts is required: vbench-dynamic, vbench-all, a .txt or a .parquet.")
        if self.mode == "sdedit" and (self.sources is None or self.seeds_per_prompt > 2):
            raise DenseDPOError(
                "--mode sdedit needs --sources (held-out clips: source_id, video, prompt) and at most 2 "
                "--seeds-per-prompt (the two seeds of a pair)."
            )
        if self.mode == "sdedit" and not 0.0 < self.eta_min <= self.eta_max <= 1.0:
            raise DenseDPOError(f"need 0 < --eta-min <= --eta-max <= 1, got {self.eta_min} and {self.eta_max}.")
        if self.seeds_per_prompt < 1:
            raise DenseDPOError(f"--seeds-per-prompt must be at least 1, got {self.seeds_per_prompt}.")
        check_sampler_settings(self)
        check_lora(self.lora)
        parse_shard(self.shard)

    def run_settings(self) -> dict:
        """What else changes a sample: its seed rule, mode and noise levels, where its prompts come from, and the
        file-name scheme. Every finished row of a folder must carry the same (check_same_run)."""
        prompts = (
            self.prompts if self.prompts in PROMPT_SETS or self.prompts is None else str(Path(self.prompts).resolve())
        )
        return {
            "run_seed": self.seed,
            "mode": self.mode,
            "eta_min": self.eta_min if self.mode == "sdedit" else None,
            "eta_max": self.eta_max if self.mode == "sdedit" else None,
            "offset_s": self.offset_s if self.mode == "sdedit" else None,
            "prompt_source": str(Path(self.sources).resolve()) if self.mode == "sdedit" else prompts,
            "name_scheme": NAME_SCHEME,
        }

    def settings(self) -> dict:
        """What must match between two sample folders for `evaluate` to compare them."""
        return {
            "num_frames": self.num_frames,
            "fps": self.fps,
            "height": self.height,
            "width": self.width,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "negative_prompt": self.negative_prompt,
        }


def sample_seed(seed: int, prompt_id: str, k: int) -> int:
    """The seed of sample k of a prompt: a function of (--seed, prompt_id, k) only."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}:{k}".encode()).digest()[:4], "big") % 2**31


NAME_SCHEME = 2  # sample_name's rule; rows written under another (v1 cut ids at 80 characters) are refused


def sample_name(prompt_id: str) -> str:
    """A file-name stem unique per prompt_id: the id itself when it is short and plain, else its plain characters
    (cut at 60) + '~' + 10 hex digits of its SHA-256. Plain ids never hold '~', so two ids never share a stem."""
    text = str(prompt_id)
    plain = re.sub(r"[^A-Za-z0-9_-]", "_", text)[:60]
    if plain == text and text:
        return text
    return f"{plain}~{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def load_prompts_of(cfg: SampleConfig) -> pd.DataFrame:
    """prompt_id, prompt (and, in sdedit mode, the clip's video path) of a run."""
    if cfg.mode != "sdedit":
        return load_prompts(cfg.prompts)
    from densedpo.tables import SOURCES, resolve_path
    from generation.engine import source_span

    src = read_table(cfg.sources, SOURCES)
    videos = [str(resolve_path(cfg.sources, v)) for v in src["video"]]
    spans = [source_span(r) for r in src.itertuples(index=False)]
    return pd.DataFrame(
        {
            "prompt_id": src["source_id"].astype(str),
            "prompt": src["prompt"],
            "video": videos,
            "start_s": [a for a, _ in spans],
            "end_s": [b for _, b in spans],
        }
    )


def load_prompts(spec: str) -> pd.DataFrame:
    """prompt_id, prompt from a named set (vbench-dynamic, vbench-all), a text file (one prompt per line; ids
    p0000, p0001, ... by line) or a parquet table with prompt_id and prompt."""
    path = PROMPTS_DIR / PROMPT_SETS[spec] if spec in PROMPT_SETS else Path(spec)
    if not path.is_file():
        names = ", ".join(PROMPT_SETS)
        raise DenseDPOError(f"--prompts {spec}: no such file or prompt set; give a .txt, a .parquet or one of {names}.")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        missing = [c for c in ("prompt_id", "prompt") if c not in df.columns]
        if missing:
            raise DenseDPOError(
                f"--prompts {path} lacks column(s) {', '.join(missing)}; it needs prompt_id and prompt."
            )
        df = df[["prompt_id", "prompt"]].astype(str)
    else:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        df = pd.DataFrame([(f"p{i:04d}", ln) for i, ln in enumerate(lines) if ln], columns=["prompt_id", "prompt"])
    if df.empty:
        raise DenseDPOError(f"--prompts {path} holds no prompt.")
    twice = df["prompt_id"][df["prompt_id"].duplicated()]
    if len(twice):
        raise DenseDPOError(f"--prompts {path}: prompt_id {twice.iloc[0]!r} appears twice; ids must be unique.")
    return df.reset_index(drop=True)


@dataclass
class SampleTask:
    prompt_id: str
    prompt: str
    ks: list[int] = field(default_factory=list)  # the samples of this prompt still to make
    video: str | None = None  # sdedit: the clip, and its span in its file (sources.parquet's start_s / end_s)
    start_s: float = 0.0
    end_s: float | None = None


def plan_samples(cfg: SampleConfig, rank: int = 0, world: int = 1) -> tuple[list[SampleTask], int]:
    """(this shard's prompts with their missing samples, samples already finished). Prompts split modulo world."""
    prompts = load_prompts_of(cfg)
    if cfg.max_prompts is not None:
        prompts = prompts.iloc[: cfg.max_prompts]
    tasks, done = [], 0
    for i, row in enumerate(prompts.itertuples(index=False)):
        if i % world != rank:
            continue
        ks = [k for k in range(cfg.seeds_per_prompt) if not _row_path(cfg.out, row.prompt_id, k).exists()]
        done += cfg.seeds_per_prompt - len(ks)
        if ks:
            span = (getattr(row, "start_s", 0.0), getattr(row, "end_s", None))
            end = None if span[1] is None or span[1] != span[1] else span[1]
            tasks.append(SampleTask(str(row.prompt_id), str(row.prompt), ks, getattr(row, "video", None), span[0], end))
    return tasks, done


def _row_path(out: Path, prompt_id: str, k: int) -> Path:
    return out / "rows" / f"{sample_name(prompt_id)}-{k}.json"


def make_samples(sampler: Sampler, task: SampleTask, cfg: SampleConfig, lora_sha: str | None) -> list[dict]:
    """Every missing sample of one prompt, as one batch from pure noise; files first, the rows are returned."""
    from densedpo.video import write_video
    from generation.engine import _save_tensors

    sigmas, timesteps = sampler.schedule()
    pos, neg = sampler.encode_prompt(task.prompt)
    if cfg.mode == "sdedit":  # generate's η and pair seeds for this clip; the same start σ rule
        from generation.engine import load_clip
        from generation.sdedit import nearest_sigma_index, noise_to_level, pair_randomness

        eta, seed_a, seed_b = pair_randomness(cfg.seed, task.prompt_id, cfg.eta_min, cfg.eta_max)
        seeds = [(seed_a, seed_b)[k] for k in task.ks]
        start = nearest_sigma_index(sigmas, eta, cfg.eta_min, cfg.eta_max)
        noise = sampler.noise(seeds, sampler.latent_shape())
        x0 = sampler.encode_video(load_clip(Path(task.video), cfg, task.start_s, task.end_s))
        x = noise_to_level(x0.expand_as(noise), noise, sigmas[start])
        extra = {
            "strength": eta,
            "start_sigma": sigmas[start],
            "source_sha256": file_sha256(task.video),  # evaluate pairs only samples of the same clip and span
            "start_s": task.start_s,
            "end_s": task.end_s,
        }
    else:
        seeds = [sample_seed(cfg.seed, task.prompt_id, k) for k in task.ks]
        x, start, extra = sampler.noise(seeds, sampler.latent_shape()), 0, {}
    latents = sampler.denoise(x, timesteps, start, pos, neg)
    videos = sampler.decode(latents)
    rows = []
    for k, seed, video, z in zip(task.ks, seeds, videos, latents):
        name = f"{sample_name(task.prompt_id)}-{k}"
        write_video(cfg.out / f"{name}.mp4", video, cfg.fps)
        rel_latents = None
        if cfg.save_latents:
            rel_latents = f"latents/{name}.safetensors"
            _save_tensors(cfg.out / rel_latents, {"latents": z})
        rows.append(
            {
                "prompt_id": task.prompt_id,
                "prompt": task.prompt,
                "k": k,
                "seed": seed,
                "video": f"{name}.mp4",
                "model_id": model_id(cfg.model),
                "lora": str(Path(cfg.lora).resolve()) if cfg.lora is not None else None,
                "lora_sha256": lora_sha,
                **cfg.settings(),
                **cfg.run_settings(),
                "latents": rel_latents,
                **extra,
            }
        )
    return rows


def merge_samples(out: Path) -> Path | None:
    """samples.parquet from every finished row under out/rows (all shards), under one lock on the table."""
    from densedpo.locks import waiting

    with waiting(out / ".samples.parquet.merge.lock"):
        rows = [json.loads(p.read_text()) for p in finished_files(out / "rows", "*.json")]
        if not rows:
            return None
        df = pd.DataFrame(rows).drop_duplicates(["prompt_id", "k"]).sort_values(["prompt_id", "k"])
        return write_table(df.reset_index(drop=True), out / "samples.parquet", SAMPLES)


@dataclass
class SampleResult:
    samples_path: Path | None
    made: int
    already_done: int
    seconds_per_sample: float


def output_lock(cfg: SampleConfig):
    from densedpo.locks import exclusive

    rank, world = parse_shard(cfg.shard)
    what = f"--out {cfg.out} (shard {rank}/{world})"
    return exclusive(cfg.out / f".sample-shard-{rank}-of-{world}.lock", what, "choose another --out or --shard")


def sample(cfg: SampleConfig, console=None, progress: bool = True) -> SampleResult:
    """Make this shard's samples into cfg.out (see the module docstring)."""
    from rich.console import Console

    console = console or Console(stderr=True)
    with output_lock(cfg):
        # 1. Plan (a folder holds the samples of one model, LoRA and settings: resuming never mixes two).
        lora_sha = lora_digest(cfg.lora)
        check_same_run(cfg, lora_sha)
        rank, world = parse_shard(cfg.shard)
        tasks, done = plan_samples(cfg, rank, world)
        # 2. Load once (the LoRA as `train` saved it, through the pipeline's own load_lora_weights).
        sampler = Sampler(cfg) if tasks else None
        # 3. Sample.
        made, t0 = 0, time.perf_counter()
        with progress_bar(console, "samples", progress) as bar:
            task_id = bar.add_task("sampling", total=sum(len(t.ks) for t in tasks))
            for task in tasks:
                for row in make_samples(sampler, task, cfg, lora_sha):
                    atomic_write_text(_row_path(cfg.out, row["prompt_id"], row["k"]), json.dumps(row))
                    made += 1
                    bar.advance(task_id)
        seconds = time.perf_counter() - t0
        # 4. Merge every shard's rows.
        path = merge_samples(cfg.out)
    return SampleResult(path, made, done, seconds / made if made else float("nan"))


def check_same_run(cfg: SampleConfig, lora_sha: str | None) -> None:
    """Refuse to resume into a folder whose samples came from another model, LoRA (by content) or settings: the
    finished samples would be skipped and the folder would mix two models."""
    now = {"model_id": model_id(cfg.model), "lora_sha256": lora_sha, **cfg.settings(), **cfg.run_settings()}
    for path in finished_files(cfg.out / "rows", "*.json"):
        row = json.loads(path.read_text())
        if row.get("name_scheme") != NAME_SCHEME:
            raise DenseDPOError(
                f"--out {cfg.out} was written by an older densedpo (sample {path.name}: its file names may collide); "
                "choose another --out, or delete that folder to sample it again."
            )
        for key, value in now.items():
            if row.get(key) != value:
                raise DenseDPOError(
                    f"--out {cfg.out} holds samples with {key} {row.get(key)!r}, this run has {value!r} (sample "
                    f"{path.stem}): choose another --out (or delete that folder to start over)."
                )


def samples_table_path(folder: Path) -> Path:
    """A sample folder's table: samples.parquet inside it, or the path itself when it names the table."""
    path = Path(folder)
    return path / "samples.parquet" if path.is_dir() else path


def read_samples(folder: Path) -> pd.DataFrame:
    """A sample folder's table (samples.parquet inside it, or the table's own path)."""
    path = samples_table_path(folder)
    if not path.is_file():
        raise DenseDPOError(f"{folder} holds no samples.parquet: run `densedpo sample --out {folder}` first.")
    return read_table(path, SAMPLES)
