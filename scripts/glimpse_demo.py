"""Run the frozen model over one episode of glimpses on one image and print what it sees and how it scores.

A smoke run of the whole pipeline below the environment: image -> glimpse geometry -> elastic MAE -> task head
-> score. With no arguments it uses the photograph bundled with the package and a tiny randomly initialised
model (so the scores are those of an untrained model); pass ``--checkpoint`` for a real one.

Usage::

    python scripts/glimpse_demo.py
    python scripts/glimpse_demo.py --image photo.jpg --checkpoint model.pt --device cuda --policy random
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import torch

from adaglimpse_env.glimpse import action_to_unit, extract_glimpses
from adaglimpse_env.image_io import load_rgb, resize_center_crop, to_model_tensor
from adaglimpse_env.models import attention_rollout, create_model, create_task_head, load_model


def sample_image_path() -> Path:
    """A held-out photograph shipped with the package (see ``assets/photos/MANIFEST.json``)."""
    return Path(str(resources.files("adaglimpse_env") / "assets" / "photos" / "val" / "rocket.jpg"))


def raster_actions(num_glimpses: int) -> torch.Tensor:
    """Whole image first, then a 2-D raster of the smallest glimpses; ``(N, 3)`` ``(x, y, scale)`` in [-1, 1]."""
    actions = [torch.tensor([0.0, 0.0, 1.0])]
    side = max(1, int((num_glimpses - 1) ** 0.5 + 0.999))
    coords = torch.linspace(-1.0, 1.0, side) if side > 1 else torch.zeros(1)
    for y in coords:
        for x in coords:
            actions.append(torch.stack((x, y, torch.tensor(-1.0))))
    return torch.stack(actions[:num_glimpses])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None, help="image file (default: the bundled photograph)")
    parser.add_argument("--checkpoint", default=None, help="model checkpoint path or hf-hub:<owner>/<repo>/<file>")
    parser.add_argument("--model-size", default="tiny", help="size of the random model without --checkpoint")
    parser.add_argument("--num-glimpses", type=int, default=12)
    parser.add_argument("--grid-size", type=int, default=2)
    parser.add_argument("--policy", choices=("raster", "random"), default="raster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    if args.checkpoint:
        loaded = load_model(args.checkpoint, device=device)
        model, task = loaded.model, loaded.task
        print(f"model: {args.checkpoint} ({task}, {loaded.source_format})")
    else:
        task = "reconstruction"
        model = create_model(args.model_size, task).to(device).eval()
        print(f"model: randomly initialised '{args.model_size}' (untrained: scores show the pipeline, not skill)")
    if task != "reconstruction":
        print(f"glimpse_demo scores reconstruction only, got a {task} checkpoint", file=sys.stderr)
        return 2
    head = create_task_head(task)

    image_path = args.image or sample_image_path()
    image = to_model_tensor(resize_center_crop(load_rgb(image_path), model.config.img_size[0]))
    images = image[None].to(device)  # (1, 3, H, W)
    print(f"image: {image_path}")

    random_actions = torch.rand(args.num_glimpses, 3) * 2 - 1
    actions = raster_actions(args.num_glimpses) if args.policy == "raster" else random_actions
    patches = images.new_zeros(1, 0, 3, 16, 16)
    boxes = torch.zeros(1, 0, 4, dtype=torch.long, device=device)

    print(f"{'step':>4}  {'action (x, y, scale)':>22}  {'glimpse (y, x, side)':>20}  {'-RMSE':>8}  {'ms':>6}")
    with torch.inference_mode():
        for step in range(args.num_glimpses + 1):
            start = time.perf_counter()
            if step:
                new_patches, new_boxes = extract_glimpses(
                    images, action_to_unit(actions[step - 1 : step].to(device)), args.grid_size
                )
                patches = torch.cat((patches, new_patches), dim=1)
                boxes = torch.cat((boxes, new_boxes), dim=1)
            encoded = model.forward_encoder(patches, boxes, return_attention=True)
            importance = attention_rollout(encoded.attentions)
            score = head.score(model, head.predict(model, encoded.latent), images, None)
            elapsed = (time.perf_counter() - start) * 1000
            if step:
                action = ", ".join(f"{v:+.2f}" for v in actions[step - 1].tolist())
                y1, x1 = boxes[0, -(args.grid_size**2), :2].tolist()
                side = boxes[0, -1, 3].item() - x1
                where = f"({y1}, {x1}, {side})"
            else:
                action, where = "(none)", "-"
            print(f"{step:>4}  {action:>22}  {where:>20}  {score.item():8.2f}  {elapsed:6.1f}")
    assert importance.shape[1] == boxes.shape[1]
    print(f"tokens: {boxes.shape[1]}, importance sums to {importance.sum().item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
