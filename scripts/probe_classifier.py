"""Probe a scene classifier: its accuracy by kind of glimpse set on the fixed val scenes of a find-and-zoom id.

Tells whether the frozen model can read the target when it looks at it, and that it cannot from afar, before any
agent is trained on it. Rows (each on the same ``--scenes`` val scenes):

* ``whole image``: one glimpse covering the canvas (what a glance sees);
* ``on target, centred, s x``: one glimpse ``s`` times the target's size centred on it (the 2x2 grid cuts the
  target into four cells);
* ``on target, in one cell, s x``: one glimpse ``s`` times the target's size with the target's centre at the centre
  of one of its cells;
* ``whole + on target (cell)``: the whole image, then the in-cell glimpse at 2.5x;
* ``random k``: ``k`` uniform random glimpses.

Usage::

    python scripts/probe_classifier.py                                  # shipped model, 2,000 val scenes
    python scripts/probe_classifier.py --checkpoint runs/digits_micro/model.pt --scenes 200 --output docs/results/probe
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import torch

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.glimpse import centred_unit_action, extract_glimpses

WHOLE_IMAGE = (0.0, 0.0, 1.0)  # original-order unit action (y, x, scale) of the whole-image glimpse


def glimpse_sets(
    boxes: torch.Tensor, image_size: tuple[int, int], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The unit actions ``(B, k, 3)`` of every row of the table for targets at ``boxes (B, 4)``."""
    batch = boxes.shape[0]
    box = boxes.float()
    centre = (box[:, :2] + box[:, 2:]) / 2
    extent = (box[:, 2:] - box[:, :2]).amax(dim=1)
    whole = torch.tensor(WHOLE_IMAGE).expand(batch, 1, 3)
    sets = {"whole image": whole}
    for factor in (1.5, 2.5, 3.5):
        side = extent * factor
        sets[f"on target, centred, {factor}x"] = centred_unit_action(centre, side, image_size)[:, None]
        # The top-left cell's centre is a quarter of the side up and left of the glimpse's centre.
        in_cell = centred_unit_action(centre + side[:, None] / 4, side, image_size)[:, None]
        sets[f"on target, in one cell, {factor}x"] = in_cell
    sets["whole + on target (cell, 2.5x)"] = torch.cat(
        (whole, centred_unit_action(centre + extent[:, None] * 2.5 / 4, extent * 2.5, image_size)[:, None]), dim=1
    )
    for count in (1, 4, 14):
        sets[f"random {count}"] = torch.rand(batch, count, 3, generator=generator)
    return sets


@torch.inference_mode()
def probe(env: GlimpseVectorEnv, num_scenes: int, batch_size: int = 100) -> dict[str, float]:
    """Accuracy of ``env``'s frozen model for each row of :func:`glimpse_sets` over its first ``num_scenes`` val
    scenes (read from ``env.image_source``, so the same scenes as the env's ``split="val"`` episodes)."""
    source, model = env.image_source, env.model
    grid = env.grid_size
    generator = torch.Generator().manual_seed(0)
    correct: dict[str, int] = {}
    for start in range(0, num_scenes, batch_size):
        samples = [source[(index, 0)] for index in range(start, min(num_scenes, start + batch_size))]
        images = torch.stack([s["image"] for s in samples]).to(env.device)
        labels = torch.stack([s["label"] for s in samples]).to(env.device)
        boxes = torch.stack([s["target_box"] for s in samples])
        for name, unit in glimpse_sets(boxes, env.image_size, generator).items():
            pieces = [extract_glimpses(images, unit[:, k].to(env.device), grid) for k in range(unit.shape[1])]
            patches = torch.cat([p for p, _ in pieces], dim=1)
            token_boxes = torch.cat([b for _, b in pieces], dim=1)
            logits = env.head.predict(model, model.forward_encoder(patches, token_boxes).latent)
            correct[name] = correct.get(name, 0) + int((logits.argmax(dim=-1) == labels).sum())
    return {name: hits / num_scenes for name, hits in correct.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="AdaGlimpse-ClutteredDigits-v0", help="a find-and-zoom id")
    parser.add_argument("--checkpoint", default=None, help="classifier to probe (default: the id's shipped one)")
    parser.add_argument("--scenes", type=int, default=2000, help="how many of the fixed val scenes")
    parser.add_argument("--output", type=Path, default=None, help="write <output>.json and <output>.md")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error(f"--scenes must be >= 1, got {args.scenes}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kwargs = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    env = gym.make_vec(args.env_id, num_envs=1, split="val", num_val_scenes=args.scenes, **kwargs)
    if not isinstance(env, GlimpseVectorEnv) or not hasattr(env.image_source, "config"):
        sys.exit(f"--env-id must be a find-and-zoom id (cluttered digits), got {args.env_id!r}")
    results = probe(env, args.scenes)
    env.close()
    lines = ["| glimpse set | accuracy |", "|---|---|"]
    lines += [f"| {name} | {100 * value:.1f}% |" for name, value in results.items()]
    table = "\n".join(lines)
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        summary = {"env_id": args.env_id, "checkpoint": args.checkpoint or "shipped", "scenes": args.scenes}
        args.output.with_suffix(".json").write_text(json.dumps({**summary, "accuracy": results}, indent=1) + "\n")
        args.output.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
