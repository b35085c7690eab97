"""VideoReward with transformers: the reward model vLLM cannot serve (`label --judge score --api transformers`).

VideoReward (KwaiVGI/VideoAlign, "Improving Video Generation with Human Feedback", the paper's 71.9% labeler) is a
Qwen2-VL-2B whose last hidden states pass through a linear `rm_head` (no bias); the rewards are read at three
special tokens in the prompt, `<|VQ_reward|>`, `<|MQ_reward|>`, `<|TA_reward|>` (visual quality, motion quality,
text alignment; with output_dim 3 each token reads its own output), then normalised with the checkpoint's
means and stds. Its published checkpoint folder holds `model_config.json` (model_config: the base model id,
output_dim, use_special_tokens; data_config; inference_config: VQ/MQ/TA mean and std) and `checkpoint-N/model.pth`
(the full state dict, saved with the transformers of its time: `visual.*`, `model.*`, `rm_head.weight`).

scorers/server.py serves it on `/classify` in the shape vLLM's pooling runner uses (`{"data": [{"probs":
[VQ, MQ, TA]}]}`), so the labeler's ScoreJudge is the same for both; `--score-weights 1,1,1` gives VideoReward's
Overall. The frames of a video segment go in as one video (as VideoReward was trained).
Not reproduced: VideoReward's exact frame sampling (it samples whole videos at 2 fps; densedpo gives each 1 s
segment's frames at --sample-fps) and its long training prompt (prompt_template.py in VideoAlign; pass it as
--score-text with `{caption}` in place of its text prompt for faithful scores: the labeler's default,
labeler.judges.score.VIDEOREWARD_TEXT, is short).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from densedpo.errors import DenseDPOError

REWARD_TOKENS = ("<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>")
DIMENSIONS = ("VQ", "MQ", "TA")


def convert_state_dict(state: dict) -> dict:
    """VideoAlign's key names (transformers 4.4x: `visual.*`, `model.*`) -> today's Qwen2-VL (`model.visual.*`,
    `model.language_model.*`); `lm_head.*` and `rm_head.*` stay. Keys already in today's layout are kept."""
    out = {}
    for key, value in state.items():
        if key.startswith("visual."):
            key = "model." + key
        elif key.startswith("model.") and not key.startswith(("model.visual.", "model.language_model.")):
            key = "model.language_model." + key[len("model.") :]
        out[key] = value
    return out


def reward_model_class():
    """Qwen2VLRewardModelBT as VideoAlign defines it (rm_head over the hidden states, special-token pooling)."""
    import torch
    from torch import nn
    from transformers import Qwen2VLForConditionalGeneration

    class Qwen2VLRewardModelBT(Qwen2VLForConditionalGeneration):
        def __init__(self, config, output_dim: int = 3, special_token_ids: list[int] | None = None):
            super().__init__(config)
            self.output_dim = output_dim
            self.special_token_ids = special_token_ids
            self.rm_head = nn.Linear(config.get_text_config().hidden_size, output_dim, bias=False)

        @torch.no_grad()
        def rewards(self, **batch) -> torch.Tensor:
            """(B, 3) raw rewards: rm_head at each of the three reward tokens (output i at token i for 3 outputs)."""
            input_ids = batch["input_ids"]
            hidden = self.model(**batch).last_hidden_state  # (B, L, D)
            logits = self.rm_head(hidden)  # (B, L, N)
            mask = torch.isin(input_ids, torch.tensor(self.special_token_ids, device=input_ids.device))
            if int(mask.sum()) != 3 * input_ids.shape[0]:
                raise ValueError(
                    f"each prompt must hold the three reward tokens {', '.join(REWARD_TOKENS)} once; --score-text "
                    "lacks some (see scorers/videoreward.py)."
                )
            pooled = logits[mask].view(input_ids.shape[0], 3, -1)
            if self.output_dim == 3:
                pooled = pooled.diagonal(dim1=1, dim2=2)
            return pooled.reshape(input_ids.shape[0], -1).float()

    return Qwen2VLRewardModelBT


def latest_checkpoint(folder: Path) -> Path:
    found = sorted(folder.glob("checkpoint-*/model.pth"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if not found:
        lora = sorted(folder.glob("checkpoint-*/adapter_model.safetensors"))
        hint = (
            " It holds a LoRA checkpoint (adapter_model.safetensors): merge it into a full model.pth first."
            if lora
            else ""
        )
        raise DenseDPOError(f"--model {folder}: no checkpoint-N/model.pth (the VideoReward layout).{hint}")
    return found[-1]


class VideoReward:
    """A VideoReward checkpoint folder, loaded once; `score(text, frames)` -> normalised [VQ, MQ, TA]."""

    def __init__(self, folder: str | Path, base: str | None = None, device: str | None = None):
        import torch
        from transformers import AutoProcessor

        folder = Path(folder)
        config_path = folder / "model_config.json"
        if not config_path.exists():
            raise DenseDPOError(
                f"--model {folder} has no model_config.json: --api transformers loads a VideoReward "
                "checkpoint folder (KwaiVGI/VideoReward)."
            )
        config = json.loads(config_path.read_text())
        model_config = config.get("model_config", {})
        base = base or model_config.get("model_name_or_path")
        if not base:
            raise DenseDPOError(f"{config_path}: model_config.model_name_or_path (the base Qwen2-VL) is missing.")
        self.norm = config.get("inference_config") or {}
        self.processor = AutoProcessor.from_pretrained(base)
        self.processor.tokenizer.add_special_tokens({"additional_special_tokens": list(REWARD_TOKENS)})
        special = self.processor.tokenizer.convert_tokens_to_ids(list(REWARD_TOKENS))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        model = reward_model_class().from_pretrained(
            base, output_dim=int(model_config.get("output_dim", 3)), special_token_ids=special, dtype=dtype
        )
        model.resize_token_embeddings(len(self.processor.tokenizer))
        state = torch.load(latest_checkpoint(folder), map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(convert_state_dict(state), strict=False)
        if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
            raise DenseDPOError(
                f"{folder}: the checkpoint does not match Qwen2VLRewardModelBT (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]})."
            )
        self.model = model.to(self.device).eval()
        self.name = folder.name

    def score(self, text: str, frames: list[np.ndarray]) -> tuple[list[float], int]:
        """([VQ, MQ, TA] normalised as the checkpoint says, prompt tokens) for one video segment."""
        content = ([{"type": "video"}] if frames else []) + [{"type": "text", "text": text}]
        chat = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        kwargs = {"videos": [np.stack(frames)]} if frames else {}
        batch = self.processor(text=[chat], return_tensors="pt", **kwargs).to(self.device)
        raw = self.model.rewards(**batch)[0].tolist()
        out = [
            (r - self.norm[f"{d}_mean"]) / self.norm[f"{d}_std"] if f"{d}_mean" in self.norm else r
            for d, r in zip(DIMENSIONS, raw)
        ]
        return out, int(batch["input_ids"].shape[1])


def decode_data_url(url: str) -> np.ndarray:
    import cv2

    data = base64.b64decode(url.split(",", 1)[1])
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError("not an image")
    return frame[:, :, ::-1].copy()


def to_videoalign_keys(state: dict) -> dict:
    """Today's Qwen2-VL key names -> VideoAlign's (the inverse of convert_state_dict)."""
    out = {}
    for key, value in state.items():
        if key.startswith("model.visual."):
            key = key[len("model.") :]
        elif key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model.") :]
        out[key] = value
    return out


def make_tiny_videoreward(out: str | Path, seed: int = 0, norm: dict | None = None, zero_head: bool = False) -> Path:
    """A tiny random checkpoint in VideoReward's layout (model_config.json, checkpoint-1/model.pth with VideoAlign's
    key names), on a tiny Qwen2-VL base written beside it: for tests of the loading code, not for labels."""
    import torch
    from transformers import AutoProcessor

    from densedpo.tiny import make_tiny_vlm

    out = Path(out)
    base = make_tiny_vlm(out / "base", seed=seed)
    processor = AutoProcessor.from_pretrained(base)
    processor.tokenizer.add_special_tokens({"additional_special_tokens": list(REWARD_TOKENS)})
    special = processor.tokenizer.convert_tokens_to_ids(list(REWARD_TOKENS))
    torch.manual_seed(seed)
    model = reward_model_class().from_pretrained(base, output_dim=3, special_token_ids=special)
    model.resize_token_embeddings(len(processor.tokenizer))
    with torch.no_grad():
        if zero_head:
            model.rm_head.weight.zero_()
        else:
            model.rm_head.weight.normal_(0.0, 1.0)
    (out / "checkpoint-1").mkdir(parents=True, exist_ok=True)
    torch.save(to_videoalign_keys(model.state_dict()), out / "checkpoint-1" / "model.pth")
    norm = norm or {"VQ_mean": 1.0, "VQ_std": 2.0, "MQ_mean": -0.5, "MQ_std": 0.5, "TA_mean": 0.0, "TA_std": 4.0}
    (out / "model_config.json").write_text(
        json.dumps(
            {
                "model_config": {
                    "model_name_or_path": str(base),
                    "output_dim": 3,
                    "use_special_tokens": True,
                    "reward_token": "special",
                },
                "data_config": {"fps": 2, "eval_dim": ["VQ", "MQ", "TA"]},
                "inference_config": norm,
            },
            indent=2,
        )
    )
    return out
