"""Cost of dense labels and of the LoRA-disabled reference, on a small random Wan 2.1 transformer (CPU).

Side by side in one run:
  (1) step time of a dense Flow-DPO step (per-latent-frame errors and labels) vs a vanilla Flow-DPO step
      (clip-averaged errors, one label), same model, batch, t and noise, alternating; target ratio <= 1.05;
  (2) peak memory (max RSS of a fresh process running 3 steps) with LoRA whose reference is the same model
      with adapters disabled vs a full frozen copy of the transformer as reference.

  python benchmarks/train_step.py
  python benchmarks/train_step.py --layers 8 --dim 512 --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import report  # noqa: E402


def build(layers: int, dim: int, heads: int):
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=dim // heads,
        in_channels=16,
        out_channels=16,
        text_dim=64,
        freq_dim=256,
        ffn_dim=dim * 2,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )


def batch(b: int, t: int, hw: int):
    import torch

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(-1, 2, (b, t), generator=g)
    return {
        "x0_a": torch.randn(b, 16, t, hw, hw, generator=g),
        "x0_b": torch.randn(b, 16, t, hw, hw, generator=g),
        "emb": torch.randn(b, 16, 64, generator=g),
        "labels": labels,
    }


def run_memory(args, reference: str) -> None:
    """Child process: 3 training steps, then print max RSS in MiB (Linux reports ru_maxrss in KiB)."""
    import torch
    from peft import LoraConfig

    from dpo.train import LORA_TARGETS, TrainConfig, _adapters_disabled, dpo_step

    model = build(args.layers, args.dim, args.heads)
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=LORA_TARGETS))
    if reference == "copy":
        ref = copy.deepcopy(model)
        ref.disable_adapters()
        ctx = contextlib.nullcontext
    else:
        ref = model

        def ctx():
            return _adapters_disabled(model)

    cfg = TrainConfig(pairs=Path("-"), labels=Path("-"), model="-")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    b = batch(args.batch, args.frames, args.hw)
    for s in range(3):
        out = dpo_step(model, ref, b, torch.Generator().manual_seed(s), cfg, ctx)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--hw", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--mem-layers", type=int, default=8, help="transformer depth of the memory comparison")
    ap.add_argument("--mem-dim", type=int, default=1024, help="transformer width of the memory comparison")
    ap.add_argument("--memory-child", choices=["disabled", "copy"], help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    args = ap.parse_args()
    if args.memory_child:
        run_memory(args, args.memory_child)
        return

    import dataclasses

    import torch
    from peft import LoraConfig

    from dpo.train import LORA_TARGETS, TrainConfig, _adapters_disabled, dpo_step

    model = build(args.layers, args.dim, args.heads)
    n_params = sum(p.numel() for p in model.parameters())
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=LORA_TARGETS))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    b = batch(args.batch, args.frames, args.hw)
    dense_cfg = TrainConfig(pairs=Path("-"), labels=Path("-"), model="-")
    vanilla_cfg = dataclasses.replace(dense_cfg, label_mode="clip")
    from dpo.loss import clip_labels

    b_vanilla = {**b, "labels": clip_labels(b["labels"])}

    def step(cfg, bb, s):
        t0 = time.perf_counter()
        out = dpo_step(model, model, bb, torch.Generator().manual_seed(s), cfg, lambda: _adapters_disabled(model))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t0

    for s in range(2):  # warm-up
        step(dense_cfg, b, s), step(vanilla_cfg, b_vanilla, s)
    dense, vanilla = [], []
    for s in range(args.steps):
        dense.append(step(dense_cfg, b, s))
        vanilla.append(step(vanilla_cfg, b_vanilla, s))

    # A wider model for memory, so the reference's weights stand out of the process's fixed ~1.5 GB.
    child = [
        sys.executable,
        __file__,
        "--layers",
        str(args.mem_layers),
        "--dim",
        str(args.mem_dim),
        "--heads",
        str(args.heads),
        "--rank",
        str(args.rank),
        "--batch",
        str(args.batch),
        "--frames",
        "5",
        "--hw",
        "8",
    ]
    mem_params = sum(p.numel() for p in build(args.mem_layers, args.mem_dim, args.heads).parameters())
    mem = {}
    for kind in ("disabled", "copy"):
        out = subprocess.run(child + ["--memory-child", kind], capture_output=True, text=True, check=True)
        mem[kind] = float(out.stdout.strip().splitlines()[-1])

    figures = {
        "transformer_params_m": n_params / 1e6,
        "latent_shape": f"{args.batch}x16x{args.frames}x{args.hw}x{args.hw}",
        "dense_step_ms": 1000 * statistics.median(dense),
        "vanilla_step_ms": 1000 * statistics.median(vanilla),
        "dense_over_vanilla": statistics.median(dense) / statistics.median(vanilla),
        "peak_rss_lora_disabled_ref_mib": mem["disabled"],
        "peak_rss_copied_ref_mib": mem["copy"],
        "copied_ref_extra_mib": mem["copy"] - mem["disabled"],
        "memory_model_params_m": mem_params / 1e6,
        "memory_model_fp32_mib": mem_params * 4 / 2**20,
    }
    title = "dense Flow-DPO step (CPU, random Wan transformer)"
    report(title, figures, {"dense": dense, "vanilla": vanilla}, args.json)


if __name__ == "__main__":
    main()
