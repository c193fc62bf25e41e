"""Each task's metrics, aggregation and needs, with values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaglimpse_env.config import EpisodeConfig
from adaglimpse_env.models.heads import IGNORE_INDEX
from adaglimpse_env.tasks import ClassificationTask, ReconstructionTask, SegmentationTask, TaskTargets, get_task


def test_segmentation_metrics_are_miou_and_pixel_accuracy_not_swapped() -> None:
    # One 2x2 image, 3 classes. Target [[0, 0], [0, 1]], prediction [[0, 0], [1, 1]]: 3 of 4 pixels right, so pixel
    # accuracy 0.75; IoU of class 0 = 2/3, of class 1 = 1/2, class 2 absent from both (no weight): mIoU 7/12.
    target = torch.tensor([[[0, 0], [0, 1]]])
    predicted = torch.tensor([[[0, 0], [1, 1]]])
    logits = torch.nn.functional.one_hot(predicted, 3).permute(0, 3, 1, 2).float()  # (1, 3, 2, 2)
    metrics = SegmentationTask().episode_metrics(logits, torch.zeros(1), TaskTargets(masks=target))
    assert metrics["pixel_accuracy"].item() == pytest.approx(0.75)
    assert metrics["miou"].item() == pytest.approx(7 / 12)


def test_segmentation_validation_counts_skip_ignored_pixels() -> None:
    target = torch.tensor([[[0, IGNORE_INDEX], [1, 1]]])
    logits = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [1, 0]]]), 2).permute(0, 3, 1, 2).float()
    task = SegmentationTask()
    counts = task.validation_counts(None, logits, torch.zeros(1, 3, 2, 2), TaskTargets(masks=target))  # type: ignore[arg-type]
    assert counts == (2.0, 3.0)
    assert task.validation_value(*counts) == pytest.approx(2 / 3)


def test_classification_metric_is_nan_without_a_label() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, -1])
    metrics = ClassificationTask().episode_metrics(logits, torch.zeros(3), TaskTargets(labels=labels))
    correct = metrics["correct"].numpy()
    assert correct[:2].tolist() == [1.0, 0.0] and np.isnan(correct[2])
    assert ClassificationTask().aggregate(correct) == pytest.approx(0.5)


def test_reconstruction_aggregates_a_global_rmse() -> None:
    task = ReconstructionTask()
    assert task.episode_metrics(torch.zeros(2), torch.tensor([-3.0, -4.0]), TaskTargets())["rmse"].tolist() == [3, 4]
    assert task.aggregate(np.array([3.0, 4.0])) == pytest.approx((12.5) ** 0.5)  # not the mean 3.5


def test_needs_and_paper_defaults() -> None:
    assert [get_task(name).default_num_glimpses for name in ("reconstruction", "classification", "segmentation")] == [
        12,
        14,
        8,
    ]
    assert EpisodeConfig(task="segmentation").resolve().grid_size == 3
    assert EpisodeConfig(task="classification").resolve().grid_size == 2
    assert get_task("classification").needs_labels and not get_task("reconstruction").needs_labels
    assert get_task("segmentation").needs_masks and not get_task("classification").needs_masks
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("detection")


def test_only_classification_distils_from_a_teacher() -> None:
    logits = torch.tensor([[1.0, 0.0]])
    assert ClassificationTask().distillation_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="no teacher"):
        ReconstructionTask().distillation_loss(logits, logits)
