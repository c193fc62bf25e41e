"""Train the elastic MAE on random glimpses, so the frozen model behind the env is good at every step.

Readable top to bottom (CleanRL style): arguments, seeding, data, model, loop, logging, checkpoints.

Each batch takes ``k`` glimpses per image, ``k`` drawn per batch between ``--min-glimpses`` and
``--max-glimpses`` (so the model sees every episode length): with probability ``--whole-image-first`` the first
glimpse covers the whole image as a coarse ``g x g`` grid (original `PretrainingSampler`), the rest are squares of
random position and scale cut exactly as the env cuts them (:func:`adaglimpse_env.glimpse.extract_glimpses`). The loss
is the original's for the task: per-image pixel MSE summed over the batch (reconstruction, original `mae.py`),
cross-entropy or KL to a ``timm`` teacher (classification), per-pixel cross-entropy (segmentation).

Usage::

    python scripts/pretrain_mae.py --config configs/pretrain/embedded_tiny.yaml
    python scripts/pretrain_mae.py --dataset folder --data-root photos/ --steps 2000 --output runs/mae
    python scripts/pretrain_mae.py --config ... --resume                      # continue a killed run
    torchrun --nproc_per_node 2 scripts/pretrain_mae.py --config ...            # data-parallel (gloo/nccl)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader

from adaglimpse_env.datasets import ImageSource, SeededOrder, TransformConfig, UnreadableFiles, build_image_source
from adaglimpse_env.glimpse_sets import TargetPlacement, sample_glimpses
from adaglimpse_env.models import ElasticMAE, create_model, load_model, save_model
from adaglimpse_env.models.torch_files import atomic_torch_save, safe_torch_load
from adaglimpse_env.normalization import to_pixels
from adaglimpse_env.tasks import TaskTargets, get_task
from agents.config import ConfigError, parse_config
from agents.preflight import OutputDirectoryError, check_free_space, check_writable, format_bytes, required_free_bytes


@dataclass
class PretrainConfig:
    """Every setting of a run; a YAML file under ``configs/pretrain/`` sets any subset, flags override it.

    Attributes:
        task: reconstruction, classification or segmentation.
        model_size: elastic MAE size (tiny, small, base, large).
        layer_scale_init: initial LayerScale value.
        crop_scale_min: smallest area fraction of the random resized crops.
        color_jitter: colour-jitter strength (0: none).
        vertical_flip: also flip images vertically.
        num_segmentation_classes: classes of the segmentation head.
        num_classes: classes of the classification head (10 for the cluttered digits).
        dataset: image source name (photos, digits, imagenet, sun360, ade20k, coco, folder).
        data_root: its data folder.
        val_dataset: held-out image source (default: the training one's val split).
        val_data_root: its data folder.
        init_checkpoint: checkpoint to start from.
        freeze_encoder: train only what follows the encoder (decoder and heads): the encoder's weights (token
            embedding, cls token, blocks, final norm) stay as initialised, e.g. a decoder fine-tune on top of
            ``init_checkpoint``'s encoder.
        teacher: distillation teacher name.
        teacher_checkpoint: the teacher's checkpoint.
        steps: optimiser steps.
        batch_size: images per step and process.
        lr: peak learning rate.
        min_lr: final learning rate of the cosine decay.
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay.
        grid_size: glimpse grid (g x g patches per glimpse).
        min_glimpses: fewest glimpses per training image.
        max_glimpses: most glimpses per training image (at least min_glimpses).
        whole_image_first: fraction of images whose first glimpse is the whole image.
        target_glimpses: chance that each later glimpse is aimed at the source's target, placed as
            ``target_glimpse_placement`` says (sources that place a target, e.g. digits; see
            :func:`adaglimpse_env.glimpse_sets.target_glimpse_actions`).
        target_glimpse_scale: (min, max) side of those glimpses as a multiple of the target's size.
        target_glimpse_placement: where those glimpses put the target: ``cell`` (inside one of the glimpse's
            cells), ``centred`` (at the glimpse's centre, cut in ``g x g`` by its cells), ``anywhere`` (anywhere
            wholly inside the glimpse: centred, cut across cells or inside one) or ``mixed`` (each glimpse one of
            the other three at random).
        num_workers: background decoding workers.
        seed: seed.
        device: where to train.
        amp: mixed precision on CUDA.
        threads: torch CPU threads (default: torch's choice).
        output: run folder.
        log_every: steps between log lines.
        eval_every: steps between held-out evaluations.
        checkpoint_every: steps between checkpoints.
        eval_glimpses: glimpse counts evaluated.
        num_val_images: evaluate on the first this many held-out images (default: all).
        save_dtype: dtype of the saved weights (float16 or float32).
        resume: continue from the last checkpoint in output.
    """

    task: str = "reconstruction"
    model_size: str = "tiny"
    layer_scale_init: float = 1e-4
    crop_scale_min: float = 0.2
    color_jitter: float = 0.0
    vertical_flip: bool = False
    num_segmentation_classes: int = 150
    num_classes: int = 1000
    dataset: str = "photos"
    data_root: str | None = None
    val_dataset: str | None = None
    val_data_root: str | None = None
    init_checkpoint: str | None = None
    freeze_encoder: bool = False
    teacher: str | None = None
    teacher_checkpoint: str | None = None
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grid_size: int = 2
    min_glimpses: int = 1
    max_glimpses: int = 12
    whole_image_first: float = 0.5
    target_glimpses: float = 0.0
    target_glimpse_scale: list[float] = field(default_factory=lambda: [2.0, 3.5])
    target_glimpse_placement: TargetPlacement = "cell"
    num_workers: int = 2
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    amp: bool = True
    threads: int | None = None
    output: str = "runs/pretrain"
    log_every: int = 25
    eval_every: int = 250
    checkpoint_every: int = 250
    eval_glimpses: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 12])
    num_val_images: int | None = None
    save_dtype: Literal["float16", "float32"] = "float16"
    resume: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.min_glimpses <= self.max_glimpses:
            raise ValueError(
                f"min_glimpses <= max_glimpses (both >= 0) required, got min_glimpses={self.min_glimpses}, "
                f"max_glimpses={self.max_glimpses}; lower min_glimpses or raise max_glimpses"
            )


def parse_args(argv: list[str] | None) -> PretrainConfig:
    return parse_config(PretrainConfig, argv, __doc__.splitlines()[0])


# ---------------------------------------------------------------------------------------------------- helpers
def learning_rate(step: int, config: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def train_transform(config: PretrainConfig, size: int) -> TransformConfig:
    """The training images' augmentation: random resized crops down to ``crop_scale_min`` of the area, flips and
    the configured colour jitter, at the model's input side ``size``."""
    return TransformConfig(
        size=size,
        train=True,
        scale=(config.crop_scale_min, 1.0),
        color_jitter=config.color_jitter,
        vertical_flip=config.vertical_flip,
    )


def training_batches(source: ImageSource, config: PretrainConfig, rank: int, step: int) -> Iterator[dict[str, Any]]:
    """Endless batches (see :func:`collate`) of the training images, from step ``step`` on.

    Order and crops come from :class:`SeededOrder`, the sampler of the env's image stream, seeded by the run seed
    and the process rank: every process samples all the files, in its own order. A resumed run skips the
    ``step * batch_size`` samples its steps took (a batch with no readable image takes no step, so after one the
    resumed sequence is shifted by that batch).
    """
    sampler = SeededOrder(len(source), config.seed + 1000 * rank, start=step * config.batch_size)
    # The loader's own generator only seeds its workers, and leaves the global torch RNG alone.
    loader = DataLoader(
        source, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers, collate_fn=collate,
        generator=torch.Generator().manual_seed(config.seed + rank),
    )  # fmt: skip
    return iter(loader)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack readable samples; unreadable files come back from the source as error records, kept in ``"errors"``.

    Returns:
        ``{"errors": [record, ...]}`` plus, when any sample was readable, ``"image" (B, 3, H, W)``,
        ``"label" (B,)``, for segmentation ``"mask" (B, H, W)`` and, for sources that place a target (the
        cluttered-digits scenes), ``"target_box" (B, 4)``.
    """
    good = [s for s in samples if "error" not in s]
    batch: dict[str, Any] = {"errors": [s for s in samples if "error" in s]}
    if good:
        batch["image"] = torch.stack([s["image"] for s in good])
        batch["label"] = torch.stack([s["label"] for s in good])
        if "mask" in good[0]:
            batch["mask"] = torch.stack([s["mask"] for s in good])
        if "target_box" in good[0]:
            batch["target_box"] = torch.stack([s["target_box"] for s in good])
    return batch


def build_teacher(config: PretrainConfig, device: torch.device) -> torch.nn.Module | None:
    """Optional classification teacher from timm (by name, weights from a local file: nothing is downloaded)."""
    if not config.teacher:
        return None
    import timm

    teacher = timm.create_model(config.teacher, pretrained=False, checkpoint_path=config.teacher_checkpoint or "")
    return teacher.to(device).eval().requires_grad_(False)


def task_loss(
    model: ElasticMAE, config: PretrainConfig, batch: dict[str, torch.Tensor], latent: torch.Tensor, teacher: Any
) -> torch.Tensor:
    task = get_task(config.task)
    prediction = task.head.predict(model, latent)
    images = batch["image"]
    if teacher is not None:
        with torch.no_grad():
            teacher_output = teacher(images).float()
        return task.distillation_loss(prediction, teacher_output)
    return task.loss(model, prediction.float(), images, TaskTargets.from_batch(batch))


class TaskLoss(torch.nn.Module):
    """The whole training computation in one ``forward`` (encoder, head, loss), so DDP sees every parameter use.

    Args:
        model: the elastic MAE being trained.
        config: the run configuration.
        teacher: optional frozen classification teacher (kept out of the module tree: it is not trained).
    """

    def __init__(self, model: ElasticMAE, config: PretrainConfig, teacher: torch.nn.Module | None) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self._teacher = (teacher,)

    def forward(self, patches: torch.Tensor, boxes: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # A frozen encoder needs no graph: its forward runs without autograd (about a third of a step's work).
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            latent = self.model.forward_encoder(patches, boxes).latent
        return task_loss(self.model, self.config, batch, latent, self._teacher[0])


@torch.no_grad()
def evaluate(
    model: ElasticMAE, config: PretrainConfig, batches: list[dict[str, torch.Tensor]], device: torch.device
) -> dict[str, float]:
    """Task metric after ``k`` random glimpses (whole image first) for each ``k`` of ``eval_glimpses``, on fixed
    held-out batches with a fixed seed: RMSE (0-255) for reconstruction, accuracy for classification, pixel
    accuracy for segmentation. Sources that place a target also get ``"whole_then_target"``: the whole image,
    then one glimpse 2.5 times the target's size with the target inside one cell (can the model read it when
    it looks at it?).

    Returns:
        ``{"after_<k>_glimpses": value, ...}`` (and ``"whole_then_target"``).
    """
    model.eval()
    task = get_task(config.task)
    plans: list[tuple[str, int, float]] = [(f"after_{count}_glimpses", count, 0.0) for count in config.eval_glimpses]
    if batches and "target_box" in batches[0]:
        plans.append(("whole_then_target", 2, 1.0))
    results = {}
    for name, count, target_share in plans:
        generator = torch.Generator().manual_seed(1234)
        total, numerator = 0.0, 0.0
        for batch in batches:
            images = batch["image"].to(device)
            patches, boxes = sample_glimpses(
                images, count, config.grid_size, True, generator, batch.get("target_box"), target_share, (2.5, 2.5)
            )
            prediction = task.head.predict(model, model.forward_encoder(patches, boxes).latent).float()
            targets = TaskTargets.from_batch(batch).to(device)
            batch_numerator, batch_total = task.validation_counts(model, prediction, images, targets)
            numerator += batch_numerator
            total += batch_total
        results[name] = task.validation_value(numerator, total)
    model.train()
    return results


def checkpoint_bytes(config: PretrainConfig) -> int:
    """Bytes of one checkpoint: ``training_state.pt`` (float32 weights and AdamW's two moments) plus ``model.pt``
    (weights in ``save_dtype``), counted on a meta-device model, which allocates nothing."""
    with torch.device("meta"):
        model = create_model(
            config.model_size, config.task, config.num_segmentation_classes,
            layer_scale_init=config.layer_scale_init, num_classes=config.num_classes,
        )  # fmt: skip
    state = model.state_dict()
    saved = {"float16": 2, "float32": 4}[config.save_dtype]
    training_state = sum(t.numel() * t.element_size() for t in state.values())
    training_state += 2 * sum(p.numel() * p.element_size() for p in model.parameters())
    model_file = sum(t.numel() * (saved if t.is_floating_point() else t.element_size()) for t in state.values())
    return training_state + model_file


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        dist.init_process_group("nccl" if config.device.startswith("cuda") else "gloo")
        rank = dist.get_rank()
        if config.device.startswith("cuda"):
            config.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    is_main = rank == 0
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    output = Path(config.output)
    state_path, model_path = output / "training_state.pt", output / "model.pt"
    if is_main:  # fail now, not at the first checkpoint; before any model or data is built
        check_writable(output, "pretrain_mae.py")
        one_checkpoint = checkpoint_bytes(config)
        check_free_space(
            output,
            "pretrain_mae.py",
            required_free_bytes(one_checkpoint, resuming=config.resume and state_path.exists()),
            f"a checkpoint takes {format_bytes(one_checkpoint)} and the next one is written before it is removed",
        )
    torch.manual_seed(config.seed + rank)
    np.random.seed(config.seed + rank)

    # Data: random resized crops of the training images; fixed centre crops of held-out ones for evaluation.
    task = get_task(config.task)
    model = create_model(
        config.model_size, config.task, config.num_segmentation_classes,
        layer_scale_init=config.layer_scale_init, num_classes=config.num_classes,
    ).to(device)  # fmt: skip
    train_source = build_image_source(
        config.dataset, "train", transform=train_transform(config, model.config.img_size[0]),
        data_root=config.data_root, with_labels=task.needs_labels, with_masks=task.needs_masks,
    )  # fmt: skip
    val_source = build_image_source(
        config.val_dataset or config.dataset, "val", transform=TransformConfig(size=model.config.img_size[0]),
        data_root=config.val_data_root or config.data_root, with_labels=task.needs_labels,
        with_masks=task.needs_masks,
    )  # fmt: skip
    val_data: torch.utils.data.Dataset[dict[str, Any]] = val_source
    if config.num_val_images is not None:  # e.g. the first 512 of the 2,000 fixed val scenes
        val_data = torch.utils.data.Subset(val_source, range(min(config.num_val_images, len(val_source))))
    val_loader = DataLoader(val_data, batch_size=config.batch_size, collate_fn=collate)
    val_batches: list[dict[str, Any]] = []
    val_errors: list[dict[str, Any]] = []
    for val_batch in val_loader:
        val_errors += val_batch["errors"]
        if "image" in val_batch:
            val_batches.append(val_batch)
    if val_errors and is_main:
        warnings.warn(
            f"Skipping {len(val_errors)} unreadable validation images, e.g. {val_errors[0]['error']}",
            RuntimeWarning,
            stacklevel=1,
        )

    # Model and optimiser, optionally starting from another checkpoint's matching weights (e.g. a
    # reconstruction-pretrained encoder for a classification fine-tune).
    if config.init_checkpoint:
        source_state = load_model(config.init_checkpoint).model.state_dict()
        own = model.state_dict()
        matching = {k: v for k, v in source_state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(matching, strict=False)
        if is_main:
            print(f"initialised {len(matching)}/{len(own)} tensors from {config.init_checkpoint}")
    if config.freeze_encoder:
        for parameter in model.encoder_parameters():
            parameter.requires_grad_(False)
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    step, elapsed = 0, 0.0
    if config.resume and state_path.exists():
        state = safe_torch_load(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        torch.set_rng_state(state["torch_rng"])
        if is_main:
            print(f"resumed from {state_path} at step {step}")
    teacher = build_teacher(config, device)
    trainable: torch.nn.Module = TaskLoss(model, config, teacher)
    if distributed:
        # Some parameters (e.g. the classifier head when reconstructing) get no gradient: find_unused_parameters.
        trainable = torch.nn.parallel.DistributedDataParallel(
            trainable, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    use_amp = config.amp and device.type == "cuda"

    writer = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output / "tensorboard"))
        writer.add_text("config", f"```\n{yaml.safe_dump(asdict(config))}\n```", step)

    def save(final: bool = False) -> None:
        if not is_main:
            return
        atomic_torch_save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed,
             "torch_rng": torch.get_rng_state(), "config": asdict(config)},
            state_path,
        )  # fmt: skip
        metadata = {
            "command": "python scripts/pretrain_mae.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "step": step,
            "wall_time_s": round(elapsed, 1),
            "device": str(device),
            "train_images": len(train_source),
            "config": asdict(config),
        }
        dtype = {"float16": torch.float16, "float32": None}[config.save_dtype]
        save_model(model_path, model, config.task, metadata=metadata, dtype=dtype)

    from tqdm import tqdm

    progress = tqdm(total=config.steps, initial=step, disable=not is_main, desc="pretrain", unit="step")
    generator = torch.Generator().manual_seed(config.seed * 7919 + rank + step)
    batches = training_batches(train_source, config, rank, step)  # a resumed run goes on where it stopped
    skipped = UnreadableFiles(len(train_source))  # the env's bookkeeping: warn once per file, count every skip
    model.train()
    while step < config.steps:
        start = time.perf_counter()
        batch = next(batches)
        for record in batch["errors"]:
            skipped.record_error(record)
        if "image" not in batch:
            # Every process samples all the files, so each one can tell on its own that none is readable.
            if skipped.all_failed:
                raise RuntimeError(
                    f"pretrain_mae.py requires readable training images, got none: all {len(train_source)} files "
                    f"of {train_source.description} failed to decode (e.g. {batch['errors'][0]['error']}); check "
                    "--data-root"
                )
            continue
        skipped.record_readable()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "errors"}
        count = int(torch.randint(config.min_glimpses, config.max_glimpses + 1, (1,), generator=generator))
        whole_first = bool(torch.rand(1, generator=generator) < config.whole_image_first)
        patches, boxes = sample_glimpses(
            batch["image"], count, config.grid_size, whole_first, generator, batch.get("target_box"),
            config.target_glimpses, (config.target_glimpse_scale[0], config.target_glimpse_scale[1]),
            config.target_glimpse_placement,
        )  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
        with autocast:
            loss = trainable(patches, boxes, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        elapsed += time.perf_counter() - start
        progress.update(1)
        if writer is not None and step % config.log_every == 0:
            with (output / "train_log.jsonl").open("a") as log:
                record = {"step": step, "loss": loss.item(), "glimpses": count, "skipped_images": skipped.count}
                log.write(json.dumps(record) + "\n")
            writer.add_scalar("data/skipped_images", skipped.count, step)
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            writer.add_scalar(f"train/loss_by_glimpses/{count}", loss.item(), step)
            progress.set_postfix(loss=f"{loss.item():.3f}", glimpses=count)
        if is_main and (step % config.eval_every == 0 or step == config.steps) and val_batches:
            results = evaluate(model, config, val_batches, device)
            name = get_task(config.task).validation_metric_name
            for key, value in results.items():
                assert writer is not None
                writer.add_scalar(f"val/{name}_{key}", value, step)
            progress.write(f"step {step}: val {name} " + ", ".join(f"{k}:{v:.3f}" for k, v in results.items()))
            if writer is not None:  # what the model makes of 8 glimpses, for tasks that predict images
                with torch.no_grad():
                    model.eval()
                    images = val_batches[0]["image"][:4].to(device)
                    patches_v, boxes_v = sample_glimpses(
                        images, 8, config.grid_size, True, torch.Generator().manual_seed(0)
                    )
                    task = get_task(config.task)
                    latent = model.forward_encoder(patches_v, boxes_v).latent
                    recon = task.prediction_images(model, task.head.predict(model, latent))
                    if recon is not None:
                        writer.add_images(
                            "val/reconstruction_8_glimpses", to_pixels(torch.cat((images, recon))) / 255, step
                        )
                    model.train()
        if step % config.checkpoint_every == 0 or step == config.steps:
            save()
    progress.close()
    if writer is not None:
        writer.close()
    if is_main:
        print(f"done: {step} steps in {elapsed / 60:.1f} min of training; model written to {model_path}")
        if skipped.count:
            print(f"skipped {skipped.count} unreadable samples from {len(skipped.files)} files (warned once each)")
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OutputDirectoryError, ConfigError) as error:
        sys.exit(str(error))
