"""One object per task: everything the env, the agents, the scripts and the pictures need to know about a task.

A :class:`Task` owns its :class:`~adaglimpse_env.models.heads.TaskHead` (the model-facing part: prediction, score,
loss) and adds what lies around it: the paper's glimpse budget and grid, which labels or masks its images need,
how those are chosen for the score, the per-episode metric reported in ``info`` and how an evaluation aggregates
it, the held-out metric of pretraining, and the picture of a prediction. Code elsewhere asks the task; it never
switches on the task's name.

=============== ======== ==== ============== ========================= ======================== ===================
task            glimpses grid needs          ``info`` metric           pretraining metric       picture
=============== ======== ==== ============== ========================= ======================== ===================
reconstruction  12       2    images only    ``rmse`` (global over     RMSE (0-255)             reconstruction
                                             episodes)
classification  14       2    labels         ``correct`` (mean)        accuracy                 top-5 class bars
segmentation    8        3    masks          ``miou`` (mean), also     pixel accuracy           class map
                                             ``pixel_accuracy``
=============== ======== ==== ============== ========================= ======================== ===================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from adaglimpse_env.datasets.base import ImageSource
from adaglimpse_env.datasets.folders import ADE20K_CLASSES
from adaglimpse_env.metrics import confusion_matrix, segmentation_scores
from adaglimpse_env.models.heads import (
    IGNORE_INDEX,
    ClassificationHead,
    ReconstructionHead,
    SegmentationHead,
    TaskHead,
    TaskName,
)
from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.normalization import to_pixels


@dataclass(frozen=True)
class TaskTargets:
    """What a batch of images carries besides the pixels; a task reads the part it needs.

    Attributes:
        labels: ``(B,)`` int64 class labels, ``-1`` where unknown (None: no labels at all).
        masks: ``(B, H, W)`` int64 per-pixel classes, :data:`IGNORE_INDEX` where unlabelled (None: no masks).
    """

    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    @classmethod
    def from_batch(cls, batch: Mapping[str, torch.Tensor]) -> TaskTargets:
        """The targets of a data-loader batch (``"label"`` and ``"mask"`` keys, each optional)."""
        return cls(labels=batch.get("label"), masks=batch.get("mask"))

    def to(self, device: torch.device | str) -> TaskTargets:
        """The same targets on ``device``."""
        return TaskTargets(
            labels=None if self.labels is None else self.labels.to(device),
            masks=None if self.masks is None else self.masks.to(device),
        )


class Task(ABC):
    """A task: its head and everything around it (see the module docstring for the three tasks)."""

    name: ClassVar[TaskName]
    default_num_glimpses: ClassVar[int]
    """Glimpses per episode in the paper."""
    default_grid_size: ClassVar[int]
    """Grid cells per glimpse side in the paper (each glimpse gives ``grid ** 2`` tokens)."""
    needs_labels: ClassVar[bool] = False
    """Whether its images must come with class labels."""
    needs_masks: ClassVar[bool] = False
    """Whether its images must come with segmentation masks."""
    reads_image_pixels: ClassVar[bool] = False
    """Whether :meth:`score` reads ``image_pixels`` (a caller scoring the same images every step keeps them)."""
    metric_name: ClassVar[str]
    """The per-episode metric in ``info`` that evaluations report after every glimpse."""
    validation_metric_name: ClassVar[str]
    """The held-out metric of MAE pretraining (``scripts/pretrain_mae.py``)."""

    def __init__(self) -> None:
        self.head: TaskHead = self._create_head()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @staticmethod
    @abstractmethod
    def _create_head() -> TaskHead: ...

    # ------------------------------------------------------------------------------------------- scores and metrics
    def score(
        self,
        model: ElasticMAE,
        prediction: torch.Tensor,
        images: torch.Tensor,
        targets: TaskTargets,
        image_pixels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-image score ``(B,)`` float32 (higher is better) of the head's ``prediction`` for ``images``.

        Args:
            model: the frozen model.
            prediction: the head's output for the batch.
            images: ``(B, 3, H, W)`` ImageNet-normalised.
            targets: labels / masks; the task picks what it compares with.
            image_pixels: ``to_pixels(images.float())`` ``(B, 3, H, W)`` when the caller keeps it (an env scores
                the same images every step); only reconstruction reads it.
        """
        return self.head.score(model, prediction, images, self._target(targets))

    def loss(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, targets: TaskTargets
    ) -> torch.Tensor:
        """The head's training loss with the targets it needs."""
        return self.head.loss(model, prediction, images, self._target(targets))

    def distillation_loss(self, prediction: torch.Tensor, teacher_output: torch.Tensor) -> torch.Tensor:
        """Training loss against a frozen teacher's output instead of labels.

        Raises:
            ValueError: for a task that has no teacher.
        """
        raise ValueError(f"task={self.name!r} has no teacher distillation; only classification takes a teacher")

    @abstractmethod
    def episode_metrics(
        self, prediction: torch.Tensor, score: torch.Tensor, targets: TaskTargets
    ) -> dict[str, torch.Tensor]:
        """Per-image metrics ``{name: (B,) float64}`` reported in ``info``; :attr:`metric_name` among them."""

    def aggregate(self, values: np.ndarray) -> float:
        """One number for an evaluation from per-episode values of :attr:`metric_name` (NaN: not known)."""
        return float(np.nanmean(values))

    @abstractmethod
    def validation_counts(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, targets: TaskTargets
    ) -> tuple[float, float]:
        """``(numerator, denominator)`` of the pretraining metric for one batch; sum them over batches and finish
        with :meth:`validation_value`."""

    def validation_value(self, numerator: float, denominator: float) -> float:
        """The pretraining metric from its summed counts."""
        return numerator / max(denominator, 1)

    # --------------------------------------------------------------------------------------------------------- data
    def check_classes(self, source: ImageSource, model: ElasticMAE, what: str) -> None:
        """Fail at construction when ``source`` has more classes than ``model`` predicts (else torch fails
        mid-run with ``index out of bounds``); a task that reads no classes accepts any source.

        Args:
            source: the env's images.
            model: the frozen model.
            what: how the message names the env (its id).

        Raises:
            ValueError: naming both numbers.
        """
        return None  # reconstruction reads no classes

    # ----------------------------------------------------------------------------------------------------- pictures
    def prediction_images(self, model: ElasticMAE, prediction: torch.Tensor) -> torch.Tensor | None:
        """The prediction as normalised images ``(B, 3, H, W)``, or None when the task does not predict images."""
        return None

    @abstractmethod
    def prediction_picture(
        self, model: ElasticMAE, prediction: torch.Tensor, classes: Sequence[str], size: tuple[int, int]
    ) -> Image.Image:
        """Picture of one image's prediction (``prediction`` without the batch dimension), about ``size`` (H, W)."""

    def _target(self, targets: TaskTargets) -> torch.Tensor | None:
        return None


class ReconstructionTask(Task):
    """Reconstruct the whole image from the glimpses; score ``-RMSE`` on the 0-255 scale."""

    name = "reconstruction"
    default_num_glimpses = 12
    default_grid_size = 2
    reads_image_pixels = True
    metric_name = "rmse"
    validation_metric_name = "rmse"

    @staticmethod
    def _create_head() -> ReconstructionHead:
        return ReconstructionHead()

    def score(
        self,
        model: ElasticMAE,
        prediction: torch.Tensor,
        images: torch.Tensor,
        targets: TaskTargets,
        image_pixels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``-RMSE`` per image (see :meth:`Task.score`)."""
        assert isinstance(self.head, ReconstructionHead)
        return self.head.score(model, prediction, images, image_pixels=image_pixels)

    def episode_metrics(
        self, prediction: torch.Tensor, score: torch.Tensor, targets: TaskTargets
    ) -> dict[str, torch.Tensor]:
        """``{"rmse"}``: the image's RMSE, the negated score."""
        return {"rmse": (-score).double()}

    def aggregate(self, values: np.ndarray) -> float:
        """Global RMSE over the episodes (every image has the same pixel count), as the original's metric."""
        return float(np.sqrt(np.mean(np.square(values))))

    def validation_counts(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, targets: TaskTargets
    ) -> tuple[float, float]:
        """Summed squared error on the 0-255 scale and the number of values."""
        error = to_pixels(model.unpatchify(prediction)) - to_pixels(images)
        return float(error.square().sum()), float(error.numel())

    def validation_value(self, numerator: float, denominator: float) -> float:
        """Global RMSE."""
        return math.sqrt(numerator / max(denominator, 1))

    def prediction_images(self, model: ElasticMAE, prediction: torch.Tensor) -> torch.Tensor:
        """The reconstructions, ``(B, 3, H, W)`` normalised."""
        return model.unpatchify(prediction)

    def prediction_picture(
        self, model: ElasticMAE, prediction: torch.Tensor, classes: Sequence[str], size: tuple[int, int]
    ) -> Image.Image:
        """The reconstructed image."""
        from adaglimpse_env.rendering import image_to_uint8

        return Image.fromarray(image_to_uint8(model.unpatchify(prediction[None])[0]))


class ClassificationTask(Task):
    """Classify the image from the cls token; score: the true-class probability (max probability if unknown)."""

    name = "classification"
    default_num_glimpses = 14
    default_grid_size = 2
    needs_labels = True
    metric_name = "correct"
    validation_metric_name = "accuracy"

    @staticmethod
    def _create_head() -> ClassificationHead:
        return ClassificationHead()

    def _target(self, targets: TaskTargets) -> torch.Tensor | None:
        return targets.labels

    def check_classes(self, source: ImageSource, model: ElasticMAE, what: str) -> None:
        """The largest label must be one of the model's ``num_classes`` outputs (see :meth:`Task.check_classes`)."""
        if source.labels is None or not len(source.labels):
            return
        needed = int(max(source.labels)) + 1
        if needed > model.config.num_classes:
            raise ValueError(
                f"{what} requires a model with at least {needed} classes for its data ({len(source.classes)} class "
                f"folders), got a checkpoint with num_classes={model.config.num_classes}; use a checkpoint trained "
                "on these classes or remove class folders"
            )

    def distillation_loss(self, prediction: torch.Tensor, teacher_output: torch.Tensor) -> torch.Tensor:
        """``KL(teacher || student)`` summed over classes, mean over the batch (original `_forward_task`).

        Args:
            prediction: ``(B, K)`` student logits.
            teacher_output: ``(B, K)`` teacher logits.
        """
        kl = F.kl_div(
            prediction.float().log_softmax(-1),
            teacher_output.float().log_softmax(-1),
            log_target=True,
            reduction="none",
        )
        return kl.sum(-1).mean()

    def episode_metrics(
        self, prediction: torch.Tensor, score: torch.Tensor, targets: TaskTargets
    ) -> dict[str, torch.Tensor]:
        """``{"correct"}``: 1.0 if the top-1 class is the label, NaN where the label is unknown."""
        assert targets.labels is not None, "classification requires labels"
        correct = (prediction.argmax(dim=-1) == targets.labels).double()
        return {"correct": torch.where(targets.labels >= 0, correct, torch.nan)}

    def validation_counts(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, targets: TaskTargets
    ) -> tuple[float, float]:
        """Correct top-1 predictions and images."""
        assert targets.labels is not None, "classification requires labels"
        return float((prediction.argmax(-1) == targets.labels).sum()), float(images.shape[0])

    def prediction_picture(
        self, model: ElasticMAE, prediction: torch.Tensor, classes: Sequence[str], size: tuple[int, int]
    ) -> Image.Image:
        """Bars of the five most probable classes."""
        from adaglimpse_env.rendering import draw_class_bars

        return draw_class_bars(prediction.float().softmax(dim=-1), classes, size)


class SegmentationTask(Task):
    """Label every pixel with the decoder's up-sampling head; score ``-cross-entropy`` against the mask."""

    name = "segmentation"
    default_num_glimpses = 8
    default_grid_size = 3
    needs_masks = True
    metric_name = "miou"
    validation_metric_name = "pixel_accuracy"

    @staticmethod
    def _create_head() -> SegmentationHead:
        return SegmentationHead()

    def _target(self, targets: TaskTargets) -> torch.Tensor | None:
        return targets.masks

    def check_classes(self, source: ImageSource, model: ElasticMAE, what: str) -> None:
        """Masks (only ADE20K's today) need all their classes among the decoder's output channels (``out_chans``);
        see :meth:`Task.check_classes`."""
        if source.has_masks and model.config.out_chans < ADE20K_CLASSES:
            raise ValueError(
                f"{what} requires a segmentation model with at least {ADE20K_CLASSES} classes (ADE20K's mask "
                f"classes), got a checkpoint with {model.config.out_chans} (out_chans)"
            )

    def episode_metrics(
        self, prediction: torch.Tensor, score: torch.Tensor, targets: TaskTargets
    ) -> dict[str, torch.Tensor]:
        """``{"miou", "pixel_accuracy"}`` of each image's argmax map against its mask."""
        assert targets.masks is not None, "segmentation requires masks"
        confusion = confusion_matrix(prediction.argmax(dim=1), targets.masks, prediction.shape[1])
        scores = segmentation_scores(confusion)
        return {"miou": scores["miou"].double(), "pixel_accuracy": scores["pixel_accuracy"].double()}

    def validation_counts(
        self, model: ElasticMAE, prediction: torch.Tensor, images: torch.Tensor, targets: TaskTargets
    ) -> tuple[float, float]:
        """Correctly labelled pixels and labelled pixels."""
        assert targets.masks is not None, "segmentation requires masks"
        valid = targets.masks != IGNORE_INDEX
        return float(((prediction.argmax(1) == targets.masks) & valid).sum()), float(valid.sum())

    def prediction_picture(
        self, model: ElasticMAE, prediction: torch.Tensor, classes: Sequence[str], size: tuple[int, int]
    ) -> Image.Image:
        """The argmax class map in a fixed palette."""
        from adaglimpse_env.rendering import segmentation_palette

        labels = prediction.argmax(dim=0).cpu().numpy()
        return Image.fromarray(segmentation_palette(prediction.shape[0])[labels])


_TASKS: dict[str, type[Task]] = {task.name: task for task in (ReconstructionTask, ClassificationTask, SegmentationTask)}


def get_task(name: str) -> Task:
    """The task of a name.

    Raises:
        ValueError: for an unknown task.
    """
    if name not in _TASKS:
        raise ValueError(f"task must be one of {list(_TASKS)}, got {name!r}")
    return _TASKS[name]()
