"""The image-source interface every dataset implements, and the shared folder scanning.

An :class:`ImageSource` is a map-style ``torch.utils.data.Dataset`` of files. ``source[(index, seed)]`` decodes
file ``index`` and applies the transform seeded with ``seed``; a file that cannot be decoded returns a
``{"error": ...}`` record instead of raising, so a worker never dies on one bad JPEG (the stream skips it and
counts it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from adaglimpse_env.datasets.transforms import TransformConfig, transform_sample
from adaglimpse_env.image_io import ImageDecodeError, load_image, load_rgb

#: File extensions Pillow decodes that photo collections use.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif")
NO_LABEL = -1


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or holds no images; the message says where and in what layout."""


def _is_image_name(name: str) -> bool:
    # Hidden files are skipped: macOS copies leave an AppleDouble twin "._photo.jpg" (metadata, not an image) next
    # to every file, which would otherwise count as an unreadable image.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def scan_images(root: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (by extension, hidden files skipped), sorted, following no symlinked
    directories (no loops)."""
    found: list[Path] = []
    if recursive:
        for directory, subdirs, files in os.walk(root, followlinks=False):
            subdirs.sort()
            found.extend(Path(directory) / f for f in files if _is_image_name(f))
    else:
        found = [p for p in root.iterdir() if p.is_file() and _is_image_name(p.name)]
    return sorted(found)


def require_folder(path: Path, what: str, layout: str) -> Path:
    """``path`` if it is a folder, else :class:`DatasetNotFoundError` naming the expected layout."""
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"{what} requires the folder '{path}', which does not exist. Expected layout:\n{layout}"
        )
    return path


class ImageSource(Dataset[dict[str, Any]]):
    """Files with optional class labels and optional segmentation masks.

    Args:
        files: image paths.
        labels: class index per file, or None (no labels: ``label`` is -1).
        masks: segmentation label image per file, or None.
        transform: how to resize/crop.
        classes: class names, index-aligned with the labels.
        mask_mapping: function from a raw mask array to class indices (e.g. ADE20K's 1..150 -> 0..149, 0 -> 255).
        root: the folder the files were found in, named in errors (e.g. when none of them can be decoded).
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: Sequence[int] | None = None,
        masks: Sequence[Path] | None = None,
        transform: TransformConfig | None = None,
        classes: Sequence[str] = (),
        mask_mapping: Any = None,
        root: Path | None = None,
    ) -> None:
        self.files = list(files)
        self.root = root
        self.labels = list(labels) if labels is not None else None
        self.masks = list(masks) if masks is not None else None
        self.transform = transform or TransformConfig()
        self.classes = list(classes)
        self.mask_mapping = mask_mapping

    def __len__(self) -> int:
        return len(self.files)

    @property
    def description(self) -> str:
        """How errors name this source: ``"the image folder '<root>'"``, or ``"the image source"``."""
        return f"the image folder '{self.root}'" if self.root is not None else "the image source"

    @property
    def has_masks(self) -> bool:
        """Whether samples carry segmentation masks."""
        return self.masks is not None

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        path = self.files[index]
        try:
            image = load_rgb(path)
            mask = self._load_mask(index, image.size)
        except ImageDecodeError as error:
            return {"error": str(error), "path": str(path), "index": index}
        tensor, mask_tensor = transform_sample(image, mask, self.transform, seed)
        sample: dict[str, Any] = {
            "image": tensor,
            "label": torch.tensor(self.labels[index] if self.labels is not None else NO_LABEL),
            "index": index,
        }
        if mask_tensor is not None:
            sample["mask"] = mask_tensor
        return sample

    def _load_mask(self, index: int, size: tuple[int, int]) -> Image.Image | None:
        if self.masks is None:
            return None
        path = self.masks[index]
        # The same guarded decoding as images (regular files only, pixel limit): a mask is as untrusted.
        raw = load_image(path)
        mask = raw.convert("L") if raw.mode not in ("L", "P", "I", "I;16") else raw
        if mask.size != size:
            raise ImageDecodeError(f"Mask '{path}' has size {mask.size}, but its image has size {size}")
        if self.mask_mapping is not None:
            import numpy as np

            mask = Image.fromarray(self.mask_mapping(np.asarray(mask)).astype(np.uint8), mode="L")
        return mask
