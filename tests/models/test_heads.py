"""Task heads (original `_forward_task`): per-image scores and training losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adaglimpse_env.models import (
    ClassificationHead,
    ReconstructionHead,
    SegmentationHead,
    create_model,
    create_task_head,
)
from adaglimpse_env.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize

MEAN = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)


@pytest.fixture(scope="module")
def recon_model():
    torch.manual_seed(0)
    return create_model("tiny", "reconstruction", depth=2, decoder_depth=1).eval()


def pixels_reference(normalised: torch.Tensor) -> torch.Tensor:
    """``clip((x * std + mean) * 255, 0, 255)`` written out."""
    return torch.clip((normalised * STD + MEAN) * 255, 0, 255)


def valid_images(batch: int, seed: int = 0) -> torch.Tensor:
    """Normalised images whose pixels lie well inside [0, 1], so clipping never applies."""
    generator = torch.Generator().manual_seed(seed)
    return normalize(0.1 + 0.8 * torch.rand(batch, 3, 224, 224, generator=generator))


# ------------------------------------------------------------------------------------------------ registry
def test_create_task_head() -> None:
    assert isinstance(create_task_head("reconstruction"), ReconstructionHead)
    assert isinstance(create_task_head("classification"), ClassificationHead)
    assert isinstance(create_task_head("segmentation"), SegmentationHead)
    with pytest.raises(ValueError, match="detection") as error:
        create_task_head("detection")
    for name in ("reconstruction", "classification", "segmentation"):
        assert name in str(error.value)
    assert ReconstructionHead.decoder_type == "standard"
    assert ClassificationHead.decoder_type == "none"
    assert SegmentationHead.decoder_type == "segment"


# ------------------------------------------------------------------------------------------------ reconstruction
def test_reconstruction_predict_shape(recon_model) -> None:
    head = ReconstructionHead()
    latent = torch.randn(2, 5, 192)
    with torch.no_grad():
        prediction = head.predict(recon_model, latent)
    assert prediction.shape == (2, 196, 768)
    assert torch.equal(prediction, recon_model.forward_decoder(latent))
    assert head.reconstruct(recon_model, prediction).shape == (2, 3, 224, 224)


def test_reconstruction_score_perfect_prediction_is_zero(recon_model) -> None:
    images = valid_images(2)
    score = ReconstructionHead().score(recon_model, recon_model.patchify(images), images, None)
    assert score.shape == (2,)
    assert score.dtype == torch.float32
    assert score.abs().max().item() < 1e-3


def test_reconstruction_score_constant_pixel_offset(recon_model) -> None:
    # pixels in [0.1, 0.9]; add 10/255 to every pixel of image 0 and 3/255 to image 1, still inside [0, 1]
    generator = torch.Generator().manual_seed(1)
    raw = 0.1 + 0.8 * torch.rand(2, 3, 224, 224, generator=generator)
    offset = torch.tensor([10.0, 3.0]).reshape(2, 1, 1, 1) / 255
    images, predicted = normalize(raw), normalize(raw + offset)
    score = ReconstructionHead().score(recon_model, recon_model.patchify(predicted), images, None)
    torch.testing.assert_close(score, torch.tensor([-10.0, -3.0]), atol=2e-3, rtol=0)


def test_reconstruction_score_one_channel_offset(recon_model) -> None:
    # error of 12 on one channel only: RMSE over (C, H, W) = sqrt(144 / 3)
    raw = torch.full((1, 3, 224, 224), 0.5)
    shifted = raw.clone()
    shifted[:, 1] += 12 / 255
    score = ReconstructionHead().score(recon_model, recon_model.patchify(normalize(shifted)), normalize(raw), None)
    assert score.item() == pytest.approx(-math.sqrt(48), abs=2e-3)


def test_reconstruction_score_matches_direct_formula_with_clipping(recon_model) -> None:
    generator = torch.Generator().manual_seed(2)
    images = 2.5 * torch.randn(3, 3, 224, 224, generator=generator)  # well outside [0, 1] after de-normalising
    prediction = 2.5 * torch.randn(3, 196, 768, generator=generator)
    score = ReconstructionHead().score(recon_model, prediction, images, None)
    predicted_image = recon_model.unpatchify(prediction)
    expected = -((pixels_reference(predicted_image) - pixels_reference(images)) ** 2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(score, expected, atol=1e-3, rtol=1e-5)
    # clipping matters: without it the score would differ
    unclipped = -(((predicted_image - images) * STD * 255) ** 2).mean(dim=(1, 2, 3)).sqrt()
    assert (unclipped - expected).abs().min() > 1.0


def test_reconstruction_squared_error_per_image(recon_model) -> None:
    images = valid_images(2, seed=3)
    prediction = recon_model.patchify(images).clone()
    prediction[1] += 0.1
    se = ReconstructionHead.squared_error(recon_model, prediction, images)
    expected = ((pixels_reference(recon_model.unpatchify(prediction)) - pixels_reference(images)) ** 2).sum(
        dim=(1, 2, 3)
    )
    assert se.shape == (2,)
    torch.testing.assert_close(se, expected, rtol=1e-4, atol=1e-2)


def test_reconstruction_loss_is_batch_sum_of_per_image_mse(recon_model) -> None:
    head = ReconstructionHead()
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    target = recon_model.patchify(images)
    # per-image constant error c_b in normalised space -> per-image MSE c_b^2, loss = sum_b c_b^2
    errors = torch.tensor([0.5, 1.0, 2.0]).reshape(3, 1, 1)
    loss = head.loss(recon_model, target + errors, images, None)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(0.25 + 1.0 + 4.0, rel=1e-5)
    # equal errors: B x mean-MSE
    prediction = target + torch.randn(target.shape, generator=torch.Generator().manual_seed(5))
    loss = head.loss(recon_model, prediction, images, None)
    assert loss.item() == pytest.approx(3 * F.mse_loss(prediction, target).item(), rel=1e-5)
    per_image = ((prediction - target) ** 2).mean(dim=(1, 2))
    assert loss.item() == pytest.approx(per_image.sum().item(), rel=1e-5)


def test_reconstruction_loss_has_gradient(recon_model) -> None:
    images = torch.randn(1, 3, 224, 224)
    prediction = torch.zeros(1, 196, 768, requires_grad=True)
    ReconstructionHead().loss(recon_model, prediction, images, None).backward()
    torch.testing.assert_close(prediction.grad, -2 * recon_model.patchify(images) / (196 * 768))


# ------------------------------------------------------------------------------------------------ classification
def test_classification_score_true_class_or_max() -> None:
    head = ClassificationHead()
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 3.0, 1.0], [2.0, 0.0, -1.0], [0.3, 0.2, 0.1]])
    probabilities = logits.softmax(dim=-1)
    target = torch.tensor([0, -1, 2, 1])
    score = head.score(None, logits, None, target)  # type: ignore[arg-type]
    expected = torch.stack([probabilities[0, 0], probabilities[1].max(), probabilities[2, 2], probabilities[3, 1]])
    torch.testing.assert_close(score, expected)
    assert score.shape == (4,)
    # no labels: max probability everywhere
    torch.testing.assert_close(head.score(None, logits, None, None), probabilities.max(dim=-1).values)  # type: ignore[arg-type]
    # hand value: logits (0, ln 3) -> probabilities (1/4, 3/4)
    two = torch.tensor([[0.0, math.log(3.0)]])
    assert head.score(None, two, None, torch.tensor([0])).item() == pytest.approx(0.25)  # type: ignore[arg-type]
    assert head.score(None, two, None, torch.tensor([-1])).item() == pytest.approx(0.75)  # type: ignore[arg-type]


def test_classification_predict_and_loss() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", "classification", depth=1).eval()
    head = ClassificationHead()
    latent = torch.randn(2, 4, 192)
    logits = head.predict(model, latent)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, model.forward_head(latent))
    target = torch.tensor([3, 999])
    loss = head.loss(model, logits, None, target)  # type: ignore[arg-type]
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))
    manual = -(logits.log_softmax(dim=-1)[torch.arange(2), target]).mean()
    torch.testing.assert_close(loss, manual)
    with pytest.raises(ValueError, match="labels"):
        head.loss(model, logits, None, None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ segmentation
def test_segmentation_score_hand_example() -> None:
    head = SegmentationHead()
    # uniform logits over C = 3 classes: every labelled pixel has CE = ln 3
    logits = torch.zeros(2, 3, 2, 2)
    target = torch.tensor([[[0, 1], [2, 255]], [[255, 255], [1, 255]]])
    score = head.score(None, logits, None, target)  # type: ignore[arg-type]
    # ignored pixels contribute 0 but count in the denominator of 4 pixels
    torch.testing.assert_close(score, torch.tensor([-0.75 * math.log(3), -0.25 * math.log(3)]))
    loss = head.loss(None, logits, None, target)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(0.5 * math.log(3), rel=1e-6)


def test_segmentation_score_non_uniform_logits() -> None:
    head = SegmentationHead()
    # two classes, logits (a, 0): CE(target 0) = log(1 + e^-a), CE(target 1) = log(1 + e^a)
    a = 1.5
    logits = torch.zeros(1, 2, 1, 3)
    logits[:, 0] = a
    target = torch.tensor([[[0, 1, 255]]])
    expected = (math.log1p(math.exp(-a)) + math.log1p(math.exp(a)) + 0.0) / 3
    score = head.score(None, logits, None, target)  # type: ignore[arg-type]
    assert score.item() == pytest.approx(-expected, rel=1e-6)
    per_pixel = F.cross_entropy(logits, target, reduction="none", ignore_index=255)
    assert score.item() == pytest.approx(-per_pixel.mean().item(), rel=1e-6)


def test_segmentation_needs_target() -> None:
    head = SegmentationHead()
    with pytest.raises(ValueError, match="target"):
        head.score(None, torch.zeros(1, 2, 2, 2), None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        head.loss(None, torch.zeros(1, 2, 2, 2), None, None)  # type: ignore[arg-type]


def test_segmentation_predict_shape() -> None:
    torch.manual_seed(0)
    model = create_model(
        "tiny", "segmentation", num_segmentation_classes=4, depth=1, decoder_depth=1, img_size=(32, 48)
    ).eval()
    latent = torch.randn(2, 3, 192)
    with torch.no_grad():
        logits = SegmentationHead().predict(model, latent)
    assert logits.shape == (2, 4, 32, 48)
