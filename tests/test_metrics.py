"""Task metrics (original metrics): global RMSE, top-1 accuracy, and segmentation mIoU / PA / mPA."""

from __future__ import annotations

import math

import pytest
import torch

from adaglimpse_env.metrics import (
    AccuracyMeter,
    RMSEMeter,
    SegmentationMeter,
    confusion_matrix,
    segmentation_scores,
)
from adaglimpse_env.models import ReconstructionHead, create_model
from adaglimpse_env.normalization import normalize, to_pixels

# Hand example: two 2 x 2 images, 3 classes, 255 = ignore. Class 2 appears only as the prediction of an
# ignored pixel, so after ignoring it is absent from both prediction and target and gets weight 0.
TARGET = torch.tensor([[[0, 0], [1, 255]], [[0, 1], [1, 1]]])
PREDICTION = torch.tensor([[[0, 1], [1, 2]], [[0, 1], [0, 1]]])
CONFUSION_0 = [[1, 1, 0], [0, 1, 0], [0, 0, 0]]  # rows = target, columns = prediction
CONFUSION_1 = [[1, 0, 0], [1, 2, 0], [0, 0, 0]]


def one_hot_logits(prediction: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(prediction, num_classes).permute(0, 3, 1, 2).float()


# ------------------------------------------------------------------------------------------------ RMSE
def test_rmse_is_global_not_mean_of_per_image() -> None:
    meter = RMSEMeter()
    assert math.isnan(meter.compute())
    pixels = 3 * 4 * 4
    # image 0 is perfect, image 1 is off by 10 everywhere
    meter.update(torch.tensor([0.0, 100.0 * pixels]), pixels)
    global_rmse = math.sqrt((0 + 100 * pixels) / (2 * pixels))
    assert meter.compute() == pytest.approx(global_rmse)  # sqrt(50) = 7.07...
    mean_of_per_image = (0.0 + 10.0) / 2
    assert abs(meter.compute() - mean_of_per_image) > 2


def test_rmse_accumulates_over_updates() -> None:
    split, whole = RMSEMeter(), RMSEMeter()
    errors = torch.tensor([4.0, 9.0, 16.0, 1.0])
    split.update(errors[:1], 2)
    split.update(errors[1:], 2)
    whole.update(errors, 2)
    assert split.compute() == pytest.approx(whole.compute())
    assert whole.compute() == pytest.approx(math.sqrt(30 / 8))


def test_rmse_meter_with_reconstruction_head() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", "reconstruction", depth=1, decoder_depth=1)
    generator = torch.Generator().manual_seed(1)
    raw = 0.1 + 0.8 * torch.rand(2, 3, 224, 224, generator=generator)
    images = normalize(raw)
    offset = torch.tensor([0.0, 6.0]).reshape(2, 1, 1, 1) / 255
    prediction = model.patchify(normalize(raw + offset))
    meter = RMSEMeter()
    meter.update(ReconstructionHead.squared_error(model, prediction, images), images[0].numel())
    # global: sqrt((0 + 36) / 2) = sqrt(18); the mean of per-image RMSEs would be 3
    assert meter.compute() == pytest.approx(math.sqrt(18), abs=1e-3)
    direct = (to_pixels(model.unpatchify(prediction)) - to_pixels(images)).square().mean().sqrt()
    assert meter.compute() == pytest.approx(direct.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ accuracy
def test_accuracy_meter() -> None:
    meter = AccuracyMeter()
    assert math.isnan(meter.compute())
    logits = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    meter.update(logits, torch.tensor([1, 1, 2]))
    assert meter.compute() == pytest.approx(2 / 3)
    meter.update(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([2]))
    assert meter.compute() == pytest.approx(2 / 4)  # micro: counts, not mean of batch accuracies


# ------------------------------------------------------------------------------------------------ segmentation
def test_confusion_matrix_hand_example() -> None:
    got = confusion_matrix(PREDICTION, TARGET, 3)
    assert got.shape == (2, 3, 3)
    assert got.dtype == torch.int64
    assert got.tolist() == [CONFUSION_0, CONFUSION_1]


def test_segmentation_scores_hand_example() -> None:
    total = segmentation_scores(torch.tensor(CONFUSION_0) + torch.tensor(CONFUSION_1))
    # TP (2, 3, 0); target counts (3, 4, 0); predicted counts (3, 4, 0); union (4, 5, 0)
    # class 2 is absent from both -> weight 0 (with weight it would be (0.5 + 0.6 + 0) / 3)
    assert total["miou"].item() == pytest.approx((2 / 4 + 3 / 5) / 2)
    assert total["pixel_accuracy"].item() == pytest.approx(5 / 7)
    assert total["mean_pixel_accuracy"].item() == pytest.approx((2 / 3 + 3 / 4) / 2)
    per_image = segmentation_scores(confusion_matrix(PREDICTION, TARGET, 3))
    assert per_image["miou"].tolist() == pytest.approx([(1 / 2 + 1 / 2) / 2, (1 / 2 + 2 / 3) / 2])
    assert per_image["pixel_accuracy"].tolist() == pytest.approx([2 / 3, 3 / 4])
    assert per_image["mean_pixel_accuracy"].tolist() == pytest.approx([(1 / 2 + 1) / 2, (1 + 2 / 3) / 2])
    assert per_image["miou"].dtype == torch.float64


def test_segmentation_scores_predicted_but_absent_class_counts() -> None:
    # class 2 is predicted but not in the target: it has weight 1 with IoU 0 and accuracy 0 (torchmetrics)
    target = torch.tensor([[[0, 0]]])
    prediction = torch.tensor([[[0, 2]]])
    scores = segmentation_scores(confusion_matrix(prediction, target, 3)[0])
    assert scores["miou"].item() == pytest.approx((1 / 2 + 0) / 2)
    assert scores["mean_pixel_accuracy"].item() == pytest.approx((1 / 2 + 0) / 2)
    assert scores["pixel_accuracy"].item() == pytest.approx(1 / 2)


def test_segmentation_scores_all_ignored() -> None:
    target = torch.full((1, 2, 2), 255)
    scores = segmentation_scores(confusion_matrix(torch.zeros(1, 2, 2, dtype=torch.int64), target, 3))
    assert confusion_matrix(torch.zeros(1, 2, 2, dtype=torch.int64), target, 3).sum() == 0
    for value in scores.values():
        assert value.item() == 0.0


def test_segmentation_meter_hand_example() -> None:
    meter = SegmentationMeter(3)
    meter.update(one_hot_logits(PREDICTION, 3), TARGET)
    scores = meter.compute()
    assert set(scores) == {"miou", "pixel_accuracy", "mean_pixel_accuracy"}
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["miou"] == pytest.approx(0.55)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 7)
    assert scores["mean_pixel_accuracy"] == pytest.approx(17 / 24)


def test_segmentation_meter_two_batches_equal_one() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 6, 7, generator=generator)
    target = torch.randint(0, 4, (5, 6, 7), generator=generator)
    target[torch.rand(5, 6, 7, generator=generator) < 0.2] = 255
    split, whole = SegmentationMeter(4), SegmentationMeter(4)
    split.update(logits[:2], target[:2])
    split.update(logits[2:], target[2:])
    whole.update(logits, target)
    assert torch.equal(split.confusion, whole.confusion)
    assert split.compute() == pytest.approx(whole.compute())
    # the running confusion is the sum of the per-image matrices; ignored pixels are not counted
    assert int(whole.confusion.sum()) == int((target != 255).sum())
    # the dataset-level pixel accuracy is the pixel-weighted (not plain) mean of per-image accuracies
    per_image = segmentation_scores(confusion_matrix(logits.argmax(1), target, 4))
    assert whole.compute()["pixel_accuracy"] == pytest.approx(
        float(per_image["pixel_accuracy"].mul((target != 255).sum(dim=(1, 2))).sum() / (target != 255).sum())
    )
