"""Task metrics, accumulated over many images the way the original's torchmetrics do (original metrics).

Each meter has ``update(...)`` with per-batch tensors and ``compute()`` returning plain floats, plus a per-image
function the env reports in ``info``.
"""

from __future__ import annotations

import torch

from adaglimpse_env.models.heads import IGNORE_INDEX


class RMSEMeter:
    """Global RMSE ``sqrt(sum SE / sum count)`` over all pixels and channels of all images (not a mean of
    per-image RMSEs), in 0-255 units."""

    def __init__(self) -> None:
        self.sum_squared_error = 0.0
        self.count = 0

    def update(self, squared_error: torch.Tensor, pixels_per_image: int) -> None:
        """Add images.

        Args:
            squared_error: ``(B,)`` per-image sum of squared errors.
            pixels_per_image: values per image (``C * H * W``).
        """
        self.sum_squared_error += float(squared_error.double().sum())
        self.count += squared_error.numel() * pixels_per_image

    def compute(self) -> float:
        """The RMSE so far (nan before any update)."""
        return (self.sum_squared_error / self.count) ** 0.5 if self.count else float("nan")


class AccuracyMeter:
    """Top-1 accuracy (micro average)."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``(B, K)`` logits against ``(B,)`` labels."""
        self.correct += int((logits.argmax(dim=-1) == target).sum())
        self.total += target.numel()

    def compute(self) -> float:
        """Accuracy in ``[0, 1]`` (nan before any update)."""
        return self.correct / self.total if self.total else float("nan")


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-image confusion matrices, ignoring ``IGNORE_INDEX`` pixels.

    Args:
        prediction: ``(B, H, W)`` int64 predicted classes in ``[0, C)`` (an ``argmax`` over the class logits).
        target: ``(B, H, W)`` int64 labels in ``[0, C)`` or ``IGNORE_INDEX``.
        num_classes: ``C``.

    Returns:
        ``(B, C, C)`` int64, rows = target, columns = prediction.
    """
    batch = target.shape[0]
    cells = batch * num_classes * num_classes
    image_index = torch.arange(batch, device=target.device)[:, None, None].expand_as(target)
    flat = (image_index * num_classes + target.clamp(0, num_classes - 1)) * num_classes + prediction
    # Ignored pixels go to one extra bin that is dropped. Unlike boolean indexing followed by ``bincount``
    # (whose output size depends on the data), a fixed-size scatter never waits for the GPU.
    flat = torch.where(target != IGNORE_INDEX, flat, cells).flatten()
    counts = torch.zeros(cells + 1, dtype=torch.int64, device=target.device)
    counts.scatter_add_(0, flat, torch.ones((), dtype=torch.int64, device=flat.device).expand_as(flat))
    return counts[:cells].reshape(batch, num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """mIoU, pixel accuracy and mean pixel accuracy from confusion matrices.

    Classes absent from both target and prediction get no weight in the macro averages, as torchmetrics.

    Args:
        confusion: ``(..., C, C)``.

    Returns:
        ``{"miou", "pixel_accuracy", "mean_pixel_accuracy"}``, each ``(...)`` float64.
    """
    confusion = confusion.double()
    true_positive = confusion.diagonal(dim1=-2, dim2=-1)
    target_count = confusion.sum(dim=-1)
    predicted_count = confusion.sum(dim=-2)
    union = target_count + predicted_count - true_positive
    present = union > 0
    iou = torch.where(present, true_positive / union.clamp_min(1), 0.0)
    class_accuracy = torch.where(target_count > 0, true_positive / target_count.clamp_min(1), 0.0)
    num_present = present.sum(dim=-1).clamp_min(1)
    return {
        "miou": iou.sum(dim=-1) / num_present,
        "pixel_accuracy": true_positive.sum(dim=-1) / confusion.sum(dim=(-2, -1)).clamp_min(1),
        "mean_pixel_accuracy": class_accuracy.sum(dim=-1) / num_present,
    }


class SegmentationMeter:
    """Dataset-level mIoU, pixel accuracy and mean pixel accuracy from one running confusion matrix."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``(B, C, H, W)`` logits against ``(B, H, W)`` labels."""
        per_image = confusion_matrix(logits.argmax(dim=1), target, self.num_classes)
        self.confusion += per_image.sum(dim=0).cpu()

    def compute(self) -> dict[str, float]:
        """The three scores as floats."""
        return {name: float(value) for name, value in segmentation_scores(self.confusion).items()}
