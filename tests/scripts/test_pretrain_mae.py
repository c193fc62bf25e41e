"""Pretraining: the loss falls on a tiny folder, a resumed run continues from its step, DDP runs under torchrun."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import pretrain_mae

from adaglimpse_env.datasets import ImageSource, SeededOrder, TransformConfig, build_image_source, image_folder
from adaglimpse_env.models import create_model, load_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pretrain_mae.py"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pretrain_images")
    ys, xs = np.mgrid[0:96, 0:128]
    for i in range(4):  # smooth colour gradients: learnable in a few steps
        image = np.stack([(xs * (i + 1)) % 255, (ys * 2) % 255, np.full_like(xs, 40 * i)], axis=-1)
        Image.fromarray(image.astype(np.uint8)).save(root / f"{i}.png")
    return root


def base_args(folder: Path, output: Path, steps: int) -> list[str]:
    return [
        "--dataset", "folder", "--data-root", str(folder), "--model-size", "tiny", "--steps", str(steps),
        "--batch-size", "4", "--lr", "0.002", "--warmup-steps", "2", "--num-workers", "0", "--log-every", "1",
        "--eval-every", "1000", "--checkpoint-every", "5", "--eval-glimpses", "0", "2", "--min-glimpses", "2",
        "--max-glimpses", "2", "--output", str(output), "--threads", "1",
    ]  # fmt: skip


def losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "train_log.jsonl").read_text().splitlines()]


def test_loss_falls_and_checkpoint_loads_with_metadata(folder: Path, tmp_path: Path) -> None:
    assert pretrain_mae.main(base_args(folder, tmp_path, 30)) == 0
    history = losses(tmp_path)
    assert len(history) == 30
    assert np.mean(history[-5:]) < 0.8 * np.mean(history[:5])
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.task == "reconstruction" and loaded.metadata["step"] == 30
    assert "pretrain_mae.py" in loaded.metadata["command"]


def test_resume_continues_from_saved_step(folder: Path, tmp_path: Path) -> None:
    assert pretrain_mae.main(base_args(folder, tmp_path, 5)) == 0
    assert pretrain_mae.main([*base_args(folder, tmp_path, 8), "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # 1..5, then 6..8: nothing repeated, nothing skipped
    assert load_model(tmp_path / "model.pt").metadata["step"] == 8


def test_unwritable_output_fails_at_start(folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        pretrain_mae.main(base_args(folder, blocker / "run", 2))


def test_ddp_under_torchrun_with_two_cpu_processes(folder: Path, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        str(SCRIPT), *base_args(folder, tmp_path, 1), "--device", "cpu",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_model(tmp_path / "model.pt").metadata["step"] == 1


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / label).mkdir()
        for i in range(3):
            Image.new("RGB", (96, 96), tuple(c + 10 * i for c in colour)).save(root / label / f"{i}.png")
    return root


def head_args(output: Path, steps: int = 2, batch_size: int = 4) -> list[str]:
    return ["--model-size", "tiny", "--steps", str(steps), "--batch-size", str(batch_size), "--num-workers", "0",
            "--eval-every", "1000", "--checkpoint-every", str(steps), "--eval-glimpses", "2", "--min-glimpses", "1",
            "--max-glimpses", "2", "--output", str(output), "--threads", "1"]  # fmt: skip


def test_classification_from_folder_labels_and_from_a_timm_teacher(labelled_folder: Path, tmp_path: Path) -> None:
    common = ["--task", "classification", "--dataset", "folder", "--data-root", str(labelled_folder)]
    assert pretrain_mae.main([*common, *head_args(tmp_path / "labels")]) == 0
    assert load_model(tmp_path / "labels" / "model.pt").task == "classification"
    # Distillation from a timm model given by name (random weights here: nothing is downloaded).
    assert pretrain_mae.main([*common, *head_args(tmp_path / "teacher"), "--teacher", "vit_tiny_patch16_224"]) == 0
    assert load_model(tmp_path / "teacher" / "model.pt").metadata["config"]["teacher"] == "vit_tiny_patch16_224"


def test_segmentation_from_masks_with_encoder_from_reconstruction(folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "ade"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(root / "images" / split / f"{i}.jpg")
            mask = np.zeros((64, 64), dtype=np.uint8)
            mask[:, 32:] = 1 + i
            Image.fromarray(mask).save(root / "annotations" / split / f"{i}.png")
    assert pretrain_mae.main(base_args(folder, tmp_path / "rec", 2)) == 0
    # One step of two images (a batch, so that masks are stacked and the loss reduced over it): the paper's
    # convolutional segmentation head runs at 224 x 224 with 256 channels; two steps of four took two minutes.
    args = ["--task", "segmentation", "--dataset", "ade20k", "--data-root", str(root),
            "--num-segmentation-classes", "5", "--init-checkpoint", str(tmp_path / "rec" / "model.pt"),
            *head_args(tmp_path / "seg", steps=1, batch_size=2)]  # fmt: skip
    assert pretrain_mae.main(args) == 0
    loaded = load_model(tmp_path / "seg" / "model.pt")
    assert loaded.task == "segmentation" and loaded.model.config.out_chans == 5
    # The encoder started from the reconstruction model (a small step away), the segmentation head did not.
    reconstruction = load_model(tmp_path / "rec" / "model.pt").model
    start = reconstruction.blocks[0].attn.qkv.weight
    assert (loaded.model.blocks[0].attn.qkv.weight - start).abs().max() < 0.01
    assert (create_model("tiny", "segmentation").blocks[0].attn.qkv.weight - start).abs().max() > 0.05


def test_freeze_encoder_trains_only_the_decoder(folder: Path, tmp_path: Path) -> None:
    assert pretrain_mae.main(base_args(folder, tmp_path / "start", 2)) == 0
    start = load_model(tmp_path / "start" / "model.pt").model
    args = [*base_args(folder, tmp_path / "decoder", 6), "--init-checkpoint", str(tmp_path / "start" / "model.pt"),
            "--freeze-encoder"]  # fmt: skip
    assert pretrain_mae.main(args) == 0
    tuned = load_model(tmp_path / "decoder" / "model.pt").model
    for before, after in zip(start.encoder_parameters(), tuned.encoder_parameters(), strict=True):
        assert torch.equal(before, after)  # float16 both ways: bit for bit
    assert (tuned.decoder_pred.weight - start.decoder_pred.weight).abs().max() > 1e-3
    assert (tuned.decoder_blocks[0].attn.qkv.weight - start.decoder_blocks[0].attn.qkv.weight).abs().max() > 1e-3
    names = {name for name, _ in start.named_parameters()}
    encoder = {id(parameter) for parameter in start.encoder_parameters()}
    trained = {name for name, parameter in start.named_parameters() if id(parameter) not in encoder}
    assert trained == {name for name in names if name.startswith(("decoder_", "mask_token", "head."))}


def test_sources_are_built_with_the_configured_transforms(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[str, TransformConfig, ImageSource]] = []

    def recording(dataset: str, split: str, **kwargs: Any) -> ImageSource:
        source = build_image_source(dataset, split, **kwargs)
        built.append((split, kwargs["transform"], source))
        return source

    monkeypatch.setattr(pretrain_mae, "build_image_source", recording)
    args = [*base_args(folder, tmp_path, 1), "--crop-scale-min", "0.5", "--color-jitter", "0.2", "--vertical-flip"]
    assert pretrain_mae.main(args) == 0
    (train_split, train, train_source), (val_split, val, val_source) = built
    assert (train_split, val_split) == ("train", "val")
    assert train == TransformConfig(size=val.size, train=True, scale=(0.5, 1.0), color_jitter=0.2, vertical_flip=True)
    assert val == TransformConfig(size=val.size)  # held-out images: the deterministic centre crop
    # The sources keep the transforms they were built with (nothing overwrites them afterwards).
    assert train_source.transform is train and val_source.transform is val


def test_training_batches_resume_where_the_run_stopped(folder: Path) -> None:
    config = replace(pretrain_mae.parse_args(base_args(folder, Path("unused"), 1)), batch_size=3)
    source = image_folder(folder, pretrain_mae.train_transform(config, 32))
    whole = list(itertools.islice(pretrain_mae.training_batches(source, config, rank=0, step=0), 6))
    resumed = list(itertools.islice(pretrain_mae.training_batches(source, config, rank=0, step=4), 2))
    for before, after in zip(whole[4:], resumed, strict=True):
        assert torch.equal(before["image"], after["image"]) and torch.equal(before["label"], after["label"])
    # Batches are the env's sampler's pairs, three at a time, running across epoch ends (4 images).
    pairs = list(itertools.islice(SeededOrder(4, config.seed), 18))
    for k, batch in enumerate(whole):
        assert torch.equal(batch["image"], torch.stack([source[pair]["image"] for pair in pairs[3 * k : 3 * k + 3]]))
    other_rank = next(pretrain_mae.training_batches(source, config, rank=1, step=0))
    assert not torch.equal(other_rank["image"], whole[0]["image"])
