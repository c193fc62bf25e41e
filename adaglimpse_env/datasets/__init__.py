"""Image sources: the paper's datasets, any image folder, the photos shipped with the package and the cluttered-digits
scenes; :func:`build_image_source` builds any of them by name."""

from adaglimpse_env.datasets.base import (
    IMAGE_EXTENSIONS,
    NO_LABEL,
    DatasetNotFoundError,
    ImageSource,
    scan_images,
)
from adaglimpse_env.datasets.folders import ade20k, coco2014, embedded_photos, image_folder, imagenet, sun360
from adaglimpse_env.datasets.sampler import SeededOrder
from adaglimpse_env.datasets.sources import DATASETS, build_image_source
from adaglimpse_env.datasets.stream import ImageStream, UnreadableFiles
from adaglimpse_env.datasets.transforms import TransformConfig, transform_sample

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "NO_LABEL",
    "DatasetNotFoundError",
    "ImageSource",
    "ImageStream",
    "SeededOrder",
    "TransformConfig",
    "UnreadableFiles",
    "ade20k",
    "build_image_source",
    "coco2014",
    "embedded_photos",
    "image_folder",
    "imagenet",
    "scan_images",
    "sun360",
    "transform_sample",
]
