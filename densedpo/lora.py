"""A LoRA folder as `train` writes it (diffusers' format): what `generate --lora`, `sample --lora` and
`train -o init_lora` read, and the digest that pair ids, samples and run files record."""

from __future__ import annotations

from pathlib import Path

from densedpo.errors import DenseDPOError
from densedpo.files import file_sha256

LORA_FILE = "pytorch_lora_weights.safetensors"  # what `train` saves and diffusers' load_lora_weights reads


def check_lora(lora: Path | None, flag: str = "--lora") -> None:
    if lora is not None and not (Path(lora) / LORA_FILE).is_file():
        raise DenseDPOError(
            f"{flag} {lora} holds no {LORA_FILE}: pass a folder `train` wrote (run/final, run/best or a checkpoint-N)."
        )


def lora_digest(lora: Path | None) -> str | None:
    """The LoRA's content hash (sha256 of its weights file)."""
    return file_sha256(Path(lora) / LORA_FILE) if lora is not None else None
