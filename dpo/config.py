"""`densedpo train`'s settings: every key, its default and its one-line help (`train --help` lists them from here).

Kept apart from dpo/train.py so that reading the settings (help, dry runs, run files) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from densedpo.config import key, one_shot
from densedpo.errors import DenseDPOError
from densedpo.tables import MAJORITY, MIN_NON_TIE_FRACTION
from dpo.segments import SEGMENT_WEIGHTS

FORMS = ("dense", "eq7")  # the loss forms dpo/loss.py implements
REFERENCES = ("base", "previous")  # -o reference: the base model, or base + the previous round's LoRA


@dataclass
class TrainConfig:
    pairs: Path
    labels: Path
    model: str
    out: Path = key(Path("runs/densedpo"), "run folder: checkpoints, metrics.jsonl, TensorBoard")
    beta: float = key(500.0, "DPO temperature β (the paper's Flow-DPO value)")
    loss_form: str = key("dense", "dense (per-segment, App. E) or eq7")
    label_mode: str = key("dense", "dense: a label per latent frame; clip: one majority label per pair (Flow-DPO)")
    lr: float = key(1e-5, "learning rate (AdamW)")
    warmup_steps: int = key(250, "linear warm-up steps, then constant")
    max_steps: int = key(1000, "optimizer steps")
    batch_size: int = key(1, "pairs per process per micro-step")
    grad_accum: int = key(1, "micro-steps per optimizer step")
    max_grad_norm: float = key(1.0, "gradient clipping")
    weight_decay: float = key(0.0, "AdamW weight decay")
    adam_beta1: float = key(0.9, "AdamW β1")
    adam_beta2: float = key(0.999, "AdamW β2")
    lora_rank: int = key(128, "LoRA rank (attention q, k, v, out)")
    lora_alpha: float | None = key(None, "LoRA alpha (none: the rank)")
    full_finetune: bool = key(False, "train every weight (the reference is a frozen copy) instead of LoRA")
    init_lora: Path | None = key(None, "start the LoRA from this one (a previous round's run/final; same lora_rank)")
    reference: str = key("base", "the DPO reference: base (the paper) or previous (base + -o init_lora, frozen)")
    gradient_checkpointing: bool = key(False, "recompute activations to save memory")
    mixed_precision: str = key("auto", "auto (bf16 on CUDA, no on CPU), no, bf16 or fp16")
    min_non_tie_fraction: float = key(MIN_NON_TIE_FRACTION, "a pair trains when more of its segments are decided")
    judge: str | None = key(None, "a table of several judges: whose rows (none: the jury's)")
    annotator: str | None = key(None, "a human table of several annotators: whose rows")
    annotators: str | None = key(None, "majority: the annotators' majority vote per segment")
    segment_weight: str = key("none", "each decided segment's weight in the loss: none (the paper), confidence, margin")
    val_fraction: float = key(0.1, "share of pairs held out for validation (by pair id)")
    eval_every: int = key(50, "steps between validations")
    save_every: int = key(250, "steps between checkpoints")
    log_every: int = key(10, "steps between log lines")
    early_stopping_patience: int | None = key(None, "validations without a better accuracy before stopping")
    logit_normal_mean: float = key(0.0, "timestep sampling: logit-normal mean")
    logit_normal_std: float = key(1.0, "timestep sampling: logit-normal std")
    seed: int = key(0, "data order, timesteps and noise derive from it (resumes exactly)")
    resume: Path | None = one_shot(None, "a checkpoint folder to continue from (--resume)")
    overwrite: bool = one_shot(False, "start over in an --out that holds a run (--overwrite)")
    sample_every: int | None = key(None, "sample the current LoRA every N steps into OUT/samples/step-N/")
    sample_prompts: str | None = key(None, "prompts for those samples: a prompt set name, .txt or .parquet")
    sample_seeds: str = key("0", "sample indices k (the pairing rule of `densedpo sample`), e.g. 0,1")

    def label_rules(self) -> tuple[str | None, str | None, str]:
        """join_tables' rules: whose rows (judge, annotator) and each segment's weight."""
        return self.judge, self.who(), self.segment_weight

    def who(self) -> str | None:
        """The annotator rule for join_tables: a name, "majority", or None (the table has one)."""
        return MAJORITY if self.annotators else self.annotator

    def check(self) -> None:
        if self.loss_form not in FORMS:
            raise DenseDPOError(f"loss_form must be one of {', '.join(FORMS)}, got {self.loss_form!r}.")
        if self.label_mode not in ("dense", "clip"):
            raise DenseDPOError(f"label_mode must be dense or clip, got {self.label_mode!r}.")
        for k in ("max_steps", "batch_size", "grad_accum", "eval_every", "save_every", "log_every", "lora_rank"):
            if getattr(self, k) < 1:
                raise DenseDPOError(f"{k} must be at least 1, got {getattr(self, k)}.")
        if self.lr <= 0 or self.beta <= 0:
            raise DenseDPOError("lr and beta must be positive.")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise DenseDPOError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}.")
        if self.sample_every is not None and (self.sample_every < 1 or not self.sample_prompts):
            raise DenseDPOError("-o sample_every=N needs N >= 1 and -o sample_prompts=FILE (or a prompt set name).")
        if not all(k.strip().isdigit() for k in str(self.sample_seeds).split(",")):
            raise DenseDPOError(f"-o sample_seeds must be sample indices such as 0,1; got {self.sample_seeds!r}.")
        if self.segment_weight not in SEGMENT_WEIGHTS:
            raise DenseDPOError(
                f"-o segment_weight must be one of {', '.join(SEGMENT_WEIGHTS)}, got {self.segment_weight!r}."
            )
        if self.segment_weight != "none" and (self.loss_form != "dense" or self.label_mode != "dense"):
            raise DenseDPOError(
                "-o segment_weight weighs dense per-frame terms: use it with loss_form=dense, label_mode=dense."
            )
        if self.annotators not in (None, MAJORITY) or (self.annotators and self.annotator):
            raise DenseDPOError(
                f"-o annotators can only be {MAJORITY} (and not with -o annotator), got {self.annotators!r}."
            )
        if self.reference not in REFERENCES:
            raise DenseDPOError(f"-o reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}.")
        if self.reference == "previous" and self.init_lora is None:
            raise DenseDPOError("-o reference=previous needs -o init_lora=PATH (the previous round's LoRA).")
        if self.init_lora is not None:
            from densedpo.lora import check_lora

            if self.full_finetune:
                raise DenseDPOError("-o init_lora starts a LoRA: drop -o full_finetune (or -o init_lora).")
            check_lora(self.init_lora, "-o init_lora")
        if self.resume is not None and not (Path(self.resume) / "trainer_state.json").exists():
            raise DenseDPOError(f"--resume {self.resume} is not a densedpo checkpoint (no trainer_state.json).")
