"""Build envs from registered presets: resolve the data folder, the image source and the frozen model.

``gym.make(id, **kwargs)`` calls :func:`make_env` and ``gym.make_vec(id, num_envs=N, **kwargs)`` calls
:func:`make_vector_env` with the preset of :mod:`adaglimpse_env.registration` updated by ``kwargs``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from adaglimpse_env.config import EpisodeConfig, ResolvedEpisodeConfig
from adaglimpse_env.datasets import folders
from adaglimpse_env.datasets.base import ImageSource
from adaglimpse_env.datasets.scenes import ClutteredDigits, SceneConfig
from adaglimpse_env.datasets.transforms import TransformConfig
from adaglimpse_env.envs.glimpse_env import GlimpseEnv
from adaglimpse_env.envs.vector_env import GlimpseVectorEnv
from adaglimpse_env.models.checkpoint import load_model
from adaglimpse_env.models.hub import KNOWN_HUB_REPOS
from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.tasks import get_task

_LAYOUTS = {
    "imagenet": folders.IMAGENET_LAYOUT,
    "sun360": folders.SUN360_LAYOUT,
    "ade20k": folders.ADE20K_LAYOUT,
    "coco": folders.COCO_LAYOUT,
    "folder": folders.FOLDER_LAYOUT,
}
_EPISODE_KEYS = (
    "num_glimpses",
    "grid_size",
    "max_glimpse_ratio",
    "reward",
    "early_stop_threshold",
    "observation",
    "extract_latent_layer",
)

#: Keyword arguments passed to the env unchanged (see GlimpseVectorEnv; the env validates them).
_ENV_KEYS = ("num_workers", "render_mode", "output", "autocast_dtype", "compile_model", "incremental")

#: Scene difficulty keywords of the ``digits`` dataset (see :class:`~adaglimpse_env.datasets.scenes.SceneConfig`).
_SCENE_KEYS = ("digit_height", "max_rotation", "stroke", "clutter", "background", "background_contrast",
               "num_val_scenes")  # fmt: skip

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


def _resolve(value: Any, env_var: str | None) -> Any:
    if value is None and env_var:
        return os.environ.get(env_var) or None
    return value


def build_image_source(
    dataset: str,
    data_root: str | Path | None,
    split: str,
    task: str,
    image_size: int,
    augment: bool,
    eval_resize: str = "center_crop",
    split_file: str | Path | None = None,
    env_id: str = "",
    data_env_var: str | None = None,
    scene: dict[str, Any] | None = None,
) -> ImageSource:
    """The :class:`ImageSource` of a dataset name; see :mod:`adaglimpse_env.datasets.folders` and, for the
    procedural ``digits`` scenes (``scene``: :class:`~adaglimpse_env.datasets.scenes.SceneConfig` keywords),
    :mod:`adaglimpse_env.datasets.scenes`."""
    transform = TransformConfig(size=image_size, train=augment, eval_resize=eval_resize)
    if dataset == "photos":
        return folders.embedded_photos(split, transform)
    if dataset == "digits":
        return ClutteredDigits(split, SceneConfig(canvas_size=image_size, **(scene or {})))
    if dataset not in _LAYOUTS:
        raise ValueError(f"dataset must be one of {[*_LAYOUTS, 'photos', 'digits']}, got {dataset!r}")
    root = _resolve(data_root, data_env_var)
    if root is None:
        hint = f" or set the environment variable {data_env_var}" if data_env_var else ""
        raise MissingSetupError(
            f"{env_id or dataset} requires a data folder: pass data_root=... to gym.make{hint}. "
            f"Expected layout:\n{_LAYOUTS[dataset]}"
        )
    needs = get_task(task)
    if dataset == "imagenet":
        return folders.imagenet(root, split, transform)
    if dataset == "sun360":
        return folders.sun360(root, split, transform, split_file=split_file, with_labels=needs.needs_labels)
    if dataset == "ade20k":
        return folders.ade20k(root, split, transform, with_masks=needs.needs_masks)
    if dataset == "coco":
        return folders.coco2014(root, split, transform)
    return folders.image_folder(root, transform, require_labels=needs.needs_labels)


def check_class_counts(source: ImageSource, model: ElasticMAE, task: str, env_id: str = "") -> None:
    """Fail at construction when the data has more classes than the model predicts (else torch fails mid-run with
    ``index out of bounds``).

    Raises:
        ValueError: naming both numbers.
    """
    what = env_id or "This env"
    if task == "classification" and source.labels is not None and len(source.labels):
        needed = int(max(source.labels)) + 1
        if needed > model.config.num_classes:
            raise ValueError(
                f"{what} requires a model with at least {needed} classes for its data ({len(source.classes)} class "
                f"folders), got a checkpoint with num_classes={model.config.num_classes}; use a checkpoint trained "
                "on these classes or remove class folders"
            )
    # A segmentation model's classes are its decoder's output channels (out_chans).
    if task == "segmentation" and source.has_masks and model.config.out_chans < folders.ADE20K_CLASSES:
        raise ValueError(
            f"{what} requires a segmentation model with at least {folders.ADE20K_CLASSES} classes (ADE20K's mask "
            f"classes), got a checkpoint with {model.config.out_chans} (out_chans)"
        )


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
    source = _resolve(checkpoint, checkpoint_env_var)
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


def _components(kwargs: dict[str, Any]) -> dict[str, Any]:
    options = dict(kwargs)
    env_id = options.pop("env_id", "")
    task = options.pop("task", "reconstruction")
    device = options.pop("device", "cpu")
    dataset = options.pop("dataset", "folder")
    data_root = _resolve(options.pop("data_root", None), options.get("data_env_var"))
    scene = {key: options.pop(key) for key in _SCENE_KEYS if key in options}
    if scene and dataset != "digits":
        raise TypeError(f"{env_id or 'make_env'}: scene keywords {sorted(scene)} need dataset='digits'")
    if options.get("image_source") is None and dataset not in ("photos", "digits") and data_root is None:
        # Say what data is missing before spending time on loading a model.
        build_image_source(
            dataset, None, "train", task, 224, False, env_id=env_id, data_env_var=options.get("data_env_var")
        )
    model = build_model(options.pop("checkpoint", None), task, device, env_id, options.pop("checkpoint_env_var", None))
    split = options.pop("split", "train")
    augment = options.pop("augment", None)
    source = options.pop("image_source", None)
    data_env_var = options.pop("data_env_var", None)
    eval_resize = options.pop("eval_resize", "center_crop")
    split_file = options.pop("split_file", None)
    if source is None:
        source = build_image_source(
            dataset,
            data_root,
            split,
            task,
            model.config.img_size[0],
            split == "train" if augment is None else augment,
            eval_resize,
            split_file,
            env_id,
            data_env_var,
            scene,
        )
    check_class_counts(source, model, task, env_id)
    episode = EpisodeConfig(task=task, **{key: options.pop(key) for key in _EPISODE_KEYS if key in options}).resolve()
    shuffle = options.pop("shuffle", split == "train")
    _check_max_episode_steps(options.pop("max_episode_steps", None), episode, env_id)
    unknown = set(options) - set(_ENV_KEYS)
    if unknown:
        raise TypeError(f"{env_id or 'make_env'} got unexpected keyword arguments {sorted(unknown)}")
    return {
        "model": model,
        "image_source": source,
        "episode": episode,
        "device": device,
        "shuffle": shuffle,
        **options,
    }


def _check_max_episode_steps(max_episode_steps: int | None, episode: ResolvedEpisodeConfig, env_id: str) -> None:
    """``gym.make_vec`` hands ``max_episode_steps`` to the env (``gym.make`` applies it as a ``TimeLimit``). An
    episode already ends after ``num_glimpses`` steps, so a limit at or above that never acts; a lower one would
    silently be ignored, so it is refused.

    Raises:
        ValueError: ``max_episode_steps < num_glimpses``.
    """
    if max_episode_steps is not None and max_episode_steps < episode.num_glimpses:
        raise ValueError(
            f"{env_id or 'make_env'} requires max_episode_steps >= num_glimpses={episode.num_glimpses} (an episode "
            f"ends after its glimpse budget), got max_episode_steps={max_episode_steps}; pass "
            f"num_glimpses={max_episode_steps} for shorter episodes"
        )


def make_env(**kwargs: Any) -> GlimpseEnv:
    """Single env from a preset (the ``entry_point`` of every registered id)."""
    return GlimpseEnv(**_components(kwargs))


def make_vector_env(num_envs: int = 1, **kwargs: Any) -> GlimpseVectorEnv:
    """Native vector env from a preset (the ``vector_entry_point`` of every registered id)."""
    autoreset_mode = kwargs.pop("autoreset_mode", "next_step")
    return GlimpseVectorEnv(num_envs, autoreset_mode=autoreset_mode, **_components(kwargs))
