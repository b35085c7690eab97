"""Tiny randomly initialised models that load like real ones.

They exist so the demo, the tests and the benchmarks exercise the real loading code, the real vLLM server and
the real request formats without downloading weights. Their outputs are noise: a tiny VLM's labels say
nothing about the videos.
"""

from __future__ import annotations

import json
from pathlib import Path

# The Qwen chat special tokens, in the order Qwen's tokenizer numbers them after its base vocabulary.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

_CORPUS = [
    "You are comparing two videos that are structurally similar, so only the details matter.",
    "Look for extra or deformed limbs and fingers, morphing faces, blurry or distorted objects.",
    "Answer with exactly one word: first, second or tie. Be conservative: tie unless one is clearly better.",
    "The first video is shown first, then the second video. Which video is better in this segment?",
    "A red ball bounces across a green field while the camera pans slowly to the left.",
    "system user assistant first second tie banana video frame segment caption",
]

# Short ChatML template with image placeholders, enough for vLLM's chat endpoint and transformers' processor.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] in ('video', 'video_url') %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A thinking model's tokens and template (as DeepSeek-R1 and Qwen3's thinking models): the generation prompt opens
# the thought, the model writes it and closes it with </think>, then answers. vLLM's `deepseek_r1` reasoning
# parser splits such an output into `reasoning` and `content`.
THINK_TOKENS = ("<think>", "</think>")
_THINKING_CHAT_TEMPLATE = _CHAT_TEMPLATE.replace(
    "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}"
)


def _train_tokenizer(vocab_size: int, extra_corpus: list[str] | None = None, thinking: bool = False):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS + list(extra_corpus or []), trainer=trainer)
    tok.add_special_tokens(QWEN_SPECIAL_TOKENS)
    if thinking:  # plain added tokens (not special): decoded text keeps them, as Qwen3's tokenizer does
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


# Model widths. "random": the smallest that vLLM's CPU backend serves. "judge": wide enough to learn the
# synthetic artifacts (app/tiny_judge.py trains it); head_dim stays 32 in both (vLLM CPU attention needs ≥ 32).
VLM_SIZES = {
    "random": {"hidden": 64, "heads": 2, "intermediate": 128, "vision_embed": 32, "vision_heads": 2},
    "judge": {"hidden": 128, "heads": 4, "intermediate": 256, "vision_embed": 64, "vision_heads": 2},
}


def _add_score_head(out: Path, config, outputs: int, hidden: int, seed: int) -> None:
    """Add a random reward head (vLLM names it `language_model.score`) to the weights, `num_labels` to the config."""
    import torch
    from safetensors.torch import load_file, save_file

    path = out / "model.safetensors"
    weights = load_file(path)
    generator = torch.Generator().manual_seed(seed + 1)
    weights["language_model.score.weight"] = torch.randn(outputs, hidden, generator=generator)
    save_file(weights, path, metadata={"format": "pt"})
    config.num_labels = outputs
    config.save_pretrained(out)


def make_tiny_vlm(
    out: str | Path,
    seed: int = 0,
    size: str = "random",
    extra_corpus: list[str] | None = None,
    vocab_size: int = 400,
    max_pixels: int = 112 * 112,
    score_outputs: int | None = None,
    thinking: bool = False,
) -> Path:
    """Write a tiny random Qwen2-VL model folder (≈200k parameters) that vLLM serves and transformers loads.

    Sizes follow the limits of vLLM's CPU backend: head_dim 32 (2 heads over hidden 64), mrope sections
    summing to head_dim / 2. Images are processed at 56²…112² pixels, i.e. 4–16 tokens each.
    `size="judge"` builds the ≈600k-parameter variant that app/tiny_judge.py trains; `extra_corpus` (e.g. the
    prompt it will read) and a larger `vocab_size` make its tokenizer spend fewer tokens on that text.
    `max_pixels` caps the image area the processor keeps (448*448 gives real Qwen2-VL token counts: 256 per image).
    `score_outputs=k` makes a reward model: a random `score.weight` (k x hidden) head on the last token, which vLLM's
    pooling runner (`--runner pooling --convert classify`) loads and serves on /classify.
    `thinking=True` makes a thinking model: `<think>`/`</think>` tokens and a template whose generation prompt
    opens the thought (serve it with vLLM's `--reasoning-parser deepseek_r1`).
    """
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    dims = VLM_SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw = _train_tokenizer(vocab_size=vocab_size, extra_corpus=extra_corpus, thinking=thinking)
    template = _THINKING_CHAT_TEMPLATE if thinking else _CHAT_TEMPLATE
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=template,
        model_max_length=4096,
    )
    ids = {t: raw.token_to_id(t) for t in QWEN_SPECIAL_TOKENS}
    vocab_size = raw.get_vocab_size()
    vocab_size += -vocab_size % 64  # pad the embedding like real checkpoints do

    config = _qwen2vl_config(dims, vocab_size, ids)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(out)

    if score_outputs:
        _add_score_head(out, config, score_outputs, dims["hidden"], seed)
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=max_pixels, patch_size=14, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=max_pixels, patch_size=14, merge_size=2)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"], "do_sample": False})
    )
    (out / "README.md").write_text(
        "# tiny random Qwen2-VL (densedpo make-tiny vlm)\n\n"
        "Randomly initialised, about 200k parameters. It exists to exercise real loading, serving and request\n"
        "code paths. Its answers are noise: labels made with it mean nothing.\n"
    )
    return out


def qwen_token_ids(ids: dict) -> dict:
    """A Qwen-VL config's special-token ids from the tokenizer's ({token: id})."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }


def _qwen2vl_config(dims: dict, vocab_size: int, ids: dict):
    """A Qwen2-VL config of the given sizes (VLM_SIZES) and special-token ids, saved as real checkpoints are."""
    from transformers import Qwen2VLConfig

    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=dims["hidden"],
            intermediate_size=dims["intermediate"],
            num_hidden_layers=2,
            num_attention_heads=dims["heads"],
            num_key_value_heads=1,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            tie_word_embeddings=False,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(
            depth=2,
            embed_dim=dims["vision_embed"],
            hidden_size=dims["hidden"],
            num_heads=dims["vision_heads"],
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        ),
        **qwen_token_ids(ids),
        tie_word_embeddings=False,
    )
    config.architectures = ["Qwen2VLForConditionalGeneration"]
    return config


def _train_t5_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok


def make_tiny_wan(out: str | Path, seed: int = 0, scheduler: str = "unipc") -> Path:
    """Write a tiny random Wan 2.1 text-to-video pipeline folder (≈350 KB) that `DiffusionPipeline` loads.

    Same classes and layout as Wan-AI/Wan2.1-T2V-*-Diffusers: UMT5 text encoder, causal video VAE with 4x
    temporal and 8x spatial compression, WanTransformer3DModel, flow-matching scheduler with shift 3.
    """
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    out = Path(out)
    raw = _train_t5_tokenizer(vocab_size=200)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=raw.get_vocab_size(),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    if scheduler == "unipc":
        sched = UniPCMultistepScheduler(flow_shift=3.0, prediction_type="flow_prediction", use_flow_sigmas=True)
    else:
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=sched
    )
    pipe.save_pretrained(out)
    (out / "README.md").write_text(
        "# tiny random Wan 2.1 (densedpo make-tiny wan)\n\n"
        "Randomly initialised: it exercises the real diffusers loading and sampling code. Its videos are noise.\n"
    )
    return out
