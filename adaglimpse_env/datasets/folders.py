"""The dataset folder layouts the paper uses (original `datasets/`), plus any image folder and the photos shipped
with the package. Each builder returns an :class:`~adaglimpse_env.datasets.base.ImageSource` or raises
:class:`~adaglimpse_env.datasets.base.DatasetNotFoundError` with the layout it expected.
"""

from __future__ import annotations

import warnings
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from adaglimpse_env.datasets.base import (
    DatasetNotFoundError,
    ImageSource,
    require_folder,
    scan_images,
)
from adaglimpse_env.datasets.transforms import TransformConfig

IMAGENET_LAYOUT = """  <root>/train/<wnid>/*.JPEG   (1000 folders n01440764 ... n15075141)
  <root>/val/<wnid>/*.JPEG     (validation images sorted into the same class folders)"""
ADE20K_LAYOUT = """  <root>/images/training/*.jpg        <root>/annotations/training/*.png
  <root>/images/validation/*.jpg      <root>/annotations/validation/*.png   (ADEChallengeData2016)"""
COCO_LAYOUT = """  <root>/train2014/*.jpg   <root>/val2014/*.jpg"""
SUN360_LAYOUT = """  <root>/<category>/<subcategory>/<panorama>.jpg, and a split file listing one relative path per line
  (the original's sun360-dataset26-random.txt: the first 10% of lines are validation, the rest training)"""
FOLDER_LAYOUT = (
    """  <root>/**/*.{jpg,png,...}   (images directly under <root>, or in class sub-folders <root>/<class>/...)"""
)


def _split_folder(split: str, train_name: str, val_name: str) -> str:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return train_name if split == "train" else val_name


def image_folder(
    root: str | Path, transform: TransformConfig | None = None, require_labels: bool = False
) -> ImageSource:
    """Every image under ``root``, recursively; labelled by first-level sub-folder when all images are in one.

    Args:
        root: the folder.
        transform: decoding transform.
        require_labels: every image must be in a class sub-folder (classification): an image at the root is an
            error instead of silently dropping the labels of the whole folder.

    Raises:
        DatasetNotFoundError: missing folder or no image files.
        ValueError: ``require_labels`` and an image is not in a class sub-folder.
    """
    root = require_folder(Path(root), "An image folder", FOLDER_LAYOUT)
    files = scan_images(root)
    if not files:
        raise DatasetNotFoundError(f"The image folder '{root}' holds no image files. Expected layout:\n{FOLDER_LAYOUT}")
    top = [f.relative_to(root).parts for f in files]
    stray = [str(f.relative_to(root)) for f, parts in zip(files, top, strict=True) if len(parts) == 1]
    if require_labels and stray:
        raise ValueError(
            f"Classification requires every image of '{root}' in a class sub-folder (<root>/<class>/<image>), got "
            f"{len(stray)} of {len(files)} images at its root (e.g. {stray[:3]}); move them into a class folder or "
            "delete them"
        )
    if not stray:
        classes = sorted({parts[0] for parts in top})
        index = {name: i for i, name in enumerate(classes)}
        return ImageSource(files, [index[p[0]] for p in top], transform=transform, classes=classes, root=root)
    return ImageSource(files, transform=transform, root=root)


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in the standard class order (``assets/imagenet_wnids.txt``, from timm)."""
    text = (resources.files("adaglimpse_env") / "assets" / "imagenet_wnids.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def imagenet(root: str | Path, split: str = "val", transform: TransformConfig | None = None) -> ImageSource:
    """ImageNet-1k in the standard folder layout; class index = the wnid's index among the 1000 standard classes.

    A folder holding a subset of the classes keeps each class's true index (a model's output k is class k); a wnid
    outside ImageNet-1k is an error, and missing classes are warned about once.

    Raises:
        DatasetNotFoundError: missing folder, no class folders or no images.
        ValueError: a class folder that is not an ImageNet-1k wnid.
    """
    folder = require_folder(Path(root) / _split_folder(split, "train", "val"), "ImageNet-1k", IMAGENET_LAYOUT)
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not present:
        raise DatasetNotFoundError(f"ImageNet folder '{folder}' has no class sub-folders. Expected:\n{IMAGENET_LAYOUT}")
    wnids = imagenet_wnids()
    index = {wnid: i for i, wnid in enumerate(wnids)}
    unknown = [name for name in present if name not in index]
    if unknown:
        raise ValueError(
            f"ImageNet folder '{folder}' requires class folders named by the 1000 ImageNet-1k wnids (n01440764 ... "
            f"n15075141), got {len(unknown)} others: {unknown[:5]}; remove them, or use AdaGlimpse-ImageFolder-v0 "
            "for other classes"
        )
    if len(present) < len(wnids):
        warnings.warn(
            f"ImageNet folder '{folder}' holds {len(present)} of the 1000 classes ({len(wnids) - len(present)} "
            f"missing, e.g. {[w for w in wnids if w not in set(present)][:3]}); labels keep their ImageNet-1k index",
            RuntimeWarning,
            stacklevel=2,
        )
    files, labels = [], []
    for wnid in present:
        class_files = scan_images(folder / wnid)
        files += class_files
        labels += [index[wnid]] * len(class_files)
    if not files:
        raise DatasetNotFoundError(f"ImageNet folder '{folder}' holds no images. Expected layout:\n{IMAGENET_LAYOUT}")
    return ImageSource(files, labels, transform=transform, classes=list(wnids), root=folder)


#: Classes of ADE20K's annotations (SceneParsing150), which a segmentation model must predict.
ADE20K_CLASSES = 150


def ade20k_mask_mapping(mask: np.ndarray) -> np.ndarray:
    """ADE20K annotation values to class indices: 1..150 -> 0..149, 0 (unlabelled) -> 255 (original `datasets/`)."""
    mask = np.clip(mask.astype(np.int64), 0, ADE20K_CLASSES)
    return np.where(mask == 0, 255, mask - 1)


def ade20k(
    root: str | Path, split: str = "val", transform: TransformConfig | None = None, with_masks: bool = True
) -> ImageSource:
    """ADE20K scene parsing (ADEChallengeData2016); with masks for segmentation, images only otherwise."""
    name = _split_folder(split, "training", "validation")
    image_dir = require_folder(Path(root) / "images" / name, "ADE20K", ADE20K_LAYOUT)
    files = scan_images(image_dir, recursive=False)
    if not files:
        raise DatasetNotFoundError(f"ADE20K folder '{image_dir}' holds no images. Expected layout:\n{ADE20K_LAYOUT}")
    if not with_masks:
        return ImageSource(files, transform=transform, root=image_dir)
    mask_dir = require_folder(Path(root) / "annotations" / name, "ADE20K segmentation", ADE20K_LAYOUT)
    masks = [mask_dir / f"{f.stem}.png" for f in files]
    missing = [m.name for m in masks if not m.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"ADE20K segmentation requires an annotation per image; {len(missing)} missing in '{mask_dir}', "
            f"e.g. {missing[:3]}. Expected layout:\n{ADE20K_LAYOUT}"
        )
    return ImageSource(files, masks=masks, transform=transform, mask_mapping=ade20k_mask_mapping, root=image_dir)


def coco2014(root: str | Path, split: str = "val", transform: TransformConfig | None = None) -> ImageSource:
    """COCO 2014 images (no labels; used for reconstruction)."""
    folder = require_folder(Path(root) / _split_folder(split, "train2014", "val2014"), "COCO 2014", COCO_LAYOUT)
    files = scan_images(folder, recursive=False)
    if not files:
        raise DatasetNotFoundError(f"COCO folder '{folder}' holds no images. Expected layout:\n{COCO_LAYOUT}")
    return ImageSource(files, transform=transform, root=folder)


def sun360(
    root: str | Path,
    split: str = "val",
    transform: TransformConfig | None = None,
    split_file: str | Path | None = None,
    with_labels: bool = True,
) -> ImageSource:
    """SUN360 panoramas listed in a split file; labels = the first two path components (26 classes, sorted).

    Args:
        split_file: the list of relative paths (default ``<root>/sun360-dataset26-random.txt``). The first 10% of
            lines are the validation split, the rest training, as the original's `datasets/`.
    """
    root = require_folder(Path(root), "SUN360", SUN360_LAYOUT)
    split_path = Path(split_file) if split_file else root / "sun360-dataset26-random.txt"
    if not split_path.is_file():
        raise DatasetNotFoundError(f"SUN360 requires the split file '{split_path}'. Expected layout:\n{SUN360_LAYOUT}")
    lines = [line.strip() for line in split_path.read_text().splitlines() if line.strip()]
    num_val = len(lines) // 10
    chosen = lines[:num_val] if _split_folder(split, "train", "val") == "val" else lines[num_val:]
    if not chosen:
        raise DatasetNotFoundError(f"SUN360 split file '{split_path}' lists no images for split {split!r}")
    files = [root / line for line in chosen]
    if not with_labels:
        return ImageSource(files, transform=transform, root=root)
    categories = ["/".join(Path(line).parts[:2]) for line in lines]
    classes = sorted(set(categories))
    index = {name: i for i, name in enumerate(classes)}
    labels = [index["/".join(Path(line).parts[:2])] for line in chosen]
    return ImageSource(files, labels, transform=transform, classes=classes, root=root)


#: Splits of the shipped photos: ``train`` and ``val`` split one photo set by photo; ``heldout`` holds every photo
#: of sources (packages) kept out of training entirely.
EMBEDDED_PHOTO_SPLITS = ("train", "val", "heldout")


def embedded_photos(split: str = "train", transform: TransformConfig | None = None) -> ImageSource:
    """The photographs shipped inside the package (offline default).

    Built by ``scripts/build_embedded_images.py``; ``assets/photos/MANIFEST.json`` gives every image's split,
    source package, original file, licence and author.

    Args:
        split: ``train`` (what the shipped model was trained on), ``val`` (photos of the same sources held out
            by photo) or ``heldout`` (the photos of whole sources never trained on: ``heldout_sources`` in the
            manifest).
        transform: decoding transform.

    Raises:
        ValueError: an unknown split.
        DatasetNotFoundError: the photos are missing.
    """
    if split not in EMBEDDED_PHOTO_SPLITS:
        raise ValueError(f"split must be one of {list(EMBEDDED_PHOTO_SPLITS)} for the shipped photos, got {split!r}")
    folder = Path(str(resources.files("adaglimpse_env") / "assets" / "photos")) / split
    files = scan_images(folder) if folder.is_dir() else []
    if not files:
        raise DatasetNotFoundError(
            f"The embedded photos are missing from '{folder}'; reinstall the package or rebuild them with "
            f"`python scripts/build_embedded_images.py`"
        )
    return ImageSource(files, transform=transform, root=folder)
