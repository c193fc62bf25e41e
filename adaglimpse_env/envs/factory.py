"""Build envs from registered presets: resolve the data folder, the image source and the frozen model.

``gym.make(id, **kwargs)`` calls :func:`make_env` and ``gym.make_vec(id, num_envs=N, **kwargs)`` calls
:func:`make_vector_env` with the preset of :mod:`adaglimpse_env.registration` updated by ``kwargs``; both read
those keywords once into an :class:`~adaglimpse_env.presets.EnvPreset`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from adaglimpse_env.datasets.base import ImageSource
from adaglimpse_env.datasets.sources import FOLDER_LAYOUTS, build_image_source, needs_data_root
from adaglimpse_env.datasets.stream import ImageStream
from adaglimpse_env.datasets.transforms import TransformConfig
from adaglimpse_env.envs.glimpse_env import GlimpseEnv
from adaglimpse_env.envs.vector_env import GlimpseVectorEnv
from adaglimpse_env.models.checkpoint import load_model
from adaglimpse_env.models.hub import KNOWN_HUB_REPOS
from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.presets import EnvPreset
from adaglimpse_env.tasks import get_task

#: Models shipped with the package by ``checkpoint=`` name (docs/results.md gives the commands that trained them):
#: the tiny elastic MAE for photo reconstruction and the micro elastic ViT that reads the cluttered digits.
EMBEDDED_MODELS = {
    "embedded": "elastic_mae_tiny_photos.pt",
    "embedded-digits": "elastic_vit_micro_digits.pt",
}
EMBEDDED_MODEL = EMBEDDED_MODELS["embedded"]


def embedded_model_path(name: str = "embedded") -> Path:
    """Path of a model shipped with the package, used by ``checkpoint="embedded"`` / ``"embedded-digits"``."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"embedded model must be one of {list(EMBEDDED_MODELS)}, got {name!r}")
    return Path(str(resources.files("adaglimpse_env") / "assets" / "models" / EMBEDDED_MODELS[name]))


class MissingSetupError(ValueError):
    """A registered env needs a data folder or a checkpoint that was not given."""


def _from_environment(value: Any, env_var: str | None) -> Any:
    """``value``, or when it is None the environment variable ``env_var`` (an empty one counts as unset)."""
    if value is None and env_var:
        return os.environ.get(env_var) or None
    return value


def data_root(preset: EnvPreset) -> str | Path | None:
    """The preset's data folder (``data_root``, else its ``data_env_var``).

    Raises:
        MissingSetupError: a folder dataset without one, naming the keyword, the variable and the layout.
    """
    root = _from_environment(preset.data_root, preset.data_env_var)
    if root is None and preset.image_source is None and needs_data_root(preset.dataset):
        hint = f" or set the environment variable {preset.data_env_var}" if preset.data_env_var else ""
        raise MissingSetupError(
            f"{preset.env_id or preset.dataset} requires a data folder: pass data_root=... to gym.make{hint}. "
            f"Expected layout:\n{FOLDER_LAYOUTS[preset.dataset]}"
        )
    return root


def image_source(preset: EnvPreset, image_size: int) -> ImageSource:
    """The preset's images at ``image_size`` px: its ``image_source`` if given, else built from its dataset.

    Raises:
        MissingSetupError: a folder dataset without a data folder.
    """
    if preset.image_source is not None:
        return preset.image_source
    task = get_task(preset.task)
    return build_image_source(
        preset.dataset,
        preset.split,
        transform=TransformConfig(size=image_size, train=preset.augmentation, eval_resize=preset.eval_resize),
        data_root=data_root(preset),
        split_file=preset.split_file,
        with_labels=task.needs_labels,
        with_masks=task.needs_masks,
        scene=preset.scene,
    )


def make_image_stream(env_id: str, image_size: int, seed: int = 0, **kwargs: Any) -> ImageStream:
    """The image stream ``gym.make(env_id, **kwargs)`` reads, without loading its model (for references that need
    the images only, e.g. the mean-image predictor).

    Args:
        env_id: a registered id.
        image_size: the model's input side in pixels (an env's ``image_size[0]``).
        seed: the stream's seed, as ``env.reset(seed=seed)`` gives it.
        kwargs: ``gym.make`` keywords (``checkpoint`` and the other model keywords are accepted and unused).
    """
    spec = gym.spec(env_id)
    preset = EnvPreset.from_kwargs({**spec.kwargs, **kwargs})
    source = image_source(preset, image_size)
    return ImageStream(source, shuffle=preset.shuffled, num_workers=preset.num_workers, seed=seed)


def build_model(
    checkpoint: str | Path | ElasticMAE | None,
    task: str,
    device: str | torch.device,
    env_id: str = "",
    checkpoint_env_var: str | None = None,
) -> ElasticMAE:
    """The frozen model: an :class:`ElasticMAE` given directly, or loaded from a path / ``hf-hub:`` name."""
    if isinstance(checkpoint, ElasticMAE):
        return checkpoint
    source = _from_environment(checkpoint, checkpoint_env_var)
    if isinstance(source, str) and source in EMBEDDED_MODELS:
        source = embedded_model_path(source)
    if source is None:
        hint = f" or set the environment variable {checkpoint_env_var}" if checkpoint_env_var else ""
        repos = "; ".join(f"{repo}: {what}" for repo, what in KNOWN_HUB_REPOS.items())
        raise MissingSetupError(
            f"{env_id or 'This env'} requires a {task} checkpoint of the elastic MAE: pass checkpoint=... "
            f"(a file path, or 'hf-hub:<owner>/<repo>/<file>' to fetch and cache it){hint}. The paper's trained "
            f"models are published on the Hugging Face hub ({repos}); download one with `huggingface-cli download "
            f"apardyl/AdaGlimpse <file>` on a connected machine and pass its path. Any checkpoint saved by "
            f"adaglimpse_env.models.save_model works too."
        )
    return load_model(source, task=task, device=device).model


def _components(preset: EnvPreset) -> dict[str, Any]:
    """The env's constructor arguments, built in an order that fails cheaply first."""
    data_root(preset)  # say what data is missing before spending time on loading a model
    model = build_model(preset.checkpoint, preset.task, preset.device, preset.env_id, preset.checkpoint_env_var)
    source = image_source(preset, model.config.img_size[0])
    get_task(preset.task).check_classes(source, model, preset.env_id or "This env")
    return {
        "model": model,
        "image_source": source,
        "episode": preset.episode,
        "device": preset.device,
        "shuffle": preset.shuffled,
        "num_workers": preset.num_workers,
        "render_mode": preset.render_mode,
        "output": preset.output,
        "autocast_dtype": preset.autocast_dtype,
        "compile_model": preset.compile_model,
        "incremental": preset.incremental,
    }


def make_env(**kwargs: Any) -> GlimpseEnv:
    """Single env from a preset (the ``entry_point`` of every registered id)."""
    return GlimpseEnv(**_components(EnvPreset.from_kwargs(kwargs)))


def make_vector_env(num_envs: int = 1, **kwargs: Any) -> GlimpseVectorEnv:
    """Native vector env from a preset (the ``vector_entry_point`` of every registered id)."""
    autoreset_mode = kwargs.pop("autoreset_mode", "next_step")
    return GlimpseVectorEnv(num_envs, autoreset_mode=autoreset_mode, **_components(EnvPreset.from_kwargs(kwargs)))
