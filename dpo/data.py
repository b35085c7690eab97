"""Training examples from pairs.parquet + labels.parquet: latents, prompt embeddings, per-latent-frame labels.

Training never runs the VAE or the text encoder: it uses the latents and embeddings that `generate` saved, and
for pairs without them (pairs made elsewhere) encodes the videos and prompts once into a cache first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from densedpo.errors import DenseDPOError
from densedpo.tables import LABELS, PAIRS, non_tie_share, one_annotator, one_judge, read_table, resolve_path
from dpo.segments import latent_labels, latent_values, row_label, segment_weight


@dataclass
class Example:
    pair_id: str
    latents_a: torch.Tensor  # (C, T, h, w), normalised latent space
    latents_b: torch.Tensor
    prompt_embeds: torch.Tensor  # (L, D)
    labels: torch.Tensor  # (T,) int64 in {+1, -1, 0}
    weights: torch.Tensor | None = None  # (T,) float: each latent frame's segment weight (-o segment_weight)


def join_tables(
    pairs_path: Path,
    labels_path: Path,
    min_non_tie_fraction: float,
    judge: str | None = None,
    annotator: str | None = None,
    weight_rule: str = "none",
) -> tuple[pd.DataFrame, dict, dict]:
    """(kept pairs, segment labels per pair, counts). Non-ok rows are ties; keep pairs with > min share non-tie.

    A table of several judges trains on one of them: `judge`, by default the jury's combined rows; a human table of
    several annotators on one (`annotator`) or their majority vote (`annotator="majority"`)."""
    pairs = read_table(pairs_path, PAIRS)
    labels = one_judge(read_table(labels_path, LABELS), labels_path, judge, flag="-o judge")
    labels = one_annotator(labels, labels_path, annotator)
    unknown = sorted(set(labels["pair_id"]) - set(pairs["pair_id"]))
    if unknown:
        raise DenseDPOError(
            f"{labels_path} labels {len(unknown)} pair(s) missing from {pairs_path}, e.g. {unknown[0]!r}; pass the "
            "pairs table these labels were made from."
        )
    dup = labels.duplicated(["pair_id", "segment_idx"])
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise DenseDPOError(
            f"{labels_path} row {i}: pair_id {labels['pair_id'].iloc[i]!r} segment {labels['segment_idx'].iloc[i]} "
            "has several labels (several judges or annotators, columns judge/annotator); keep one per segment "
            "(e.g. one annotator's rows, or the jury's) before training."
        )
    segs: dict[str, list[tuple[int, int, int, float]]] = {}
    for row in labels.itertuples(index=False):
        label = row_label(row.preference, row.status)
        weight = segment_weight(weight_rule, row) if label else 0.0
        if weight is None:
            need = "a confidence" if weight_rule == "confidence" else "scores (score_a, score_b) or p_a and p_b"
            raise DenseDPOError(
                f"{labels_path}, pair_id {row.pair_id!r} segment {row.segment_idx}: -o "
                f"segment_weight={weight_rule} needs {need} for every decided segment; this one has none (human "
                "labels carry none): use -o segment_weight=none."
            )
        segs.setdefault(row.pair_id, []).append((int(row.frame_start), int(row.frame_end), label, weight))
    share = non_tie_share(labels)
    kept = pairs[pairs["pair_id"].map(share).fillna(0.0).gt(min_non_tie_fraction)].reset_index(drop=True)
    counts = {"pairs": len(pairs), "labeled": sum(1 for p in pairs["pair_id"] if p in segs), "kept": len(kept)}
    if kept.empty:
        raise DenseDPOError(
            f"no pair in {labels_path} has more than {min_non_tie_fraction:.0%} non-tie segments "
            f"({counts['labeled']} labeled pairs); lower -o min_non_tie_fraction=... or label with a better judge."
        )
    return kept, segs, counts


def split_val(pair_ids: list[str], val_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic train/val split by a hash of the pair id (stable when pairs are added)."""
    if val_fraction <= 0:
        return list(range(len(pair_ids))), []

    def unit(p: str) -> float:
        return int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) / 16**8

    val = [i for i, p in enumerate(pair_ids) if unit(p) < val_fraction]
    if len(pair_ids) >= 2 and not val:
        val = [len(pair_ids) - 1]
    if len(val) == len(pair_ids):
        val = val[:-1]
    train = [i for i in range(len(pair_ids)) if i not in set(val)]
    return train, val


def load_examples(pairs: pd.DataFrame, segs: dict, pairs_path: Path, cache_dir: Path, model: str) -> list[Example]:
    """Examples for every kept pair; encodes missing latents/embeddings once into cache_dir."""
    from safetensors.torch import load_file

    missing = [r for r in pairs.itertuples(index=False) if not _has_saved(r, pairs_path)]
    model_key = model_identity(model) if missing else ""
    paths = {r.pair_id: cache_path(cache_dir, r, pairs_path, model_key) for r in missing}
    uncached = [r for r in missing if not paths[r.pair_id].exists()]
    if uncached:
        encode_into_cache(uncached, pairs_path, cache_dir, model, model_key)
    examples = []
    for r in pairs.itertuples(index=False):
        if _has_saved(r, pairs_path):
            la = load_file(resolve_path(pairs_path, r.latents_a))["latents"]
            lb = load_file(resolve_path(pairs_path, r.latents_b))["latents"]
            emb = load_file(resolve_path(pairs_path, r.prompt_embeds))["prompt_embeds"]
        else:
            cached = load_file(paths[r.pair_id])
            la, lb, emb = cached["latents_a"], cached["latents_b"], cached["prompt_embeds"]
        if la.shape != lb.shape:
            raise DenseDPOError(
                f"pair {r.pair_id!r}: latents_a {tuple(la.shape)} and latents_b {tuple(lb.shape)} differ."
            )
        t = la.shape[1]
        num_frames = int(r.num_frames) if _present(r, "num_frames") else _probe_frames(r, pairs_path)
        ratio = (num_frames - 1) // (t - 1) if t > 1 else 1
        lab = torch.tensor(latent_labels(segs[r.pair_id], num_frames, ratio), dtype=torch.long)
        weights = torch.tensor(latent_values(segs[r.pair_id], num_frames, ratio, field=3, default=0.0))
        examples.append(Example(r.pair_id, la.float(), lb.float(), emb.float(), lab, weights.float()))
    return examples


def _present(row, col: str) -> bool:
    v = getattr(row, col, None)
    return v is not None and not (isinstance(v, float) and v != v) and v is not pd.NA


def _has_saved(row, pairs_path: Path) -> bool:
    cols = ("latents_a", "latents_b", "prompt_embeds")
    return all(_present(row, c) and resolve_path(pairs_path, getattr(row, c)).exists() for c in cols)


def _probe_frames(row, pairs_path: Path) -> int:
    from densedpo.video import probe

    return probe(resolve_path(pairs_path, row.video_a)).num_frames


def model_identity(model: str) -> str:
    """What the cached latents and embeddings depend on in the model: for a local folder, the VAE's and text
    encoder's configs and their weight files (names, sizes, modification times); for a hub id, the id."""
    folder = Path(model)
    if not folder.is_dir():
        return f"id:{model}"
    h = hashlib.sha256(str(folder.resolve()).encode())
    for sub in ("vae", "text_encoder"):
        for f in sorted((folder / sub).glob("*")) if (folder / sub).is_dir() else []:
            st = f.stat()
            h.update(f"{sub}/{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return h.hexdigest()


def cache_path(cache_dir: Path, row, pairs_path: Path, model_key: str) -> Path:
    """A pair's cache file: its id made safe as a file name (no `/`, no `..`), plus a digest of the model's
    identity, both videos' bytes and the prompt, so another --model or re-encoded videos never reuse stale latents."""
    from densedpo.files import file_sha256

    h = hashlib.sha256(model_key.encode())
    for side in ("a", "b"):
        h.update(file_sha256(resolve_path(pairs_path, getattr(row, f"video_{side}"))).encode())
    h.update(str(row.prompt).encode())
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", str(row.pair_id))[:80]
    return cache_dir / f"{safe}-{h.hexdigest()[:16]}.safetensors"


def encode_into_cache(rows: list, pairs_path: Path, cache_dir: Path, model: str, model_key: str | None = None) -> None:
    """VAE-encode both videos and text-encode the prompt of each row once; the models are freed afterwards."""
    from diffusers import DiffusionPipeline
    from safetensors.torch import save_file

    from densedpo.files import atomic_path
    from densedpo.latents import LatentCodec
    from densedpo.video import read_frames

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = DiffusionPipeline.from_pretrained(model, transformer=None, dtype=torch.float32).to(device)
    codec = LatentCodec(pipe.vae, device)
    model_key = model_key if model_key is not None else model_identity(model)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for r in rows:
            out = {}
            for side in ("a", "b"):
                frames = read_frames(resolve_path(pairs_path, getattr(r, f"video_{side}")))
                out[f"latents_{side}"] = codec.encode(frames)[0].cpu().contiguous()
            emb, _ = pipe.encode_prompt(prompt=r.prompt, do_classifier_free_guidance=False, device=device)
            out["prompt_embeds"] = emb[0].cpu().contiguous()
            with atomic_path(cache_path(cache_dir, r, pairs_path, model_key)) as tmp:
                save_file(out, str(tmp))
    del pipe
