"""Task heads: turn the encoder latent into a prediction, a per-image score, a training loss and a metric.

The original's `_forward_task` (scores) and original metrics (metrics). The score is what the reward is built from;
higher is better:

============== ============================================== =====================================
task           score (per image)                              metric
============== ============================================== =====================================
reconstruction ``-RMSE`` in 0-255 pixel units                 RMSE (global, over all pixels)
classification true-class probability if the label is known,  top-1 accuracy
               otherwise the max probability
segmentation   ``-cross-entropy`` (ignore index 255 counted   mIoU, pixel accuracy, mean pixel acc.
               in the denominator, as the original)
============== ============================================== =====================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from adaglimpse_env.models.blocks import ConstantTokens
from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.normalization import to_pixels

TaskName = Literal["reconstruction", "classification", "segmentation"]
TASKS: tuple[TaskName, ...] = ("reconstruction", "classification", "segmentation")
IGNORE_INDEX = 255
"""Segmentation label of unlabelled pixels (original `datasets/`)."""
DEFAULT_SEGMENTATION_CLASSES = 150
"""Segmentation classes of ADE20K, the original's segmentation dataset (original `datasets/`)."""


class TaskHead(ABC):
    """One task's view of the frozen model. Stateless: metrics live in :mod:`adaglimpse_env.metrics`."""

    name: ClassVar[TaskName]
    decoder_type: ClassVar[str]
    """The :class:`~adaglimpse_env.models.mae.MAEConfig` decoder type the task needs."""

    @abstractmethod
    def predict(
        self,
        model: ElasticMAE,
        latent: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        *,
        decoder_constants: ConstantTokens | None = None,
    ) -> torch.Tensor:
        """Task output from the latent ``(B, 1 + n, D)``; ``pad_mask (B, n, 1)`` marks empty token slots.

        ``decoder_constants`` (from :meth:`ElasticMAE.decoder_constants`) lets a frozen decoder skip its
        input-independent work; heads without a decoder ignore it.
        """

    @property
    def needs_decoder(self) -> bool:
        """Whether the model must carry the decoder of :attr:`decoder_type` (classification reads the encoder only)."""
        return self.decoder_type != "none"

    def decoder_out_chans(self, num_segmentation_classes: int | None = None) -> int:
        """Channels per decoded pixel of the model this head reads: 3 (RGB) unless the task predicts classes."""
        return 3

    @abstractmethod
    def score(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-image score ``(B,)`` float32, higher is better.

        Args:
            target: what the task compares with besides the images: ``(B,)`` int64 labels for classification,
                ``(B, H, W)`` int64 masks for segmentation, unused (None) for reconstruction.
        """

    @abstractmethod
    def loss(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Training loss (scalar), as the original computes it."""


class DecoderTaskHead(TaskHead):
    """A task whose prediction is the MAE decoder's output (reconstruction patches or segmentation logits)."""

    def predict(
        self,
        model: ElasticMAE,
        latent: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        *,
        decoder_constants: ConstantTokens | None = None,
    ) -> torch.Tensor:
        """``(B, 1 + n, D)`` -> the decoder output: ``(B, G, p*p*3)`` normalised-pixel patches for the
        ``"standard"`` decoder, ``(B, C, H, W)`` logits for the ``"segment"`` decoder."""
        return model.forward_decoder(latent, pad_mask, decoder_constants)


class ReconstructionHead(DecoderTaskHead):
    """Reconstruct the whole image with the MAE decoder."""

    name = "reconstruction"
    decoder_type = "standard"

    @staticmethod
    def squared_error(
        model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, image_pixels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-image sum of squared errors on the 0-255 scale, ``(B,)`` (for global RMSE accumulation).

        Args:
            image_pixels: ``to_pixels(images.float())`` if already known (an env keeps it for the episode).
        """
        error = to_pixels(model.unpatchify(prediction).float())  # a fresh tensor: the rest is in place
        error -= to_pixels(images.float()) if image_pixels is None else image_pixels
        return error.square_().flatten(1).sum(dim=1)

    def score(
        self,
        model: ElasticMAE,
        prediction: torch.Tensor,
        images: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        image_pixels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``-RMSE`` per image in 0-255 units (original `_forward_task`).

        Args:
            target: unused (reconstruction compares with the images themselves).
            image_pixels: optional ``to_pixels(images.float())`` ``(B, 3, H, W)``, the images on the 0-255 scale,
                so a caller scoring the same images every step converts them once (same result).
        """
        count = images[0].numel()
        return -(self.squared_error(model, prediction, images, image_pixels) / count).sqrt()

    def loss(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-image MSE in normalised space, summed over the batch (original `mae.py`)."""
        per_patch = (prediction - model.patchify(images)).square().mean(dim=-1)  # (B, G)
        return per_patch.sum() / per_patch.shape[1]

    def reconstruct(self, model: ElasticMAE, prediction: torch.Tensor) -> torch.Tensor:
        """Prediction as a normalised image ``(B, 3, H, W)``."""
        return model.unpatchify(prediction)


class ClassificationHead(TaskHead):
    """Classify from the cls token."""

    name = "classification"
    decoder_type = "none"

    def predict(
        self,
        model: ElasticMAE,
        latent: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        *,
        decoder_constants: ConstantTokens | None = None,
    ) -> torch.Tensor:
        """``(B, 1 + n, D)`` -> ``(B, num_classes)`` logits (the cls token never attends to empty slots)."""
        return model.forward_head(latent)

    def score(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """True-class probability where the label is known (``>= 0``), max probability elsewhere.

        Args:
            target: ``(B,)`` int64 labels, ``-1`` (or None for all) where unknown.
        """
        probabilities = prediction.float().softmax(dim=-1)
        best = probabilities.max(dim=-1).values
        if target is None:
            return best
        known = target >= 0
        true_class = probabilities.gather(1, target.clamp_min(0)[:, None]).squeeze(1)
        return torch.where(known, true_class, best)

    def loss(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Cross-entropy with the labels."""
        if target is None:
            raise ValueError("ClassificationHead.loss requires labels (B,), got None")
        return F.cross_entropy(prediction.float(), target)


class SegmentationHead(DecoderTaskHead):
    """Per-pixel classes from the decoder's up-sampling head."""

    name = "segmentation"
    decoder_type = "segment"

    def decoder_out_chans(self, num_segmentation_classes: int | None = None) -> int:
        """One logit per class: ``num_segmentation_classes`` (default: ADE20K's 150)."""
        return num_segmentation_classes or DEFAULT_SEGMENTATION_CLASSES

    @staticmethod
    def pixel_cross_entropy(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image mean cross-entropy ``(B,)``; ignored pixels add 0 but count in the mean (original
        `_forward_task`)."""
        loss = F.cross_entropy(prediction.float(), target, reduction="none", ignore_index=IGNORE_INDEX)
        return loss.flatten(1).mean(dim=1)

    def score(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """``-cross-entropy`` per image; needs the mask ``(B, H, W)`` int64."""
        if target is None:
            raise ValueError("SegmentationHead.score requires a target mask (B, H, W), got None")
        return -self.pixel_cross_entropy(prediction, target)

    def loss(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean over the batch of the per-image cross-entropy."""
        if target is None:
            raise ValueError("SegmentationHead.loss requires a target mask (B, H, W), got None")
        return self.pixel_cross_entropy(prediction, target).mean()


_HEADS: dict[str, type[TaskHead]] = {
    "reconstruction": ReconstructionHead,
    "classification": ClassificationHead,
    "segmentation": SegmentationHead,
}


def task_for_decoder(decoder_type: str) -> str:
    """The task a model was trained for, from its decoder type (original `mae.py` variants)."""
    return next(name for name, head in _HEADS.items() if head.decoder_type == decoder_type)


def create_task_head(task: str) -> TaskHead:
    """The head of a task by name.

    Raises:
        ValueError: for an unknown task.
    """
    if task not in _HEADS:
        raise ValueError(f"task must be one of {list(_HEADS)}, got {task!r}")
    return _HEADS[task]()
