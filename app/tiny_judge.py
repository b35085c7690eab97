"""A tiny Qwen2-VL judge that learned: trained here, on CPU, to label synthetic artifact segments.

The random tiny VLM answers the same position whatever it sees, so every segment it labels is
order_inconsistent and nothing downstream means anything. This judge is the same architecture, a little wider
(densedpo.tiny.VLM_SIZES["judge"]), trained with transformers on requests built exactly as `densedpo label`
builds them (labeler.plan and labeler.frames: the prompt file, frames sampled at --sample-fps, JPEG data URLs,
both orders) to answer first / second / tie for `densedpo.synthetic` pairs (an artifact in one video of a
segment, or none).
It is saved as a plain Hugging Face folder that vLLM serves unchanged.

It lives in the app because it stands on the labeler (the request layout) and on torch (the training).
Training is cached by its recipe: `cached_tiny_judge()` trains once per recipe and machine.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RECIPE_VERSION = 1


@dataclass(frozen=True)
class JudgeRecipe:
    """Everything the trained weights depend on; its digest keys the cache."""

    train_pairs: int = 160  # synthetic pairs of 3 segments -> 960 (segment, order) examples
    train_seed: int = 1000  # held-out pairs (eval) use eval_seed; the tests and the demo use seeds 0-99
    eval_pairs: int = 24
    eval_seed: int = 2000
    num_frames: int = 49
    fps: float = 16.0
    side: int = 64
    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    seed: int = 0
    vocab_size: int = 1024  # its tokenizer also learns the prompt's words: ~4x fewer text tokens to attend over
    # the request layout (must match what `label` sends: see labeler.config.LabelConfig)
    prompt: str = "segment_preference_v1"
    segment_seconds: float = 1.0
    sample_fps: float = 8.0
    max_side: int = 448
    jpeg_quality: int = 90
    version: int = RECIPE_VERSION

    def digest(self) -> str:
        from labeler.prompts import load_prompt

        data = {**asdict(self), "prompt_sha256": load_prompt(self.prompt).sha256}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    """$DENSEDPO_CACHE, else $XDG_CACHE_HOME/densedpo, else ~/.cache/densedpo."""
    if os.environ.get("DENSEDPO_CACHE"):
        return Path(os.environ["DENSEDPO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "densedpo"


def cached_tiny_judge(recipe: JudgeRecipe | None = None, console=None, root: Path | None = None) -> Path:
    """The trained judge's folder for `recipe`, training it first if this machine has not (one trainer at a time)."""
    from densedpo.locks import exclusive

    recipe = recipe or JudgeRecipe()
    root = Path(root or cache_root())
    final = root / f"tiny-judge-{recipe.digest()}"
    if (final / "training.json").exists():
        write_layout(final, recipe)  # folders trained before the layout file existed get it too
        return final
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f".{final.name}.lock", f"the tiny judge cache {final}", "wait for the other run to finish"):
        if (final / "training.json").exists():  # trained by the run we waited for
            return final
        tmp = root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        train_tiny_judge(tmp, recipe, console=console)
        os.replace(tmp, final)
    return final


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Example:
    images: list  # PIL images, first video's frames then the second's
    messages: list[dict]
    answer: str  # first | second | tie


def build_examples(pairs_path: Path, truth_path: Path, recipe: JudgeRecipe) -> list[Example]:
    """Both orders of every segment, as `label` would send them, with the truth as the positional answer."""
    from densedpo.tables import LABELS, read_table
    from labeler.config import LabelConfig
    from labeler.frames import prepare_pair
    from labeler.judges.chat import build_messages
    from labeler.plan import plan_pairs
    from labeler.prompts import load_prompt
    from labeler.segments import sample_frame_indices

    prompt = load_prompt(recipe.prompt)
    first, second, tie = prompt.choices
    cfg = LabelConfig(
        pairs=pairs_path,
        segment_seconds=recipe.segment_seconds,
        sample_fps=recipe.sample_fps,
        max_side=recipe.max_side,
        jpeg_quality=recipe.jpeg_quality,
        prompt=recipe.prompt,
    )
    truth = read_table(truth_path, LABELS).set_index(["pair_id", "segment_idx"])["preference"]
    examples = []
    for plan in plan_pairs(cfg):
        frame_urls = prepare_pair(plan, plan.segments, cfg)
        for seg in plan.segments:
            idx = sample_frame_indices(seg, plan.info.fps, recipe.sample_fps)
            pref = truth[(plan.pair_id, seg.segment_idx)]
            for order in ("ab", "ba"):
                one, two = ("a", "b") if order == "ab" else ("b", "a")
                shown_first = [frame_urls[one][k] for k in idx]
                shown_second = [frame_urls[two][k] for k in idx]
                answer = tie if pref == "tie" else (first if pref == one else second)
                examples.append(
                    Example(
                        images=[_image(u) for u in shown_first + shown_second],
                        messages=build_messages(prompt, plan.prompt, shown_first, shown_second),
                        answer=answer,
                    )
                )
    return examples


def _image(data_url: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")


def collate(processor, examples: list[Example], with_answer: bool = True) -> dict:
    """Left-padded batch; with the answer, `labels` keeps only the answer tokens and <|im_end|> (the rest -100)."""
    tok = processor.tokenizer
    texts = []
    for ex in examples:
        text = processor.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
        texts.append(text + (ex.answer + tok.eos_token if with_answer else ""))
    tok.padding_side = "left"
    batch = processor(text=texts, images=[ex.images for ex in examples], padding=True, return_tensors="pt")
    if with_answer:
        labels = batch["input_ids"].clone()
        labels[:] = -100
        for i, ex in enumerate(examples):
            n = len(tok(ex.answer, add_special_tokens=False)["input_ids"]) + 1
            labels[i, -n:] = batch["input_ids"][i, -n:]
        batch["labels"] = labels
    return dict(batch)


# ---------------------------------------------------------------------------------------------- train


def train_tiny_judge(out: Path, recipe: JudgeRecipe | None = None, console=None) -> dict:
    """Make the tiny judge architecture, train it on synthetic pairs, save it (with training.json) to `out`."""
    import torch
    from rich.console import Console
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    from densedpo.tiny import make_tiny_vlm
    from labeler.prompts import load_prompt

    recipe = recipe or JudgeRecipe()
    console = console or Console(stderr=True)
    out = Path(out)
    t_start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    p = load_prompt(recipe.prompt)
    corpus = [p.intro, p.between, p.question, *p.choices] * 4
    make_tiny_vlm(out, seed=recipe.seed, size="judge", extra_corpus=corpus, vocab_size=recipe.vocab_size)
    model = Qwen2VLForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    train_set, eval_set = _datasets(recipe)
    data_s = time.perf_counter() - t_start
    t0 = time.perf_counter()
    history = _fit(model, processor, train_set, eval_set, recipe, console)
    train_s = time.perf_counter() - t0
    model.eval()
    model.save_pretrained(out)
    info = {
        "recipe": asdict(recipe),
        "digest": recipe.digest(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": len(train_set),
        "heldout_examples": len(eval_set),
        "data_seconds": round(data_s, 1),
        "train_seconds": round(train_s, 1),
        "torch_threads": torch.get_num_threads(),
        "heldout_accuracy": history[-1]["heldout_accuracy"],
        "history": history,
    }
    _write_card(out, info, recipe)
    return info


def _datasets(recipe: JudgeRecipe) -> tuple[list[Example], list[Example]]:
    """(train, held-out) examples from synthetic pairs rendered with two different seeds."""
    import tempfile

    from densedpo.synthetic import make_synthetic_pairs

    kw = dict(
        num_frames=recipe.num_frames,
        fps=recipe.fps,
        height=recipe.side,
        width=recipe.side,
        segment_seconds=recipe.segment_seconds,
    )
    with tempfile.TemporaryDirectory(prefix="densedpo-judge-data-") as tmp:
        train = make_synthetic_pairs(Path(tmp) / "train", recipe.train_pairs, seed=recipe.train_seed, **kw)
        heldout = make_synthetic_pairs(Path(tmp) / "eval", recipe.eval_pairs, seed=recipe.eval_seed, **kw)
        return build_examples(*train, recipe), build_examples(*heldout, recipe)


def _fit(model, processor, train_set: list[Example], eval_set: list[Example], recipe: JudgeRecipe, console) -> list:
    """AdamW with warm-up and cosine decay over shuffled batches; held-out accuracy every 40 steps (the history)."""
    import torch

    from densedpo.progress import progress_bar
    from labeler.prompts import load_prompt

    choices = load_prompt(recipe.prompt).choices
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, recipe.warmup_steps, recipe.steps))
    gen = torch.Generator().manual_seed(recipe.seed)
    history = []
    t0 = time.perf_counter()
    with progress_bar(console, "steps · loss {task.fields[loss]:.3f}") as bar:
        task = bar.add_task("training the tiny judge", total=recipe.steps, loss=math.nan)
        order = torch.randperm(len(train_set), generator=gen).tolist()
        cursor = 0
        for step in range(1, recipe.steps + 1):
            if cursor + recipe.batch_size > len(order):
                order, cursor = torch.randperm(len(train_set), generator=gen).tolist(), 0
            batch = collate(processor, [train_set[i] for i in order[cursor : cursor + recipe.batch_size]])
            cursor += recipe.batch_size
            model.train()
            loss = model(**batch).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(task, advance=1, loss=loss.item())
            if step % 40 == 0 or step == recipe.steps:
                acc = answer_accuracy(model, processor, eval_set, choices)
                seconds = round(time.perf_counter() - t0, 1)
                history.append({"step": step, "seconds": seconds, "loss": loss.item(), "heldout_accuracy": acc})
    return history


def write_layout(out: Path, recipe: JudgeRecipe) -> None:
    """`label --model <this folder>` asks in the layout the judge was trained on, unless flags say otherwise."""
    import yaml

    from labeler.config import JUDGE_DEFAULTS_FILE

    layout = {"prompt": recipe.prompt, "sample_fps": recipe.sample_fps, "max_side": recipe.max_side}
    if not (out / JUDGE_DEFAULTS_FILE).exists():
        (out / JUDGE_DEFAULTS_FILE).write_text(yaml.safe_dump(layout, sort_keys=False))


def _write_card(out: Path, info: dict, recipe: JudgeRecipe) -> None:
    (out / "training.json").write_text(json.dumps(info, indent=2))
    write_layout(out, recipe)
    (out / "README.md").write_text(
        "# tiny trained judge (densedpo make-tiny vlm --trained)\n\n"
        f"Qwen2-VL, {info['parameters']:,} parameters, trained from random init for {recipe.steps} steps on "
        f"{info['train_examples']} synthetic (segment, order) requests built as `densedpo label` builds them. It "
        "tells apart densedpo.synthetic artifacts (blur, noise, freeze, flicker, swirl) at 64 px, nothing more: a "
        "stand-in\nfor a real judge in the demo and the tests. Held-out first/second/tie accuracy (transformers, "
        f"greedy over the three answers): {info['heldout_accuracy']:.3f}. Recipe and curve: training.json.\n"
    )


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def answer_accuracy(model, processor, examples: list[Example], choices: tuple[str, ...], batch_size: int = 32) -> float:
    """Share of examples whose most probable first answer token (among the choices') is the right one."""
    import torch

    tok = processor.tokenizer
    answers = list(choices)
    first_ids = {a: tok(a, add_special_tokens=False)["input_ids"][0] for a in answers}
    ids = torch.tensor([first_ids[a] for a in answers])
    hits = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            logits = model(**collate(processor, chunk, with_answer=False)).logits[:, -1, :]
            picked = logits[:, ids].argmax(-1).tolist()
            hits += sum(answers[k] == ex.answer for k, ex in zip(picked, chunk))
    return hits / len(examples)
