"""Every registered env id and its preset, in one place; :func:`register_envs` is idempotent.

Presets are typed data (:class:`~adaglimpse_env.presets.EnvPreset`, whose fields are the ``gym.make`` keywords,
Minigrid style); any of them can be overridden in ``gym.make(id, **kwargs)`` or
``gym.make_vec(id, num_envs=N, **kwargs)``.
"""

from __future__ import annotations

import gymnasium as gym

from adaglimpse_env.presets import EnvPreset

ENTRY_POINT = "adaglimpse_env.envs.factory:make_env"
VECTOR_ENTRY_POINT = "adaglimpse_env.envs.factory:make_vector_env"

#: id -> preset. ``data_env_var`` / ``checkpoint_env_var`` name the environment variables read when
#: ``data_root`` / ``checkpoint`` are not given. Dataset ids decode JPEGs in 2 background worker processes
#: (``num_workers``) so the model never waits on decoding; ``num_workers=0`` decodes in the calling process.
ENV_PRESETS: dict[str, EnvPreset] = {
    # The offline default: photographs and a model shipped inside the package; runs with no arguments.
    "AdaGlimpse-Photos-v0": EnvPreset(
        dataset="photos",
        task="reconstruction",
        num_glimpses=12,
        checkpoint="embedded",
    ),
    # Find and zoom, offline: one small digit on a cluttered canvas, read by a classifier shipped in the package.
    # A whole-image glimpse cannot read the digit; an agent has to find it and look closer (docs/tasks.md).
    "AdaGlimpse-ClutteredDigits-v0": EnvPreset(
        dataset="digits",
        task="classification",
        num_glimpses=14,
        checkpoint="embedded-digits",
    ),
    # The same scenes and model with a 6-glimpse budget, for fast algorithm development (docs/benchmarks.md).
    "AdaGlimpse-ClutteredDigits-Fast-v0": EnvPreset(
        dataset="digits",
        task="classification",
        num_glimpses=6,
        checkpoint="embedded-digits",
    ),
    "AdaGlimpse-ImageNet-v0": EnvPreset(
        dataset="imagenet",
        num_workers=2,
        task="classification",
        num_glimpses=14,
        data_env_var="ADAGLIMPSE_IMAGENET_ROOT",
        checkpoint_env_var="ADAGLIMPSE_IMAGENET_CLASSIFICATION_CHECKPOINT",
    ),
    "AdaGlimpse-ImageNet-Reconstruction-v0": EnvPreset(
        dataset="imagenet",
        num_workers=2,
        task="reconstruction",
        num_glimpses=12,
        data_env_var="ADAGLIMPSE_IMAGENET_ROOT",
        checkpoint_env_var="ADAGLIMPSE_IMAGENET_RECONSTRUCTION_CHECKPOINT",
    ),
    "AdaGlimpse-SUN360-v0": EnvPreset(
        dataset="sun360",
        num_workers=2,
        task="classification",
        num_glimpses=14,
        data_env_var="ADAGLIMPSE_SUN360_ROOT",
        checkpoint_env_var="ADAGLIMPSE_SUN360_CLASSIFICATION_CHECKPOINT",
    ),
    "AdaGlimpse-SUN360-Reconstruction-v0": EnvPreset(
        dataset="sun360",
        num_workers=2,
        task="reconstruction",
        num_glimpses=12,
        data_env_var="ADAGLIMPSE_SUN360_ROOT",
        checkpoint_env_var="ADAGLIMPSE_SUN360_RECONSTRUCTION_CHECKPOINT",
    ),
    "AdaGlimpse-ADE20K-Segmentation-v0": EnvPreset(
        dataset="ade20k",
        num_workers=2,
        task="segmentation",
        num_glimpses=8,
        grid_size=3,
        data_env_var="ADAGLIMPSE_ADE20K_ROOT",
        checkpoint_env_var="ADAGLIMPSE_ADE20K_SEGMENTATION_CHECKPOINT",
    ),
    "AdaGlimpse-ADE20K-Reconstruction-v0": EnvPreset(
        dataset="ade20k",
        num_workers=2,
        task="reconstruction",
        num_glimpses=12,
        data_env_var="ADAGLIMPSE_ADE20K_ROOT",
        checkpoint_env_var="ADAGLIMPSE_ADE20K_RECONSTRUCTION_CHECKPOINT",
    ),
    "AdaGlimpse-COCO-Reconstruction-v0": EnvPreset(
        dataset="coco",
        num_workers=2,
        task="reconstruction",
        num_glimpses=12,
        data_env_var="ADAGLIMPSE_COCO_ROOT",
        checkpoint_env_var="ADAGLIMPSE_COCO_RECONSTRUCTION_CHECKPOINT",
    ),
    "AdaGlimpse-ImageFolder-v0": EnvPreset(
        dataset="folder",
        task="reconstruction",
        num_glimpses=12,
        data_env_var="ADAGLIMPSE_IMAGE_FOLDER",
        checkpoint_env_var="ADAGLIMPSE_CHECKPOINT",
    ),
}


def register_envs() -> None:
    """Register every id of :data:`ENV_PRESETS` with Gymnasium (skipping ids already registered)."""
    for env_id, preset in ENV_PRESETS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            # Gymnasium keeps keywords as a dict and merges gym.make's overrides into it key by key.
            kwargs={"env_id": env_id, **preset.as_kwargs()},
        )
