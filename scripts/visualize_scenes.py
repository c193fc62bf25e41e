"""Draw a sheet of cluttered-digits scenes, each with its target outlined and what a whole-image glimpse sees.

Usage::

    python scripts/visualize_scenes.py --output docs/images/digits/scenes.png
    python scripts/visualize_scenes.py --split train --clutter 8 --background texture --output /tmp/hard.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from adaglimpse_env.datasets.scenes import BACKGROUNDS, SceneConfig, render_scene
from adaglimpse_env.rendering import caption, draw_target, hstack, vstack


def scene_tile(config: SceneConfig, split: str, index: int) -> np.ndarray:
    """The scene with its target outlined, beside the same scene as a whole-image glimpse sees it (32x32)."""
    scene = render_scene(config, split, index)
    shown = draw_target(Image.fromarray(scene.image), scene.box)
    size = config.canvas_size
    glance = Image.fromarray(scene.image).resize((32, 32), Image.Resampling.BILINEAR)
    glance = glance.resize((size, size), Image.Resampling.NEAREST)
    tile = hstack([np.asarray(shown), np.asarray(glance)], gap=2)
    return caption(tile, f"{split} {index}: digit {scene.label}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("train", "val"), default="val", help="which scenes")
    parser.add_argument("--first", type=int, default=0, help="index of the first scene")
    parser.add_argument("--count", type=int, default=12, help="how many scenes")
    parser.add_argument("--columns", type=int, default=3, help="tiles per row")
    parser.add_argument("--clutter", type=int, default=SceneConfig.clutter, help="distractors per scene")
    parser.add_argument("--background", choices=BACKGROUNDS, default=SceneConfig.background, help="background kind")
    parser.add_argument("--scale", type=float, default=0.75, help="resize the sheet by this factor")
    parser.add_argument("--output", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    if args.count < 1 or args.columns < 1 or args.first < 0 or args.scale <= 0:
        parser.error("--count and --columns must be >= 1, --first >= 0 and --scale > 0")
    config = SceneConfig(clutter=args.clutter, background=args.background)
    tiles = [scene_tile(config, args.split, args.first + i) for i in range(args.count)]
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % args.columns)
    rows = [hstack(tiles[i : i + args.columns], gap=6) for i in range(0, len(tiles), args.columns)]
    sheet = Image.fromarray(vstack(rows, gap=6))
    sheet = sheet.resize((round(sheet.width * args.scale), round(sheet.height * args.scale)), Image.Resampling.LANCZOS)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, optimize=True)
    print(f"wrote {args.output} ({args.count} {args.split} scenes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
