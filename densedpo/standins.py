"""Stand-ins at the real architectures: random weights at published configurations (`densedpo make-standin`).

No weights can be downloaded here, but the architectures can be built: a folder that loads like the real model,
with random weights, gives real memory and throughput figures on a GPU (benchmarks/device_check.py). Their
outputs are noise. Each configuration is written from the published one, named in a comment, and its parameter
count is checked against the published checkpoint's (`PUBLISHED`) within 2%.

- Wan 2.1 T2V 1.3B / 14B: the diffusers WanTransformer3DModel configuration of the real checkpoint. The VAE is
  the real Wan VAE (diffusers' AutoencoderKLWan defaults are Wan 2.1's). The text encoder is UMT5-XXL's width
  (d_model 4096, 64 heads, d_ff 10240) at 2 of its 24 layers with a 32k vocabulary (the real one, 6.7B parameters,
  is 13 GB of random numbers that only encodes each prompt once per pair; `text_encoder="full"` builds it).
- Qwen2.5-VL 7B: the configuration only (vLLM serves it with `--load-format dummy`: no weight file), with the tiny
  judge's tokenizer and processor; the embedding keeps the real vocabulary (152,064 rows), more than the tokenizer
  uses, as real checkpoints pad theirs.
`size="small"`: the same classes at a few layers and narrow widths, which the CPU runs (the device check's
--small mode, so the code path is tested without a GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

# Published parameter counts of the real checkpoints, as loaded: Wan 2.1 T2V 1.3B's transformer 1,418,996,800 and
# its VAE 126,892,531; Wan 2.1 14B's transformer 14,288,491,584 (also each Wan 2.2 A14B expert); UMT5-XXL's
# encoder 5,680,910,336; Qwen/Qwen2.5-VL-7B-Instruct 8,292,166,656 (its Hugging Face numParameters).
PUBLISHED = {
    ("wan", "1.3b"): 1_418_996_800,
    ("wan", "14b"): 14_288_491_584,
    ("wan-vae", "1.3b"): 126_892_531,
    ("umt5-xxl", "full"): 5_680_910_336,
    ("vlm", "7b"): 8_292_166_656,
}

# Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers, transformer/config.json (dim = heads x 128).
WAN_TRANSFORMERS = {
    "1.3b": {"num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
    "14b": {"num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40},
    "small": {"num_attention_heads": 2, "ffn_dim": 256, "num_layers": 2},
}
WAN_SIZES = tuple(WAN_TRANSFORMERS)

# Qwen/Qwen2.5-VL-7B-Instruct, config.json (text) and its vision_config.
QWEN25_VL = {
    "7b": {
        "text": {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "mrope_section": [16, 24, 24],
        },
        "vision": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
    },  # fmt: skip
    "small": {  # vLLM's CPU attention needs head_dim >= 32; mrope sections sum to head_dim / 2
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": None,
            "mrope_section": [4, 6, 6],
        },
        "vision": {
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "fullatt_block_indexes": [1],
        },
    },  # fmt: skip
}
VLM_SIZES = tuple(QWEN25_VL)


def wan_transformer_config(size: str) -> dict:
    """WanTransformer3DModel keyword arguments of the real checkpoint (or the small one)."""
    t = WAN_TRANSFORMERS[size]
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": t["num_attention_heads"],
        "attention_head_dim": 128 if size != "small" else 16,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 4096 if size != "small" else 64,
        "freq_dim": 256,
        "ffn_dim": t["ffn_dim"],
        "num_layers": t["num_layers"],
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "rope_max_seq_len": 1024,
    }


def count_parameters(build) -> int:
    """Parameters of a module built by `build()` on the meta device (no memory, no init)."""
    import torch

    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


def wan_parameter_count(size: str) -> int:
    from diffusers import WanTransformer3DModel

    return count_parameters(lambda: WanTransformer3DModel(**wan_transformer_config(size)))


def make_standin_wan(out: str | Path, size: str = "1.3b", seed: int = 0, text_encoder: str = "narrow", dtype=None):
    """A Wan 2.1 T2V pipeline folder at a real transformer size with random weights (module docstring)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    from densedpo.tiny import _train_t5_tokenizer

    if size not in WAN_TRANSFORMERS:
        raise ValueError(f"size must be one of {', '.join(WAN_SIZES)}, got {size!r}")
    dtype = dtype or torch.bfloat16
    out = Path(out)
    raw = _train_t5_tokenizer(vocab_size=200)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
    torch.manual_seed(seed)
    small = size == "small"
    full = text_encoder == "full" and not small  # google/umt5-xxl's encoder, config.json
    text_encoder_model = UMT5EncoderModel(
        UMT5Config(
            vocab_size=256384 if full else 32128 if not small else raw.get_vocab_size(),
            d_model=64 if small else 4096,
            d_kv=32 if small else 64,
            d_ff=128 if small else 10240,
            num_layers=24 if full else 2,
            num_heads=2 if small else 64,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).to(dtype)
    vae = AutoencoderKLWan() if not small else AutoencoderKLWan(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    transformer = WanTransformer3DModel(**wan_transformer_config(size)).to(dtype)
    scheduler = UniPCMultistepScheduler(flow_shift=3.0, prediction_type="flow_prediction", use_flow_sigmas=True)
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder_model, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(out)
    counts = {
        "transformer": sum(p.numel() for p in transformer.parameters()),
        "vae": sum(p.numel() for p in vae.parameters()),
        "text_encoder": sum(p.numel() for p in text_encoder_model.parameters()),
    }
    (out / "standin.json").write_text(json.dumps({"model": "wan2.1-t2v", "size": size, "text_encoder": "full" if
                                                  full else "narrow", "parameters": counts}, indent=2))  # fmt: skip
    (out / "README.md").write_text(
        f"# Wan 2.1 T2V {size} stand-in (densedpo make-standin wan)\n\nRandom weights at the real transformer "
        "configuration: for memory and throughput figures. Its videos are noise.\n"
    )
    return out, counts


def qwen25_vl_config(size: str, ids: dict, vocab_size: int):
    """A Qwen2.5-VL configuration of the published 7B (or the small one), with the tokenizer's special-token ids."""
    from transformers import Qwen2_5_VLConfig

    from densedpo.tiny import qwen_token_ids

    t, v = QWEN25_VL[size]["text"], QWEN25_VL[size]["vision"]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=t["vocab_size"] or vocab_size,
            hidden_size=t["hidden_size"],
            intermediate_size=t["intermediate_size"],
            num_hidden_layers=t["num_hidden_layers"],
            num_attention_heads=t["num_attention_heads"],
            num_key_value_heads=t["num_key_value_heads"],
            max_position_embeddings=128000 if size != "small" else 4096,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": t["mrope_section"]},
            tie_word_embeddings=False,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(
            depth=v["depth"],
            hidden_size=v["hidden_size"],
            intermediate_size=v["intermediate_size"],
            num_heads=v["num_heads"],
            out_hidden_size=t["hidden_size"],
            hidden_act="silu",
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=v["fullatt_block_indexes"],
            tokens_per_second=2,
            in_channels=3,
        ),
        **qwen_token_ids(ids),
        tie_word_embeddings=False,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return config


def vlm_parameter_count(size: str) -> int:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from densedpo.tiny import QWEN_SPECIAL_TOKENS

    ids = {t: i for i, t in enumerate(QWEN_SPECIAL_TOKENS)}
    config = qwen25_vl_config(size, ids, vocab_size=1024)
    return count_parameters(lambda: Qwen2_5_VLForConditionalGeneration(config))


def make_standin_vlm(out: str | Path, size: str = "7b", max_pixels: int = 448 * 448) -> tuple[Path, int]:
    """A Qwen2.5-VL folder without weights that vLLM serves with --load-format dummy (densedpo's managed vLLM
    adds it when the folder's standin.json says so): configuration, tokenizer, processor. Returns (folder, params)."""
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from densedpo.tiny import _CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS, _train_tokenizer

    if size not in QWEN25_VL:
        raise ValueError(f"size must be one of {', '.join(VLM_SIZES)}, got {size!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw = _train_tokenizer(vocab_size=400)
    special = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, chat_template=_CHAT_TEMPLATE, model_max_length=32768,
                                        **special)  # fmt: skip
    ids = {t: raw.token_to_id(t) for t in QWEN_SPECIAL_TOKENS}
    vocab = raw.get_vocab_size() + (-raw.get_vocab_size() % 64)
    config = qwen25_vl_config(size, ids, vocab)
    config.save_pretrained(out)
    pixels = {"min_pixels": 56 * 56, "max_pixels": max_pixels, "patch_size": 14, "merge_size": 2}
    processors = {
        "image_processor": Qwen2VLImageProcessor(**pixels),
        "video_processor": Qwen2VLVideoProcessor(**pixels),
    }
    processor = Qwen2_5_VLProcessor(tokenizer=tokenizer, chat_template=_CHAT_TEMPLATE, **processors)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"], "do_sample": False})
    )
    params = vlm_parameter_count(size)
    (out / STANDIN_FILE).write_text(json.dumps({"model": "qwen2.5-vl", "size": size, "weights": "dummy",
                                                "parameters": params}, indent=2))  # fmt: skip
    (out / "README.md").write_text(
        f"# Qwen2.5-VL {size} stand-in (densedpo make-standin vlm)\n\nNo weights: vLLM serves it with "
        "`--load-format dummy` (random). For memory and throughput figures; its answers are noise.\n"
    )
    return out, params


STANDIN_FILE = "standin.json"


def serves_dummy_weights(model: str | None) -> bool:
    """A stand-in folder without weights: vLLM must be started with --load-format dummy."""
    path = Path(model) / STANDIN_FILE if model else None
    return bool(path and path.is_file() and json.loads(path.read_text()).get("weights") == "dummy")
