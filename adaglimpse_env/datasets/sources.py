"""Image sources by dataset name: the one place a dataset name becomes an :class:`ImageSource`.

The env factory (``gym.make``), the mean-image reference of the evaluation and MAE pretraining all build their
images here, each with its own :class:`TransformConfig` (the env's evaluation crop, pretraining's stronger
augmentation), so a source is built as wanted instead of being patched afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adaglimpse_env.datasets import folders
from adaglimpse_env.datasets.base import DatasetNotFoundError, ImageSource
from adaglimpse_env.datasets.scenes import ClutteredDigits, SceneConfig
from adaglimpse_env.datasets.transforms import TransformConfig

#: Datasets read from a data folder, with the layout each expects (named in errors).
FOLDER_LAYOUTS: dict[str, str] = {
    "imagenet": folders.IMAGENET_LAYOUT,
    "sun360": folders.SUN360_LAYOUT,
    "ade20k": folders.ADE20K_LAYOUT,
    "coco": folders.COCO_LAYOUT,
    "folder": folders.FOLDER_LAYOUT,
}

#: Every dataset name :func:`build_image_source` knows: the folder datasets, the photos shipped with the package
#: and the procedural cluttered-digits scenes (neither of those two needs a data folder).
DATASETS: tuple[str, ...] = (*FOLDER_LAYOUTS, "photos", "digits")


def check_dataset(dataset: str) -> None:
    """Fail early on an unknown dataset name.

    Raises:
        ValueError: naming the known datasets.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")


def needs_data_root(dataset: str) -> bool:
    """Whether ``dataset`` is read from a data folder (see :data:`FOLDER_LAYOUTS`)."""
    return dataset in FOLDER_LAYOUTS


def build_image_source(
    dataset: str,
    split: str,
    *,
    transform: TransformConfig,
    data_root: str | Path | None = None,
    split_file: str | Path | None = None,
    with_labels: bool = False,
    with_masks: bool = False,
    scene: Mapping[str, Any] | None = None,
) -> ImageSource:
    """The :class:`ImageSource` of a dataset name.

    Args:
        dataset: one of :data:`DATASETS`.
        split: ``"train"`` or ``"val"``; the shipped ``photos`` also have ``"heldout"`` (whole sources never
            trained on).
        transform: how decoded images become model inputs. The ``digits`` scenes are drawn at the model's size
            and read only ``transform.size`` (their canvas side).
        data_root: the data folder of a folder dataset (ignored by ``photos`` and ``digits``).
        split_file: SUN360's list of panoramas (default: the one in ``data_root``).
        with_labels: the task needs class labels: SUN360 reads its categories, an image folder must have class
            sub-folders.
        with_masks: the task needs segmentation masks (ADE20K's annotations).
        scene: :class:`~adaglimpse_env.datasets.scenes.SceneConfig` keywords of the ``digits`` scenes.

    Raises:
        ValueError: an unknown dataset, or scene keywords for another dataset.
        DatasetNotFoundError: a folder dataset without ``data_root``, or a folder not in the expected layout.
    """
    check_dataset(dataset)
    if scene and dataset != "digits":
        raise ValueError(f"scene keywords {sorted(scene)} need dataset='digits', got dataset={dataset!r}")
    if dataset == "photos":
        return folders.embedded_photos(split, transform)
    if dataset == "digits":
        return ClutteredDigits(split, SceneConfig(canvas_size=transform.size, **(scene or {})))
    if data_root is None:
        raise DatasetNotFoundError(
            f"dataset={dataset!r} requires a data folder (data_root). Expected layout:\n{FOLDER_LAYOUTS[dataset]}"
        )
    if dataset == "imagenet":
        return folders.imagenet(data_root, split, transform)
    if dataset == "sun360":
        return folders.sun360(data_root, split, transform, split_file=split_file, with_labels=with_labels)
    if dataset == "ade20k":
        return folders.ade20k(data_root, split, transform, with_masks=with_masks)
    if dataset == "coco":
        return folders.coco2014(data_root, split, transform)
    return folders.image_folder(data_root, transform, require_labels=with_labels)
