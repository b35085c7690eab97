"""A tiny Qwen2-VL judge that learned: trained here, on CPU, to label synthetic artifact segments.

The random tiny VLM answers the same position whatever it sees, so every segment it labels is
order_inconsistent and nothing downstream means anything. This judge is the same architecture, a little wider
(densedpo.tiny.VLM_SIZES["judge"]), trained with transformers on requests built exactly as `densedpo label`
builds them (labeler.plan and labeler.frames: the prompt file, frames sampled at --sample-fps, JPEG data URLs,
both orders) to answer first / second / tie for `densedpo.synthetic` pairs (an artifact in one video of a
segment, or none). It asks in its own layout (a short prompt, 4 fps, video items), which its folder records for
`label`; training-only heads teach its eyes first (AuxHeads; docs/benchmarks.md has the recipe and its figures).
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

from densedpo.files import atomic_write_text, cache_root
from densedpo.synthetic import ARTIFACTS

RECIPE_VERSION = 6


@dataclass(frozen=True)
class JudgeRecipe:
    """Everything the trained weights depend on; its digest keys the cache."""

    train_pairs: int = 480  # synthetic pairs of 3 segments -> 2880 (segment, order) examples
    train_seed: int = 1000  # held-out pairs (eval) use eval_seed; the tests and the demo use seeds 0-99
    eval_pairs: int = 24
    eval_seed: int = 2000
    num_frames: int = 49
    fps: float = 16.0
    side: int = 64
    artifacts: tuple[str, ...] = ARTIFACTS  # the artifact kinds of the training pairs (transfer runs leave one out)
    vision_steps: int = 500  # stage 1: the vision tower alone, on the two auxiliary heads
    steps: int = 2000  # stage 2: everything, on the answer and the auxiliary heads
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    aux_weight: float = 1.0  # each auxiliary loss's weight in stage 2
    ema_decay: float = 0.995  # the saved weights: an exponential moving average over stage 2 (less run-to-run spread)
    seed: int = 0
    vocab_size: int = 1024  # its tokenizer also learns the prompt's words: fewer text tokens to attend over
    # the request layout (must match what `label` sends: see labeler.config.LabelConfig); written to the
    # folder's densedpo-judge.yaml, which `label --model <folder>` follows
    prompt: str = "tiny_judge_v1"
    segment_seconds: float = 1.0
    sample_fps: float = 4.0
    frames_as: str = "video"
    max_side: int = 448
    jpeg_quality: int = 90
    version: int = RECIPE_VERSION

    def digest(self) -> str:
        from labeler.prompts import load_prompt

        data = {**asdict(self), "prompt_sha256": load_prompt(self.prompt).sha256}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def cached_tiny_judge(recipe: JudgeRecipe | None = None, console=None, root: Path | None = None) -> Path:
    """The trained judge's folder for `recipe`, training it first if this machine has not (one trainer at a time)."""
    from densedpo.locks import exclusive

    recipe = recipe or JudgeRecipe()
    root = Path(root or cache_root())
    final = root / f"tiny-judge-{recipe.digest()}"
    remove_dead_trainings(root)
    if (final / "training.json").exists():
        write_layout(final, recipe)  # folders trained before the layout file existed get it too
        return final
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f".{final.name}.lock", f"the tiny judge cache {final}", "wait for the other run to finish"):
        if (final / "training.json").exists():  # trained by the run we waited for
            return final
        for stale in root.glob(f".{final.name}.tmp-*"):  # we hold the lock: any other is a crashed training
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".{final.name}.tmp-{os.getpid()}"
        train_tiny_judge(tmp, recipe, console=console)
        os.replace(tmp, final)
    return final


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Example:
    images: list  # PIL images, first video's frames then the second's
    messages: list[dict]
    answer: str  # first | second | tie
    flawed: tuple[bool, bool] = (False, False)  # whether the first / second video shown carries the artifact


def build_examples(pairs_path: Path, truth_path: Path, recipe: JudgeRecipe) -> list[Example]:
    """Both orders of every segment, as `label` would send them, with the truth as the positional answer."""
    from densedpo.tables import LABELS, read_table
    from labeler.config import LabelConfig
    from labeler.frames import prepare_pair
    from labeler.judges.chat import build_messages, whole_patches
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
                if recipe.frames_as == "video":  # what build_messages sends of them
                    shown_first, shown_second = whole_patches(shown_first), whole_patches(shown_second)
                answer = tie if pref == "tie" else (first if pref == one else second)
                examples.append(
                    Example(
                        images=[_image(u) for u in shown_first + shown_second],
                        messages=build_messages(prompt, plan.prompt, shown_first, shown_second, recipe.frames_as),
                        answer=answer,
                        flawed=(pref == two, pref == one),  # the preferred video is the one without the artifact
                    )
                )
    return examples


def _image(data_url: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")


def encode(processor, ex: Example, frames_as: str) -> dict:
    """One example as the model reads it (the processor runs once per example, not per step): token ids with the
    answer and <|im_end|> appended, `answer_len` of them; the pixels and grids of its two videos."""
    import numpy as np

    tok = processor.tokenizer
    text = processor.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
    text += ex.answer + tok.eos_token
    half = len(ex.images) // 2
    if frames_as == "video":
        videos = [[np.asarray(im) for im in ex.images[:half]], [np.asarray(im) for im in ex.images[half:]]]
        enc = processor(text=[text], videos=videos, return_tensors="pt", do_sample_frames=False)
        pixels, grid = enc["pixel_values_videos"], enc["video_grid_thw"]
    else:
        enc = processor(text=[text], images=ex.images, return_tensors="pt")
        pixels, grid = enc["pixel_values"], enc["image_grid_thw"]
    merged = (grid.prod(-1) // processor.image_processor.merge_size**2).tolist()  # visual tokens per item
    items_per_video = len(merged) // 2
    return {
        "ids": enc["input_ids"][0],
        "types": enc["mm_token_type_ids"][0],
        "pixels": pixels,
        "grid": grid,
        "answer_len": len(tok(ex.answer, add_special_tokens=False)["input_ids"]) + 1,
        "video_tokens": (sum(merged[:items_per_video]), sum(merged[items_per_video:])),
        "flawed": ex.flawed,
        "answer": ex.answer,
    }


def collate(items: list[dict], pad_id: int, frames_as: str, with_answer: bool = True) -> dict:
    """Left-padded batch of encoded examples; with the answer, `labels` keeps only the answer tokens and
    <|im_end|> (the rest -100); without it, the ids end where the answer would start (as `label` asks)."""
    import torch

    ids = [it["ids"] if with_answer else it["ids"][: -it["answer_len"]] for it in items]
    types = [it["types"][: len(i)] for it, i in zip(items, ids)]
    n = max(len(i) for i in ids)
    batch_ids = torch.full((len(items), n), pad_id)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    batch_types = torch.zeros((len(items), n), dtype=torch.long)
    for row, (i, t) in enumerate(zip(ids, types)):
        batch_ids[row, n - len(i) :], mask[row, n - len(i) :], batch_types[row, n - len(t) :] = i, 1, t
    pixels, grid = torch.cat([it["pixels"] for it in items]), torch.cat([it["grid"] for it in items])
    media = ("pixel_values_videos", "video_grid_thw") if frames_as == "video" else ("pixel_values", "image_grid_thw")
    batch = {
        "input_ids": batch_ids,
        "attention_mask": mask,
        "mm_token_type_ids": batch_types,
        media[0]: pixels,
        media[1]: grid,
    }
    if with_answer:
        labels = torch.full_like(batch_ids, -100)
        for row, it in enumerate(items):
            labels[row, -it["answer_len"] :] = batch_ids[row, -it["answer_len"] :]
        batch["labels"] = labels
    return batch


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
    train_set, eval_set = (
        [encode(processor, ex, recipe.frames_as) for ex in examples] for examples in _datasets(recipe)
    )
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
        artifact_kinds=recipe.artifacts,
    )
    with tempfile.TemporaryDirectory(prefix="densedpo-judge-data-") as tmp:
        train = make_synthetic_pairs(Path(tmp) / "train", recipe.train_pairs, seed=recipe.train_seed, **kw)
        heldout = make_synthetic_pairs(Path(tmp) / "eval", recipe.eval_pairs, seed=recipe.eval_seed, **kw)
        return build_examples(*train, recipe), build_examples(*heldout, recipe)


class AuxHeads:
    """Training-only heads on each video's mean merged visual token (dropped when the judge is saved).

    `pair` answers first / second / tie from the two videos' difference (and its magnitude): the comparison the
    answer needs, where the scene cancels out. `flawed` says of each video alone whether it carries an
    artifact: a feature the language model can read per video. Without them the vision tower learns nothing
    from the answer's gradient alone (docs/benchmarks.md, recipe search).
    """

    def __init__(self, model, hidden: int):
        import torch

        self.pair = torch.nn.Sequential(torch.nn.Linear(2 * hidden, 64), torch.nn.GELU(), torch.nn.Linear(64, 3))
        self.flawed = torch.nn.Linear(hidden, 2)
        self.first_flawed = torch.nn.Linear(hidden, 2)
        self.second_flawed = torch.nn.Linear(hidden, 2)
        self.merged = None
        model.model.visual.merger.register_forward_hook(lambda _m, _i, out: setattr(self, "merged", out))

    def parameters(self) -> list:
        heads = (self.pair, self.flawed, self.first_flawed, self.second_flawed)
        return [w for head in heads for w in head.parameters()]

    def loss(self, items: list[dict], answers: list[str]):
        """Sum of the two heads' cross-entropies on the last forward pass's merged visual tokens."""
        import torch
        import torch.nn.functional as F

        sizes = [n for it in items for n in it["video_tokens"]]
        pooled = torch.stack([chunk.mean(0) for chunk in torch.split(self.merged, sizes)]).view(len(items), 2, -1)
        diff = pooled[:, 0] - pooled[:, 1]
        target = torch.tensor([answers.index(it["answer"]) for it in items])
        flawed = torch.tensor([int(f) for it in items for f in it["flawed"]])
        pair_loss = F.cross_entropy(self.pair(torch.cat([diff, diff.abs()], -1)), target)
        return pair_loss + F.cross_entropy(self.flawed(pooled.reshape(-1, pooled.shape[-1])), flawed)

    def verdict_loss(self, items: list[dict], input_ids, hidden, vision_start: int, vision_end: int):
        """Per-video verdicts read from the language model's last hidden state at two text tokens: `first_flawed` at
        the token before the second video (it has seen only the first), `second_flawed` at the token after it (the
        second video is the nearest). The answer then looks both up by content, not by distance."""
        import torch
        import torch.nn.functional as F

        before, after = [], []
        for h, row in zip(hidden, input_ids):
            starts, ends = (row == vision_start).nonzero().squeeze(-1), (row == vision_end).nonzero().squeeze(-1)
            before.append(h[starts[len(starts) // 2] - 1])
            after.append(h[ends[-1] + 1])
        first = torch.tensor([int(it["flawed"][0]) for it in items])
        second = torch.tensor([int(it["flawed"][1]) for it in items])
        return F.cross_entropy(self.first_flawed(torch.stack(before)), first) + F.cross_entropy(
            self.second_flawed(torch.stack(after)), second
        )


def _fit(model, processor, train_set: list[dict], eval_set: list[dict], recipe: JudgeRecipe, console) -> list:
    """Stage 1: the vision tower and the auxiliary heads alone (AdamW, warm-up, then constant). Stage 2: everything,
    on the answer, the heads and the verdict probes (warm-up, cosine decay); the model ends with the stage's EMA
    weights. Held-out accuracy every 100 steps of stage 2 and of the EMA weights (the history)."""
    import torch

    from densedpo.progress import progress_bar
    from labeler.prompts import load_prompt

    choices = load_prompt(recipe.prompt).choices
    cfg = model.config
    heads = AuxHeads(model, cfg.text_config.hidden_size)
    pad = processor.tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(recipe.seed)
    history = []
    t0 = time.perf_counter()

    def batches(total: int):
        order, cursor = [], 0
        for _ in range(total):
            if cursor + recipe.batch_size > len(order):
                order, cursor = torch.randperm(len(train_set), generator=gen).tolist(), 0
            yield [train_set[i] for i in order[cursor : cursor + recipe.batch_size]]
            cursor += recipe.batch_size

    def optimizer(params: list, total: int | None):
        """AdamW; warm-up, then cosine decay over `total` steps (None: constant after the warm-up)."""
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        factor = (
            (lambda s: min(1.0, (s + 1) / recipe.warmup_steps))
            if total is None
            else (lambda s: cosine_with_warmup(s, recipe.warmup_steps, total))
        )
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def step(opt, sched, params: list, loss) -> None:
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()

    model.train()
    with progress_bar(console, "steps · loss {task.fields[loss]:.3f}") as bar:
        vision = [*model.model.visual.parameters(), *heads.parameters()]
        opt, sched = optimizer(vision, None)
        task = bar.add_task("training the tiny judge's eyes", total=recipe.vision_steps, loss=math.nan)
        for items in batches(recipe.vision_steps):
            pixels, grid = torch.cat([it["pixels"] for it in items]), torch.cat([it["grid"] for it in items])
            model.model.visual(pixels, grid_thw=grid)
            loss = heads.loss(items, choices)
            step(opt, sched, vision, loss)
            bar.update(task, advance=1, loss=loss.item())
        everything = [*model.parameters(), *heads.parameters()]
        opt, sched = optimizer(everything, recipe.steps)
        ema = {name: w.detach().clone() for name, w in model.named_parameters()}
        task = bar.add_task("training the tiny judge", total=recipe.steps, loss=math.nan)
        for k, items in enumerate(batches(recipe.steps), start=1):
            batch = collate(items, pad, recipe.frames_as)
            out = model(**{key: v for key, v in batch.items() if key != "labels"}, output_hidden_states=True)
            answer_loss = decision_loss(out.logits, batch["labels"])
            aux = heads.loss(items, choices) + heads.verdict_loss(
                items, batch["input_ids"], out.hidden_states[-1], cfg.vision_start_token_id, cfg.vision_end_token_id
            )
            step(opt, sched, everything, answer_loss + recipe.aux_weight * aux)
            with torch.no_grad():
                for name, w in model.named_parameters():
                    ema[name].lerp_(w, 1 - recipe.ema_decay)
            bar.update(task, advance=1, loss=answer_loss.item())
            if k % 100 == 0 or k == recipe.steps:
                acc = answer_accuracy(model, processor, eval_set, choices, recipe.frames_as)
                model.train()
                seconds = round(time.perf_counter() - t0, 1)
                history.append({"step": k, "seconds": seconds, "loss": answer_loss.item(), "heldout_accuracy": acc})
    with torch.no_grad():
        for name, w in model.named_parameters():
            w.copy_(ema[name])
    acc = answer_accuracy(model, processor, eval_set, choices, recipe.frames_as)
    history.append({"step": "ema", "seconds": round(time.perf_counter() - t0, 1), "heldout_accuracy": acc})
    return history


def decision_loss(logits, labels):
    """Cross-entropy of the answer's first token (the decision: the choices differ in it) plus the mean over the
    rest of the answer and <|im_end|>. The plain mean over all answer tokens weighs the decision by 1/len."""
    import torch.nn.functional as F

    predicted, target = logits[:, :-1], labels[:, 1:]  # position i predicts token i + 1
    answer = target != -100
    first = answer & ~torch_roll_right(answer)
    decision = F.cross_entropy(predicted[first], target[first])
    rest = answer & ~first
    return decision + (F.cross_entropy(predicted[rest], target[rest]) if rest.any() else 0.0)


def torch_roll_right(mask):
    """mask shifted one position right along the sequence, False entering at the left."""
    import torch

    return torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)


def remove_dead_trainings(root: Path) -> list[Path]:
    """Remove the temporary folders of trainings whose process is gone (killed or crashed mid-training)."""
    removed = []
    for tmp in root.glob(".tiny-judge-*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def write_layout(out: Path, recipe: JudgeRecipe) -> None:
    """`label --model <this folder>` asks in the layout the judge was trained on, unless flags say otherwise."""
    import yaml

    from labeler.config import JUDGE_DEFAULTS_FILE

    layout = {
        "prompt": recipe.prompt,
        "sample_fps": recipe.sample_fps,
        "max_side": recipe.max_side,
        "frames_as": recipe.frames_as,
    }
    if not (out / JUDGE_DEFAULTS_FILE).exists():  # atomic: a reader never sees half a file, writers race harmlessly
        atomic_write_text(out / JUDGE_DEFAULTS_FILE, yaml.safe_dump(layout, sort_keys=False))


def _write_card(out: Path, info: dict, recipe: JudgeRecipe) -> None:
    (out / "training.json").write_text(json.dumps(info, indent=2))
    write_layout(out, recipe)
    (out / "README.md").write_text(
        "# tiny trained judge (densedpo make-tiny vlm --trained)\n\n"
        f"Qwen2-VL, {info['parameters']:,} parameters, trained from random init ({recipe.vision_steps} steps of the "
        f"vision tower on auxiliary heads, then {recipe.steps} of everything) on "
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


def answer_accuracy(
    model, processor, items: list[dict], choices: tuple[str, ...], frames_as: str, batch_size: int = 48
) -> float:
    """Share of encoded examples whose most probable first answer token (among the choices') is the right one."""
    import torch

    tok = processor.tokenizer
    answers = list(choices)
    ids = torch.tensor([tok(a, add_special_tokens=False)["input_ids"][0] for a in answers])
    hits = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            batch = collate(chunk, tok.pad_token_id, frames_as, with_answer=False)
            picked = model(**batch).logits[:, -1, ids].argmax(-1).tolist()
            hits += sum(answers[k] == it["answer"] for k, it in zip(picked, chunk))
    return hits / len(items)
