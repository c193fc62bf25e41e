"""Probe a reconstruction model: does its encoder keep the detail of what it is shown, and does its decoder give
it back?

Each held-out image gets native-resolution glimpses: the smallest glimpse (2x2 cells of 16 px) placed on the
model's 16-px grid, so that every cell is exactly one of the patches the decoder predicts, pixel for pixel. Each
glimpse is encoded alone. Rows (RMSE on the 0-255 scale over those patches):

* ``decoder``: the model's own reconstruction of the patches it was just shown;
* ``linear probe on the encoder``: a ridge regression from each token's final encoder latent to its patch,
  fitted on glimpses of the training images (what the latent holds, linearly);
* ``each patch's mean colour``: the patch predicted by its own mean colour (what a flat blur keeps);
* ``PCA of the latent's width``: the best linear code with as many numbers as a latent, fitted on the training
  patches (what any code of that width could keep).

A probe near the PCA and a decoder far above the probe say that the encoder keeps the detail and the decoder
loses it.

Usage::

    python scripts/probe_reconstruction.py                          # the shipped photo model
    python scripts/probe_reconstruction.py --env-kwargs checkpoint=runs/embedded_tiny/model.pt --output probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import adaglimpse_env  # noqa: F401  (registers the ids)
from adaglimpse_env import GlimpseVectorEnv
from adaglimpse_env.envs.factory import make_image_stream
from adaglimpse_env.glimpse import PATCH_SIZE, extract_patches
from adaglimpse_env.models import ElasticMAE
from adaglimpse_env.normalization import to_pixels
from adaglimpse_env.tasks import Task
from agents.config import ConfigError, parse_key_values, positive_int


def native_glimpses(images: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(B * count, 4, 4)`` cell boxes: ``count`` grid-aligned 32-px glimpses per image, cells of 16 px."""
    batch, _, height, width = images.shape
    rows, cols = height // PATCH_SIZE - 1, width // PATCH_SIZE - 1
    top = torch.randint(0, rows, (batch, count), generator=generator).reshape(-1) * PATCH_SIZE
    left = torch.randint(0, cols, (batch, count), generator=generator).reshape(-1) * PATCH_SIZE
    cells = [
        torch.stack((top + dy, left + dx, top + dy + PATCH_SIZE, left + dx + PATCH_SIZE), dim=1)
        for dy in (0, PATCH_SIZE)
        for dx in (0, PATCH_SIZE)
    ]
    return torch.stack(cells, dim=1)


def encode_glimpses(
    model: ElasticMAE, task: Task, images: torch.Tensor, count: int, seed: int
) -> dict[str, torch.Tensor]:
    """Per token, float64: ``latent (N, D)``, the true ``patch (N, p*p*3)`` and the decoder's ``decoded``
    prediction of it, normalised pixels in MAE's patch layout, from each glimpse encoded alone."""
    boxes = native_glimpses(images, count, torch.Generator().manual_seed(seed))
    pictures = images.repeat_interleave(count, dim=0)
    latents, truths, decoded = [], [], []
    width = images.shape[-1] // PATCH_SIZE
    for start in range(0, len(boxes), 64):
        box, picture = boxes[start : start + 64], pictures[start : start + 64]
        with torch.no_grad():
            latent = model.forward_encoder(extract_patches(picture, box), box).latent  # (b, 1 + 4, D)
            prediction = task.head.predict(model, latent)  # (b, G, p*p*3)
        index = ((box[..., 0] // PATCH_SIZE) * width + box[..., 1] // PATCH_SIZE)[..., None]  # (b, 4, 1)
        truth = model.patchify(picture)
        latents.append(latent[:, 1:].flatten(0, 1))
        truths.append(truth.gather(1, index.expand(-1, -1, truth.shape[-1])).flatten(0, 1))
        decoded.append(prediction.gather(1, index.expand(-1, -1, prediction.shape[-1])).flatten(0, 1))
    return {name: torch.cat(parts).double() for name, parts in
            (("latent", latents), ("patch", truths), ("decoded", decoded))}  # fmt: skip


def pixel_rmse(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    """RMSE on the 0-255 scale of normalised patches ``(N, p*p*3)`` (MAE's layout: the channel varies fastest),
    each clipped to ``[0, 255]`` first as the env's score clips its model's prediction (``to_pixels``)."""

    def pixels(patches: torch.Tensor) -> torch.Tensor:
        return to_pixels(patches.reshape(len(patches), -1, 3).transpose(1, 2)[..., None])  # (N, 3, p*p, 1)

    return float((pixels(prediction) - pixels(truth)).square().mean().sqrt())


def probe(
    env_id: str, env_kwargs: dict[str, Any], train_images: int, val_images: int, per_image: int, ridge: float, seed: int
) -> dict[str, Any]:
    """The table's rows (see the module docstring) for the frozen model of ``env_id``."""
    env = gym.make_vec(env_id, num_envs=1, **env_kwargs)
    assert isinstance(env, GlimpseVectorEnv)
    model, task, side = env.model, env.task, env.image_size[0]
    env.close()
    if task.metric_name != "rmse":
        raise ConfigError(f"probe_reconstruction needs a reconstruction env; {env_id} reports {task.metric_name}")

    def read(split: str, count: int) -> torch.Tensor:
        stream = make_image_stream(env_id, side, seed, **{**env_kwargs, "split": split})
        try:
            return torch.stack([sample["image"] for sample in stream.next_samples(count)]).float()
        finally:
            stream.close()

    model.eval()
    train = encode_glimpses(model, task, read("train", train_images), per_image, seed)
    val = encode_glimpses(model, task, read(env_kwargs.get("split", "val"), val_images), per_image, seed + 1)

    def with_bias(latent: torch.Tensor) -> torch.Tensor:
        return torch.cat((latent, torch.ones(len(latent), 1, dtype=torch.float64)), dim=1)  # (N, D + 1)

    features = with_bias(train["latent"])
    weights = torch.linalg.solve(
        features.T @ features + ridge * torch.eye(features.shape[1], dtype=torch.float64), features.T @ train["patch"]
    )
    val_features = with_bias(val["latent"])
    patches = val["patch"]
    mean_colour = patches.reshape(len(patches), -1, 3).mean(dim=1, keepdim=True).expand(-1, PATCH_SIZE**2, -1)
    centre = train["patch"].mean(dim=0)
    width = train["latent"].shape[1]
    _, _, basis = torch.linalg.svd(train["patch"] - centre, full_matrices=False)
    code = basis[:width]  # (D, p*p*3), the training patches' top principal directions
    pca = (patches - centre) @ code.T @ code + centre
    return {
        "env_id": env_id, "tokens": len(patches), "train_tokens": len(train["patch"]), "latent_width": width,
        "rmse": {
            "decoder": pixel_rmse(val["decoded"], patches),
            "linear probe on the encoder": pixel_rmse(val_features @ weights, patches),
            "each patch's mean colour": pixel_rmse(mean_colour.reshape(len(patches), -1), patches),
            "PCA of the latent's width": pixel_rmse(pca, patches),
        },
    }  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="AdaGlimpse-Photos-v0", help="a reconstruction id")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="extra gym.make kwargs")
    parser.add_argument("--train-images", type=positive_int, default=118, help="images the probe is fitted on")
    parser.add_argument("--val-images", type=positive_int, default=29, help="held-out images it is scored on")
    parser.add_argument("--glimpses-per-image", type=positive_int, default=8, help="native glimpses per image")
    parser.add_argument("--ridge", type=float, default=0.1, help="ridge penalty of the linear probe")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images' crops and the glimpses")
    parser.add_argument("--output", type=Path, default=None, help="also write the result as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env_kwargs = {"augment": True, **parse_key_values(args.env_kwargs)}
    result = probe(args.env_id, env_kwargs, args.train_images, args.val_images, args.glimpses_per_image,
                   args.ridge, args.seed)  # fmt: skip
    print(f"{args.env_id}: {result['tokens']} native patches of held-out images, each glimpse encoded alone")
    print("| row | RMSE (0-255) |\n|---|---:|")
    for name, value in result["rmse"].items():
        print(f"| {name} | {value:.2f} |")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as error:
        sys.exit(str(error))
