"""`densedpo train`: dense Flow-DPO on a diffusers video transformer, recipe style.

train() reads top to bottom: 1 data (join tables, filter, latents/embeddings, split), 2 model (policy with LoRA,
reference = adapters disabled, or a frozen copy for full fine-tuning), 3 optimizer and schedule, 4 resume,
5 loop (shared t and ε per pair, policy and reference errors per latent frame, loss, step, log, validate,
checkpoint), 6 final save.

All randomness of a step (data order, t, ε) is a function of (seed, step, rank), so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from densedpo.errors import DenseDPOError
from densedpo.files import atomic_write_text
from densedpo.progress import progress_bar
from dpo.config import TrainConfig
from dpo.data import Example, join_tables, load_examples, split_val
from dpo.loss import clip_labels, dense_dpo_loss, per_frame_error

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
PROGRESS_UNIT = "steps · loss {task.fields[loss]:.4f} · acc {task.fields[acc]:.2f}"


# ---------------------------------------------------------------------------------------------- randomness


def step_generator(seed: int, step: int, rank: int, micro: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(hash((seed, step, rank, micro)) & 0x7FFF_FFFF_FFFF_FFFF)


def batch_indices(n: int, seed: int, step: int, micro: int, rank: int, world: int, accum: int, bs: int) -> list[int]:
    """Examples of one micro-batch: a flat stream over epochs, each epoch a seeded permutation."""
    first = ((step * accum + micro) * world + rank) * bs
    out = []
    for k in range(first, first + bs):
        epoch, pos = divmod(k, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(hash((seed, epoch)) & 0x7FFF_FFFF))
        out.append(int(perm[pos]))
    return out


def sample_t(gen: torch.Generator, b: int, mean: float, std: float) -> torch.Tensor:
    """Logit-normal t in (0, 1), one per pair (shared by both videos of the pair)."""
    return torch.sigmoid(mean + std * torch.randn(b, generator=gen))


def collate(examples: list[Example], label_mode: str) -> dict:
    labels = torch.stack([e.labels for e in examples])  # (B, T)
    batch = {
        "x0_a": torch.stack([e.latents_a for e in examples]),  # (B, C, T, h, w)
        "x0_b": torch.stack([e.latents_b for e in examples]),
        "emb": torch.stack([e.prompt_embeds for e in examples]),  # (B, L, D)
        "labels": clip_labels(labels) if label_mode == "clip" else labels,
    }
    if label_mode == "dense" and all(e.weights is not None for e in examples):
        batch["weights"] = torch.stack([e.weights for e in examples])  # (B, T)
    return batch


# ---------------------------------------------------------------------------------------------- one step


def pair_errors(model, batch: dict, t: torch.Tensor, noise: torch.Tensor, per_frame: bool = True):
    """Squared velocity errors of both videos, noised with the SAME t and ε: (B, T) each (or (B, 1))."""
    x0 = torch.cat([batch["x0_a"], batch["x0_b"]])  # (2B, C, T, h, w)
    eps = torch.cat([noise, noise])
    tt = torch.cat([t, t]).view(-1, 1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * eps  # rectified flow
    target = eps - x0  # the velocity
    emb = torch.cat([batch["emb"], batch["emb"]])
    pred = model(
        hidden_states=x_t.to(_dtype(model)),
        timestep=torch.cat([t, t]) * 1000,
        encoder_hidden_states=emb.to(_dtype(model)),
        return_dict=False,
    )[0]
    err = per_frame_error(target, pred)  # (2B, C, T, h, w) -> (2B, T)
    if not per_frame:
        err = err.mean(dim=1, keepdim=True)  # vanilla Flow-DPO: one error per clip
    return err.chunk(2)


def _dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def dpo_step(policy, reference, batch: dict, gen: torch.Generator, cfg: TrainConfig, ref_ctx):
    """Loss of one micro-batch; the reference runs without gradient, with the same t and ε."""
    b = batch["x0_a"].shape[0]
    t = sample_t(gen, b, cfg.logit_normal_mean, cfg.logit_normal_std).to(batch["x0_a"].device)
    noise = torch.randn(batch["x0_a"].shape, generator=gen).to(batch["x0_a"].device)
    per_frame = cfg.label_mode == "dense"
    with torch.no_grad(), ref_ctx():
        ref_a, ref_b = pair_errors(reference, batch, t, noise, per_frame)
    pol_a, pol_b = pair_errors(policy, batch, t, noise, per_frame)
    weights = batch.get("weights") if cfg.segment_weight != "none" else None
    return dense_dpo_loss(
        pol_a, pol_b, ref_a, ref_b, batch["labels"], beta=cfg.beta, form=cfg.loss_form, weights=weights
    )


# ---------------------------------------------------------------------------------------------- the stage


@dataclass
class TrainResult:
    out: Path
    steps: int
    history: list[dict]
    val_accuracy: float | None
    counts: dict


def output_lock(cfg: TrainConfig):
    """One run per --out folder (each rank of a distributed run holds its own lock)."""
    from densedpo.locks import exclusive, rank_suffix

    return exclusive(
        Path(cfg.out) / f".train{rank_suffix()}.lock",
        f"--out {cfg.out}",
        "choose another --out (or --resume a checkpoint of the finished run into a new one)",
    )


SampleHook = Callable[[int, object, Path], dict]  # (step, the policy transformer, folder) -> {metric: value, ...}


def train(cfg: TrainConfig, console=None, progress: bool = True, sample_hook: SampleHook | None = None) -> TrainResult:
    """Run the recipe of the module docstring into cfg.out. `sample_hook` samples the current policy when
    cfg.sample_every is set: the app gives it (a stage does not sample with another stage's code); it returns
    metrics for metrics.jsonl and TensorBoard, and `videos` (uint8 (T, H, W, 3) arrays) and `fps` for TensorBoard."""
    if cfg.sample_every and sample_hook is None:
        raise DenseDPOError(
            "-o sample_every needs a sampler: run `densedpo train` (it gives one), or pass sample_hook."
        )
    with output_lock(cfg):
        claim_out(cfg)
        return _train(cfg, console, progress, sample_hook)


RUN_OUTPUTS = ("metrics.jsonl", "tensorboard", "final", "best", "samples")  # plus checkpoint-N; cache/ is kept


def claim_out(cfg: TrainConfig) -> None:
    """An --out that holds a run is continued (--resume), started over (--overwrite), or refused: a plain rerun
    would overwrite its checkpoints and append a second run to its metrics.jsonl."""
    import shutil

    out = Path(cfg.out)
    held = [out / n for n in RUN_OUTPUTS if (out / n).exists()] + sorted(out.glob("checkpoint-*"))
    if not held or cfg.resume is not None:
        return
    if not cfg.overwrite:
        raise DenseDPOError(
            f"--out {out} holds a training run ({held[0].name}): pass --resume {out}/checkpoint-N to continue it, "
            "--overwrite to start over (the latent cache is kept), or choose another --out."
        )
    for path in held:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _train(cfg: TrainConfig, console, progress: bool, sample_hook: SampleHook | None = None) -> TrainResult:
    from accelerate import Accelerator
    from rich.console import Console

    console = console or Console(stderr=True)
    cuda = torch.cuda.is_available()
    mp = ("bf16" if cuda else "no") if cfg.mixed_precision == "auto" else cfg.mixed_precision
    accel = Accelerator(cpu=not cuda, mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum)
    out = Path(cfg.out)

    # 1. Data: join, filter (> 20% non-tie segments), latents and embeddings (encoded once if missing), split.
    kept, segs, counts = join_tables(cfg.pairs, cfg.labels, cfg.min_non_tie_fraction, *cfg.label_rules())
    if accel.is_main_process:
        load_examples(kept, segs, cfg.pairs, out / "cache", cfg.model)  # encodes what is missing, once
    accel.wait_for_everyone()
    examples = load_examples(kept, segs, cfg.pairs, out / "cache", cfg.model)
    train_idx, val_idx = split_val([e.pair_id for e in examples], cfg.val_fraction)
    train_set, val_set = [examples[i] for i in train_idx], [examples[i] for i in val_idx]
    counts.update(train=len(train_set), val=len(val_set))

    # 2. Model: LoRA policy whose reference is the same weights with adapters disabled, or a frozen copy.
    transformer, reference, ref_ctx = _policy_and_reference(cfg)
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]

    # 3. Optimizer: AdamW, linear warm-up then constant, grad clip.
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    policy, opt = accel.prepare(transformer, opt)
    if cfg.full_finetune:
        reference.to(accel.device)

    # 4. Resume: weights, optimizer, schedule, step; the data order and noise follow from the step.
    step, best, bad_evals, history = 0, -1.0, 0, []
    if cfg.resume:
        step, best, bad_evals = _load_checkpoint(Path(cfg.resume), accel.unwrap_model(policy), opt, sched)
    if accel.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    logger = _Logger(out, accel.is_main_process)

    # 5. Loop.
    val_acc, t_start = None, time.perf_counter()
    with progress_bar(console, PROGRESS_UNIT, progress and accel.is_main_process) as bar:
        task = bar.add_task("training", total=cfg.max_steps, completed=step, loss=math.nan, acc=math.nan)
        grad_norm = torch.tensor(0.0)
        while step < cfg.max_steps:
            t_step = time.perf_counter()
            stats, grad_norm = _optimizer_step(cfg, accel, policy, reference, ref_ctx, opt, train_set, step, grad_norm)
            sched.step()
            step += 1
            row = _metrics(stats, accel, step, sched.get_last_lr()[0], grad_norm)  # reads the loss: a device sync
            row["step_seconds"] = time.perf_counter() - t_step
            history.append(row)
            bar.update(task, completed=step, loss=row["loss"], acc=row["implicit_accuracy"])
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                logger.log(row)
            stop = False
            if val_set and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                val_acc = evaluate(accel.unwrap_model(policy), reference, val_set, cfg, ref_ctx, accel)
                logger.log({"step": step, "val_implicit_accuracy": val_acc})
                improved, stop = _rank0_decides(accel, val_acc, best, bad_evals, cfg.early_stopping_patience)
                if improved:
                    best, bad_evals = val_acc, 0
                    _save(out / "best", cfg, accel, policy, opt, sched, step, best, bad_evals)
                else:
                    bad_evals += 1
            if step % cfg.save_every == 0 or step == cfg.max_steps or stop:
                _save(out / f"checkpoint-{step}", cfg, accel, policy, opt, sched, step, best, bad_evals)
            if cfg.sample_every and step % cfg.sample_every == 0 and accel.is_main_process:
                _sample_now(sample_hook, step, accel.unwrap_model(policy), out, logger, console)
            if stop:
                console.print(f"early stopping at step {step}: no better val accuracy for {bad_evals} evaluations")
                break

    # 6. Final: LoRA (or full weights) loadable by diffusers, plus a summary.
    _save(out / "final", cfg, accel, policy, opt, sched, step, best, bad_evals)
    logger.log({"step": step, "seconds": time.perf_counter() - t_start, **counts})
    logger.close()
    accel.wait_for_everyone()
    accel.end_training()
    return TrainResult(out, step, history, val_acc, counts)


def _policy_and_reference(cfg: TrainConfig):
    """(policy, reference, ref_ctx): LoRA adapters on the transformer, the reference being the same module with
    adapters disabled inside ref_ctx(); or, for full fine-tuning, a frozen copy and a no-op context."""
    transformer = _load_transformer(cfg.model)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    if cfg.full_finetune:
        reference = copy.deepcopy(transformer).requires_grad_(False).eval()
        transformer.requires_grad_(True)
        return transformer, reference, contextlib.nullcontext
    from peft import LoraConfig

    transformer.requires_grad_(False)
    torch.manual_seed(cfg.seed)  # LoRA A is initialised from the global RNG
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha or cfg.lora_rank,
        init_lora_weights=True,
        target_modules=LORA_TARGETS,
    )
    transformer.add_adapter(lora)
    if cfg.init_lora is not None:  # a later round: the policy starts where the previous one ended
        _load_lora_into(transformer, cfg.init_lora, "default", cfg.lora_rank)
    if cfg.reference == "previous":  # a second, frozen adapter holding the previous round's LoRA
        with warnings.catch_warnings():  # peft warns that a second adapter is a second adapter
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            transformer.add_adapter(lora, adapter_name="previous")
        _load_lora_into(transformer, cfg.init_lora, "previous", cfg.lora_rank)
        _activate(transformer, "default")
        return transformer, transformer, lambda: _adapter_active(transformer, "previous")
    return transformer, transformer, lambda: _adapters_disabled(transformer)  # no second copy in memory


def _load_lora_into(transformer, folder: Path, adapter: str, rank: int) -> None:
    """A LoRA folder `train` wrote (diffusers' format) into the adapter `adapter` (same targets and rank)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from densedpo.lora import LORA_FILE

    raw = load_file(str(Path(folder) / LORA_FILE))
    state = {k.removeprefix("transformer."): v for k, v in raw.items()}
    ranks = {v.shape[0] for k, v in state.items() if "lora_A" in k}
    if ranks != {rank}:
        raise DenseDPOError(f"-o init_lora {folder} has LoRA rank {sorted(ranks)}; pass -o lora_rank={min(ranks)}.")
    result = set_peft_model_state_dict(transformer, state, adapter_name=adapter)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise DenseDPOError(f"-o init_lora {folder} does not fit this model (e.g. {unexpected[0]}): another model?")


def _activate(transformer, adapter: str) -> None:
    """Make `adapter` the one every LoRA layer applies (peft marks only the active adapter trainable)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(adapter)


class _adapter_active:
    """The reference pass through another adapter (-o reference=previous); back to the trained one after."""

    def __init__(self, model, adapter: str):
        self.model, self.adapter = model, adapter

    def __enter__(self):
        _activate(self.model, self.adapter)

    def __exit__(self, *exc):
        _activate(self.model, "default")
        return False


def _optimizer_step(cfg: TrainConfig, accel, policy, reference, ref_ctx, opt, train_set, step: int, grad_norm):
    """One optimizer step over cfg.grad_accum micro-batches; the batch and noise are functions of (seed, step,
    rank, micro), so a resumed run sees exactly what an uninterrupted one would. Returns (step results, grad norm)."""
    rank, world = accel.process_index, accel.num_processes
    params = [p for p in policy.parameters() if p.requires_grad]
    stats = []
    for micro in range(cfg.grad_accum):
        idx = batch_indices(len(train_set), cfg.seed, step, micro, rank, world, cfg.grad_accum, cfg.batch_size)
        batch = _to(collate([train_set[i] for i in idx], cfg.label_mode), accel.device)
        gen = step_generator(cfg.seed, step, rank, micro)
        with accel.accumulate(policy), accel.autocast():
            ref = reference if cfg.full_finetune else accel.unwrap_model(policy)
            res = dpo_step(policy, ref, batch, gen, cfg, ref_ctx)
            accel.backward(res.loss)
            if accel.sync_gradients:
                grad_norm = accel.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        stats.append(res)
    return stats, grad_norm


def evaluate(model, reference, val_set: list[Example], cfg: TrainConfig, ref_ctx, accel, draws: int = 4) -> float:
    """Implicit accuracy on held-out pairs, over `draws` fixed (t, ε) per pair: the same every evaluation.

    Always per latent frame with the dense labels, whatever label_mode trained the model, so dense and clip-level
    runs are compared on the same measure.
    """
    import dataclasses

    cfg = dataclasses.replace(cfg, label_mode="dense", loss_form="dense")
    was_training = model.training
    model.eval()
    hits, total = 0.0, 0.0
    rank, world = accel.process_index, accel.num_processes
    with torch.no_grad(), accel.autocast():
        for i in range(rank, len(val_set), world):  # each rank its share; the draws follow the pair's index
            batch = _to(collate([val_set[i]], cfg.label_mode), accel.device)
            for d in range(draws):
                gen = step_generator(cfg.seed + 1, i, 0, d)
                res = dpo_step(model, reference if cfg.full_finetune else model, batch, gen, cfg, ref_ctx)
                hits += float(res.implicit_accuracy) * float(res.num_decided)
                total += float(res.num_decided)
    model.train(was_training)
    sums = torch.tensor([hits, total], dtype=torch.float64, device=accel.device)
    if world > 1:
        sums = accel.reduce(sums, reduction="sum")
    return float(sums[0] / sums[1]) if sums[1] else float("nan")


def _rank0_decides(accel, val_acc: float, best: float, bad_evals: int, patience: int | None) -> tuple[bool, bool]:
    """(improved, stop early): decided on rank 0 and broadcast, so every rank takes the same branch around the
    checkpoint barriers (ranks deciding for themselves deadlock when they disagree by one ulp)."""
    improved = val_acc > best
    stop = not improved and patience is not None and bad_evals + 1 >= patience
    flags = torch.tensor([float(improved), float(stop)], device=accel.device)
    if accel.num_processes > 1:
        from accelerate.utils import broadcast

        flags = broadcast(flags, from_process=0)
    return bool(flags[0]), bool(flags[1])


# ---------------------------------------------------------------------------------------------- helpers


def _load_transformer(model: str):
    from diffusers import AutoModel

    try:
        return AutoModel.from_pretrained(model, subfolder="transformer", dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise DenseDPOError(f"cannot load the transformer of --model {model!r}: {e}") from None


class _adapters_disabled:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.model.disable_adapters()

    def __exit__(self, *exc):
        self.model.enable_adapters()
        return False


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _metrics(stats, accel, step: int, lr: float, grad_norm) -> dict:
    vals = torch.tensor(
        [
            [
                float(s.loss.detach()),
                float(s.implicit_accuracy) * float(s.num_decided),
                float(s.margin) * float(s.num_decided),
                float(s.num_decided),
            ]
            for s in stats
        ],
        device=accel.device,
    ).sum(0)
    vals = accel.reduce(vals, reduction="sum")  # sync point: metrics over all processes
    n = max(float(vals[3]), 1.0)
    return {
        "step": step,
        "loss": float(vals[0]) / (len(stats) * accel.num_processes),
        "implicit_accuracy": float(vals[1]) / n,
        "margin": float(vals[2]) / n,
        "decided_frames": int(vals[3]),
        "lr": lr,
        "grad_norm": float(grad_norm),
    }


def _save(path: Path, cfg, accel, policy, opt, sched, step: int, best: float, bad_evals: int) -> None:
    accel.wait_for_everyone()
    if not accel.is_main_process:
        return
    from safetensors.torch import save_file

    model = accel.unwrap_model(policy)
    path.mkdir(parents=True, exist_ok=True)
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(path / "trainable.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, path / "optimizer.pt")
    if cfg.full_finetune:
        model.save_pretrained(path / "transformer")
    else:
        _save_lora(model, cfg.model, path)
    state = {"step": step, "best_val_accuracy": best, "bad_evals": bad_evals}
    atomic_write_text(path / "trainer_state.json", json.dumps(state))  # last: a checkpoint without it is unfinished


def _save_lora(model, model_id: str, path: Path) -> None:
    """LoRA weights in diffusers' format: `pipe.load_lora_weights(path)` loads them."""
    import diffusers
    from peft.utils import get_peft_model_state_dict

    try:
        cls_name = diffusers.DiffusionPipeline.load_config(model_id)["_class_name"]
        pipeline_cls = getattr(diffusers, cls_name)
    except (OSError, KeyError, AttributeError):
        pipeline_cls = diffusers.WanPipeline
    pipeline_cls.save_lora_weights(path, transformer_lora_layers=get_peft_model_state_dict(model))


def _load_checkpoint(path: Path, model, opt, sched) -> tuple[int, float, int]:
    from safetensors.torch import load_file

    state = json.loads((path / "trainer_state.json").read_text())
    trainable = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = sorted(set(trainable) ^ {n for n, p in params.items() if p.requires_grad})
    missing += sorted(n for n, v in trainable.items() if n in params and v.shape != params[n].shape)
    if missing:
        raise DenseDPOError(
            f"--resume {path} does not match this model/config (e.g. parameter {missing[0]}: "
            "another lora_rank, target module or model?)."
        )
    with torch.no_grad():
        for n, v in trainable.items():
            params[n].copy_(v)
    o = torch.load(path / "optimizer.pt", weights_only=False)
    opt.load_state_dict(o["optimizer"])
    sched.load_state_dict(o["scheduler"])
    return int(state["step"]), float(state["best_val_accuracy"]), int(state["bad_evals"])


def _sample_now(hook: SampleHook, step: int, model, out: Path, logger, console) -> None:
    """Samples of the current policy (eval mode, no grad), their metrics logged, their videos to TensorBoard."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        result = hook(step, model, out / "samples" / f"step-{step}")
    model.train(was_training)
    videos, fps = result.pop("videos", []), result.pop("fps", 16.0)
    logger.log({"step": step, **result})
    for i, video in enumerate(videos):
        logger.video(f"samples/{i}", video, fps, step, console)


class _Logger:
    """JSONL always; TensorBoard too when it is installed. Only the main process writes."""

    def __init__(self, out: Path, main: bool):
        self.f = open(out / "metrics.jsonl", "a") if main else None
        self.tb = None
        self.warned_video = False
        if main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                pass

    def log(self, row: dict) -> None:
        if self.f is None:
            return
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        if self.tb is not None and "step" in row:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, row["step"])

    def video(self, tag: str, video, fps: float, step: int, console) -> None:
        """A uint8 (T, H, W, 3) video to TensorBoard: as a video where torch can (its add_video needs
        `moviepy.editor`, i.e. moviepy < 2; without it torch prints a line and logs nothing), else as a strip of
        frames, with one warning."""
        if self.tb is None:
            return
        try:
            import moviepy.editor  # noqa: F401

            clip = torch.from_numpy(video).permute(0, 3, 1, 2)[None]  # (T, H, W, 3) -> (1, T, 3, H, W)
            self.tb.add_video(tag, clip, step, fps=int(round(fps)))
        except ImportError:
            if not self.warned_video:
                console.print(
                    "[yellow]warning:[/] TensorBoard videos need moviepy < 2 (`moviepy.editor`); logging frame strips "
                    "as images instead."
                )
                self.warned_video = True
            frames = video[:: max(1, len(video) // 8)][:8]
            self.tb.add_image(tag, np.concatenate(list(frames), axis=1), step, dataformats="HWC")

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        if self.tb is not None:
            self.tb.close()
