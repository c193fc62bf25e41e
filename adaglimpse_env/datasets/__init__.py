"""Image sources: the paper's datasets, any image folder, and the photos shipped with the package."""

from adaglimpse_env.datasets.base import (
    IMAGE_EXTENSIONS,
    NO_LABEL,
    DatasetNotFoundError,
    ImageSource,
    scan_images,
)
from adaglimpse_env.datasets.folders import ade20k, coco2014, embedded_photos, image_folder, imagenet, sun360
from adaglimpse_env.datasets.stream import ImageStream, UnreadableFiles
from adaglimpse_env.datasets.transforms import TransformConfig, transform_sample

__all__ = [
    "IMAGE_EXTENSIONS",
    "NO_LABEL",
    "DatasetNotFoundError",
    "ImageSource",
    "ImageStream",
    "TransformConfig",
    "UnreadableFiles",
    "ade20k",
    "coco2014",
    "embedded_photos",
    "image_folder",
    "imagenet",
    "scan_images",
    "sun360",
    "transform_sample",
]
