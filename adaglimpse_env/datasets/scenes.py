"""Procedural find-and-zoom scenes: one small digit somewhere on a cluttered canvas.

The task the recurrent attention model was benchmarked on (cluttered translated MNIST, Mnih et al. 2014), made
for glimpses of any position and scale: the class is decided by a digit a few per cent of the canvas high, so a
whole-image glimpse (2x2 cells of 16 px: the 224 px canvas seen at 32x32) cannot read it, and an agent must find
it and zoom in. Everything is generated offline from the digit fonts and the photographs shipped with the package.

A scene is a pure function of ``(config, split, index, seed)``:

* background: a random crop of a shipped photograph (the 31 ``train`` photos of ``BACKGROUND_PHOTOS`` for the
  ``train`` split, its 7 ``val`` photos for ``val``), its contrast lowered towards its mean colour; or procedural
  texture, or a plain colour;
* the target: digit 0-9 in one of 14 open-licence fonts (``assets/fonts/MANIFEST.json``), random height, width,
  rotation, stroke and colour (light on dark background, dark on light), fully inside the canvas;
* ``clutter`` distractors that do not overlap the target: fragments of other digits and pen strokes, in the same
  colours and sizes as targets, so that neither colour nor size gives the target away.

The ``val`` split is a fixed set of ``num_val_scenes`` scenes (scene ``i`` depends on ``i`` alone: the same in
every process and worker); ``train`` scenes also depend on the stream's sample seed, so every epoch is new.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from adaglimpse_env.datasets.base import ImageSource
from adaglimpse_env.datasets.transforms import TransformConfig
from adaglimpse_env.image_io import load_rgb
from adaglimpse_env.normalization import IMAGENET_MEAN, IMAGENET_STD

DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
BACKGROUNDS = ("photos", "texture", "plain")
#: Scenes in one epoch of the ``train`` split (each epoch draws new scenes: the sample seed changes).
TRAIN_SCENES_PER_EPOCH = 100_000
#: Font size the glyphs are rasterised at before being scaled down to the digit's height.
_RENDER_SIZE = 64
_SPLIT_KEYS = {"train": 1, "val": 2}
_MEAN_255 = np.array(IMAGENET_MEAN, dtype=np.float32) * 255.0
_STD_255 = np.array(IMAGENET_STD, dtype=np.float32) * 255.0


@dataclass(frozen=True)
class SceneConfig:
    """Difficulty of the cluttered-digits scenes; every field is a ``gym.make`` keyword of the scene ids.

    Attributes:
        canvas_size: side of the square canvas in pixels (the model's input size).
        digit_height: ``(min, max)`` height of the target digit in pixels before rotation. The default 12-18 px
            on 224 px is 1.7-2.6 px in a whole-image glimpse: unreadable, so the task needs zoom.
        max_rotation: the digit is rotated by an angle uniform in ``[-max_rotation, max_rotation]`` degrees.
        stroke: ``(min, max)`` extra stroke width added around the glyph at the 64 px render size (0 = the
            font's own weight), for thin-to-heavy variety.
        clutter: distractors per scene (fragments of other digits and pen strokes), never on the target.
        background: ``"photos"`` (crops of the shipped photographs), ``"texture"`` (smooth random colour noise)
            or ``"plain"`` (one random colour).
        background_contrast: the background's contrast around its mean colour, in ``[0, 1]`` (1 = the photo as
            it is). Lower values make the digit and the distractors stand out more.
        num_val_scenes: size of the fixed ``val`` set.
    """

    canvas_size: int = 224
    digit_height: tuple[float, float] = (12.0, 18.0)
    max_rotation: float = 30.0
    stroke: tuple[int, int] = (0, 3)
    clutter: int = 4
    background: str = "photos"
    background_contrast: float = 0.6
    num_val_scenes: int = 2000

    def __post_init__(self) -> None:
        object.__setattr__(self, "digit_height", tuple(float(h) for h in self.digit_height))
        object.__setattr__(self, "stroke", tuple(int(s) for s in self.stroke))
        low, high = self.digit_height
        if not isinstance(self.canvas_size, int) or self.canvas_size < 32 or self.canvas_size % 16:
            raise ValueError(f"canvas_size must be an int >= 32 divisible by 16, got {self.canvas_size!r}")
        if not 4.0 <= low <= high <= self.canvas_size / 2:
            raise ValueError(
                f"digit_height must be (min, max) with 4 <= min <= max <= canvas_size / 2 = {self.canvas_size / 2}, "
                f"got {self.digit_height}"
            )
        if not 0.0 <= self.max_rotation <= 180.0:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {self.max_rotation}")
        if not 0 <= self.stroke[0] <= self.stroke[1] <= 8:
            raise ValueError(f"stroke must be (min, max) with 0 <= min <= max <= 8, got {self.stroke}")
        if not isinstance(self.clutter, int) or self.clutter < 0:
            raise ValueError(f"clutter must be a non-negative int, got {self.clutter!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {list(BACKGROUNDS)}, got {self.background!r}")
        if not 0.0 <= self.background_contrast <= 1.0:
            raise ValueError(f"background_contrast must be in [0, 1], got {self.background_contrast}")
        if not isinstance(self.num_val_scenes, int) or self.num_val_scenes < 1:
            raise ValueError(f"num_val_scenes must be a positive int, got {self.num_val_scenes!r}")


class Scene(NamedTuple):
    """One generated scene.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB canvas.
        label: the target digit, 0-9.
        box: the target's tight pixel box ``(y1, x1, y2, x2)``, end-exclusive.
    """

    image: np.ndarray
    label: int
    box: tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------------- assets
def font_folder() -> Path:
    """Folder of the digit fonts shipped with the package (built by ``scripts/build_digit_fonts.py``)."""
    return Path(str(resources.files("adaglimpse_env") / "assets" / "fonts"))


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    """The shipped digit fonts, in manifest order.

    Raises:
        FileNotFoundError: the fonts are missing from the installed package.
    """
    manifest = font_folder() / "MANIFEST.json"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"The digit fonts are missing from '{font_folder()}'; reinstall the package or rebuild them with "
            "`python scripts/build_digit_fonts.py`"
        )
    entries = json.loads(manifest.read_text())["fonts"]
    return tuple(font_folder() / entry["file"] for entry in entries)


@functools.lru_cache(maxsize=1024)
def glyph_mask(font_index: int, digit: int, stroke: int) -> Image.Image:
    """Coverage (mode ``L``) of one digit glyph at the render size, cropped to its ink. Cached: do not modify."""
    font = ImageFont.truetype(str(font_files()[font_index]), _RENDER_SIZE)
    text = DIGIT_CLASSES[digit]
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    canvas = Image.new("L", (int(right - left) + 2, int(bottom - top) + 2), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    return canvas.crop(canvas.getbbox())


#: The shipped photographs each split's backgrounds crop, by file name under ``assets/photos/<split>/``, in the
#: order the scenes index them. Fixed, not read from the folders: the photo set grew (``heldout/``, more train
#: photos) after the scenes, the digits classifier and its results were made, and the scenes must not change.
BACKGROUND_PHOTOS = {
    "train": (
        "aitzgorri_by_aitzol_berasategi.jpg", "aqua.jpg", "astronaut.jpg", "bridge_by_sander_klootwijk.jpg",
        "bythewater.jpg", "chelsea.jpg", "coffee.jpg", "colorfulcups.jpg", "dragonfly_by_bolly.jpg", "dune.jpg",
        "eveningglow.jpg", "fallenleaf.jpg", "freshflower.jpg", "friends_by_aitzol_berasategi.jpg", "garden.jpg",
        "greenmeadow.jpg", "grey.jpg", "life_by_aitzol_berasategi.jpg", "motorcycle_left.jpg", "onestandsout.jpg",
        "path.jpg", "picosdeeuropa_by_aitzol_berasategi.jpg", "picture_0b_by_freespace.jpg",
        "picture_1a_by_freespace.jpg", "raindrops.jpg", "seeding_by_clements_engelhardt.jpg", "storm.jpg",
        "summer_1am.jpg", "sunset_by_aitzol_berasategi.jpg", "twowings.jpg", "wood.jpg",
    ),
    "val": (
        "blinds.jpg", "coldripple.jpg", "kite.jpg", "ladybird.jpg", "rocket.jpg", "wine_by_jakkub_mede.jpg",
        "yellowflower.jpg",
    ),
}  # fmt: skip


@functools.lru_cache(maxsize=4)
def background_photos(split: str) -> tuple[Image.Image, ...]:
    """The shipped photographs of a split's backgrounds (:data:`BACKGROUND_PHOTOS`), decoded once per process."""
    folder = Path(str(resources.files("adaglimpse_env") / "assets" / "photos")) / split
    files = [folder / name for name in BACKGROUND_PHOTOS[split]]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"The embedded photos are missing from '{folder}' ({len(missing)} of {len(files)}, e.g. {missing[:3]}); "
            "reinstall the package or rebuild them with `python scripts/build_embedded_images.py`"
        )
    return tuple(load_rgb(path) for path in files)


# ---------------------------------------------------------------------------------------------------- drawing
# Everything is drawn on 8-bit PIL images: cropping, resizing and alpha compositing then run in Pillow's C code,
# about 2.7 ms of CPU a 224 px scene (measured; the float32 numpy version took 5).
#: Coverage below this (out of 255) does not count as ink when a drawn shape is cropped to its extent.
_INK_THRESHOLD = 12


def _mean_colour(image: Image.Image) -> np.ndarray:
    """Mean RGB of ``image`` in ``[0, 1]``, ``(3,)``."""
    return np.asarray(image.resize((1, 1), Image.Resampling.BOX), dtype=np.float32).reshape(3) / 255.0


def _background(config: SceneConfig, split: str, rng: np.random.Generator) -> Image.Image:
    """The ``S x S`` RGB background."""
    size = config.canvas_size
    if config.background == "plain":
        colour = rng.uniform(0.1, 0.9, size=3)
        return Image.new("RGB", (size, size), tuple(int(c * 255) for c in colour))
    if config.background == "texture":
        coarse = rng.uniform(0.0, 1.0, size=(int(rng.integers(3, 9)),) * 2 + (3,))
        canvas = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    else:
        photos = background_photos(split)
        photo = photos[int(rng.integers(len(photos)))]
        width, height = photo.size
        side = int(min(height, width) * rng.uniform(0.35, 1.0))
        top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
        # Crop and resize in one pass; reducing_gap pre-shrinks large crops by whole factors (much faster).
        canvas = photo.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side),
                              reducing_gap=2.0)  # fmt: skip
        if rng.random() < 0.5:
            canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if config.background_contrast >= 1.0:
        return canvas
    mean = Image.new("RGB", (size, size), tuple(int(c * 255 + 0.5) for c in _mean_colour(canvas)))
    return Image.blend(mean, canvas, config.background_contrast)


def _ink_colour(background: Image.Image, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour that contrasts with ``background``: light on dark, dark on light."""
    luminance = float((_mean_colour(background) * (0.299, 0.587, 0.114)).sum())
    hue = rng.uniform(0.0, 1.0, size=3)
    shade = rng.uniform(0.0, 0.3)
    colour = hue * shade if luminance > 0.5 else 1.0 - (1.0 - hue) * shade
    return tuple(int(c * 255 + 0.5) for c in colour)  # type: ignore[return-value]


def _scaled_glyph(mask: Image.Image, height: float, aspect: float, angle: float) -> Image.Image:
    """``mask`` resized to ``height`` px (width scaled by ``aspect`` too), rotated by ``angle`` degrees and
    cropped to its ink."""
    scale = height / mask.height
    size = (max(1, round(mask.width * scale * aspect)), max(1, round(height)))
    image = mask.resize(size, Image.Resampling.BOX)
    if angle:
        image = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    ink = np.asarray(image) > _INK_THRESHOLD
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return image
    return image.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def _stroke_mask(length: float, width: int, rng: np.random.Generator) -> Image.Image:
    """A pen stroke (a line or an arc) about ``length`` px long, as coverage (mode ``L``)."""
    side = max(4, int(np.ceil(length)) + 2 * width + 2)
    image = Image.new("L", (side * 2, side * 2), 0)  # drawn at 2x, then box-filtered down: smooth edges
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.5:
        angle = rng.uniform(0.0, np.pi)
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        draw.line([(side - dx, side - dy), (side + dx, side + dy)], fill=255, width=2 * width)
    else:
        start = float(rng.uniform(0.0, 360.0))
        bounds = (side - length, side - length, side + length, side + length)
        draw.arc(bounds, start, start + float(rng.uniform(90.0, 220.0)), fill=255, width=2 * width)
    return _scaled_glyph(image, image.height / 2, 1.0, 0.0)


def _overlaps(box: tuple[int, int, int, int], other: tuple[int, int, int, int], margin: int) -> bool:
    return not (
        box[2] + margin <= other[0]
        or other[2] + margin <= box[0]
        or box[3] + margin <= other[1]
        or other[3] + margin <= box[1]
    )


def _digit_alpha(config: SceneConfig, digit: int, rng: np.random.Generator) -> Image.Image:
    """A digit in a random font, stroke, height, width and rotation."""
    font_index = int(rng.integers(len(font_files())))
    mask = glyph_mask(font_index, digit, int(rng.integers(config.stroke[0], config.stroke[1] + 1)))
    angle = rng.uniform(-config.max_rotation, config.max_rotation)
    return _scaled_glyph(mask, rng.uniform(*config.digit_height), rng.uniform(0.8, 1.25), angle)


def _distractor_alpha(config: SceneConfig, rng: np.random.Generator) -> Image.Image:
    """A fragment of a digit (at most half of it) or a pen stroke, target-sized."""
    if rng.random() < 0.6:
        alpha = _digit_alpha(config, int(rng.integers(10)), rng)
        width, height = alpha.size
        keep = rng.uniform(0.3, 0.5)
        if rng.random() < 0.5:  # a horizontal band, or a vertical one
            rows = max(1, round(height * keep))
            top = int(rng.integers(height - rows + 1))
            return alpha.crop((0, top, width, top + rows))
        cols = max(1, round(width * keep))
        left = int(rng.integers(width - cols + 1))
        return alpha.crop((left, 0, left + cols, height))
    width = max(1, round(rng.uniform(*config.digit_height) / 8))
    return _stroke_mask(rng.uniform(0.3, 0.6) * rng.uniform(*config.digit_height), width, rng)


def render_scene(config: SceneConfig, split: str, index: int, seed: int = 0) -> Scene:
    """Draw scene ``index`` of ``split`` (``val`` scenes ignore ``seed``; ``train`` scenes use it).

    Raises:
        ValueError: for an unknown split.
    """
    if split not in _SPLIT_KEYS:
        raise ValueError(f"split must be one of {list(_SPLIT_KEYS)}, got {split!r}")
    key = [_SPLIT_KEYS[split], index] if split == "val" else [_SPLIT_KEYS[split], index, seed]
    rng = np.random.default_rng(key)
    size = config.canvas_size
    canvas = _background(config, split, rng)
    label = int(rng.integers(10))
    target = _digit_alpha(config, label, rng)
    width, height = target.size
    top, left = int(rng.integers(1, size - height)), int(rng.integers(1, size - width))
    box = (top, left, top + height, left + width)
    colour = _ink_colour(canvas.crop((left, top, left + width, top + height)), rng)
    for _ in range(config.clutter):
        alpha = _distractor_alpha(config, rng)
        d_width, d_height = alpha.size
        for _attempt in range(20):  # rejection sampling: a distractor never covers the target
            d_top, d_left = int(rng.integers(0, size - d_height + 1)), int(rng.integers(0, size - d_width + 1))
            if not _overlaps((d_top, d_left, d_top + d_height, d_left + d_width), box, margin=3):
                region = canvas.crop((d_left, d_top, d_left + d_width, d_top + d_height))
                canvas.paste(_ink_colour(region, rng), (d_left, d_top, d_left + d_width, d_top + d_height), alpha)
                break
    canvas.paste(colour, (left, top, left + width, top + height), target)
    return Scene(np.asarray(canvas), label, box)


# ---------------------------------------------------------------------------------------------------- source
class ClutteredDigits(ImageSource):
    """Cluttered-digits scenes as an image source (the env's and ``pretrain_mae.py``'s interface).

    ``source[(index, seed)]`` returns ``{"image" (3, S, S) float32 ImageNet-normalised, "label" int64,
    "index", "target_box" (4,) int64 (y1, x1, y2, x2)}``.

    Args:
        split: ``train`` (endless new scenes over the train photos) or ``val`` (the fixed held-out set).
        config: difficulty; see :class:`SceneConfig`.
    """

    def __init__(self, split: str = "train", config: SceneConfig | None = None) -> None:
        if split not in _SPLIT_KEYS:
            raise ValueError(f"split must be one of {list(_SPLIT_KEYS)}, got {split!r}")
        self.config = config or SceneConfig()
        super().__init__([], transform=TransformConfig(size=self.config.canvas_size), classes=DIGIT_CLASSES)
        self.split = split
        font_files()  # fail at construction, not in a worker, if the fonts are missing

    def __len__(self) -> int:
        return self.config.num_val_scenes if self.split == "val" else TRAIN_SCENES_PER_EPOCH

    @property
    def description(self) -> str:
        """How errors name this source."""
        return f"the cluttered-digits scenes ({self.split})"

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        scene = render_scene(self.config, self.split, int(index), int(seed))
        # Normalised in numpy: one fused pass, no torch thread pool woken for a 150k-element image.
        pixels = (scene.image.astype(np.float32) - _MEAN_255) / _STD_255
        return {
            "image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))),
            "label": torch.tensor(scene.label),
            "index": index,
            "target_box": torch.tensor(scene.box, dtype=torch.long),
        }
