"""scripts/probe_reconstruction.py: the native glimpses it cuts, the patches it compares, and its table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_model

from adaglimpse_env.glimpse import extract_patches
from adaglimpse_env.models import save_model
from adaglimpse_env.normalization import to_pixels
from adaglimpse_env.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import probe_reconstruction


def test_native_glimpses_are_grid_aligned_32_px_squares_of_four_cells() -> None:
    boxes = probe_reconstruction.native_glimpses(torch.zeros(3, 3, 224, 224), 5, torch.Generator().manual_seed(0))
    assert boxes.shape == (15, 4, 4)
    assert (boxes % 16 == 0).all() and (boxes >= 0).all() and (boxes <= 224).all()
    assert ((boxes[..., 2] - boxes[..., 0]) == 16).all() and ((boxes[..., 3] - boxes[..., 1]) == 16).all()
    corner = boxes[:, :1, :2]
    offsets = torch.tensor([[0, 0], [0, 16], [16, 0], [16, 16]])
    assert torch.equal(boxes[..., :2] - corner, offsets.expand(15, -1, -1))


def test_the_decoded_and_true_patches_are_the_ones_at_the_glimpse() -> None:
    model, task = tiny_model().eval(), get_task("reconstruction")
    images = torch.randn(2, 3, 224, 224)
    tokens = probe_reconstruction.encode_glimpses(model, task, images, count=3, seed=0)
    boxes = probe_reconstruction.native_glimpses(images, 3, torch.Generator().manual_seed(0))
    assert tokens["latent"].shape == (24, model.config.embed_dim) and tokens["patch"].shape == (24, 768)
    # Token 5 is the second cell of the second glimpse of the first image: its true patch is those pixels.
    y1, x1, y2, x2 = boxes[1, 1].tolist()
    expected = images[0, :, y1:y2, x1:x2].permute(1, 2, 0).reshape(-1).double()
    torch.testing.assert_close(tokens["patch"][5], expected)
    # and its decoded patch is the decoder's output there, for that glimpse encoded alone.
    picture = images[:1]
    with torch.no_grad():
        latent = model.forward_encoder(extract_patches(picture, boxes[1:2]), boxes[1:2]).latent
        decoded = model.unpatchify(task.head.predict(model, latent))[0, :, y1:y2, x1:x2]
    # (float32 forwards of a batch of 6 and of 1 differ in the last bits)
    torch.testing.assert_close(tokens["decoded"][5], decoded.permute(1, 2, 0).reshape(-1).double(), atol=1e-5, rtol=0)


def test_pixel_rmse_is_the_rmse_of_the_images_on_the_0_255_scale() -> None:
    model = tiny_model()
    a, b = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 224, 224)  # partly outside [0, 255]: clipped
    by_hand = float((to_pixels(a) - to_pixels(b)).double().square().mean().sqrt())
    patches = probe_reconstruction.pixel_rmse(
        model.patchify(a).flatten(0, 1).double(), model.patchify(b).flatten(0, 1).double()
    )
    assert patches == pytest.approx(by_hand, rel=1e-6)


def test_probe_prints_and_writes_its_table(tmp_path: Path, capsys) -> None:
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    save_model(tmp_path / "tiny.pt", tiny_model(), "reconstruction")
    args = ["--env-id", "AdaGlimpse-ImageFolder-v0", "--env-kwargs", f"data_root={tmp_path}",
            f"checkpoint={tmp_path / 'tiny.pt'}", "--train-images", "3", "--val-images", "2",
            "--glimpses-per-image", "2", "--output", str(tmp_path / "probe.json")]  # fmt: skip
    assert probe_reconstruction.main(args) == 0
    result = json.loads((tmp_path / "probe.json").read_text())
    assert result["tokens"] == 2 * 2 * 4 and result["train_tokens"] == 3 * 2 * 4
    assert set(result["rmse"]) == {"decoder", "linear probe on the encoder", "each patch's mean colour",
                                   "PCA of the latent's width"}  # fmt: skip
    assert all(0.0 < value < 255.0 for value in result["rmse"].values())
    assert "| decoder |" in capsys.readouterr().out


def test_probe_refuses_other_tasks() -> None:
    with pytest.raises(probe_reconstruction.ConfigError, match="needs a reconstruction env"):
        probe_reconstruction.main(["--env-id", "AdaGlimpse-ClutteredDigits-Fast-v0", "--train-images", "1"])
