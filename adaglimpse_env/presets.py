"""Every ``gym.make`` keyword of the registered ids, as one typed, frozen dataclass.

A registered id's preset is an :class:`EnvPreset` (:mod:`adaglimpse_env.registration`). Gymnasium keeps a spec's
keywords as a plain dict and merges ``gym.make(id, **overrides)`` into it key by key, so a preset registers as
:meth:`EnvPreset.as_kwargs` and the factory turns the merged dict back into an :class:`EnvPreset` with
:meth:`EnvPreset.from_kwargs`: every keyword is checked and typed once, at that boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaglimpse_env.config import EpisodeConfig, EpisodeOptions, ResolvedEpisodeConfig
from adaglimpse_env.datasets.sources import check_dataset

if TYPE_CHECKING:
    import torch

    from adaglimpse_env.datasets.base import ImageSource
    from adaglimpse_env.models.mae import ElasticMAE

#: Fields that are :class:`EpisodeConfig` fields (``task`` included).
EPISODE_KEYS = tuple(field.name for field in fields(EpisodeConfig))
#: Scene difficulty keywords of the ``digits`` dataset (see :class:`~adaglimpse_env.datasets.scenes.SceneConfig`).
SCENE_KEYS = ("digit_height", "max_rotation", "stroke", "clutter", "background", "background_contrast",
              "num_val_scenes")  # fmt: skip


@dataclass(frozen=True)
class EnvPreset(EpisodeOptions):
    """An env as ``gym.make`` builds it; each field is a keyword of ``gym.make(id, ...)`` (and ``make_vec``).

    Attributes:
        env_id: the registered id, named in errors.
        dataset: image source name (see :data:`adaglimpse_env.datasets.sources.DATASETS`).
        task: ``reconstruction``, ``classification`` or ``segmentation``.
        split: ``"train"`` or ``"val"``; the shipped photos (``AdaGlimpse-Photos-v0``) also have ``"heldout"``:
            the photos of whole sources the shipped model was never trained on.
        data_root: the data folder of a folder dataset.
        data_env_var: environment variable read when ``data_root`` is not given.
        split_file: SUN360's list of panoramas.
        augment: random crops and flips (None: on for the train split).
        eval_resize: ``"center_crop"`` or ``"squash"`` without augmentation (see ``TransformConfig``).
        shuffle: visit images in a seeded random order (None: on for the train split).
        image_source: a ready :class:`ImageSource`, used instead of ``dataset`` (its transform must match the model).
        digit_height: scene keyword of ``dataset="digits"`` (None: the scene's default); see ``SceneConfig``.
        max_rotation: scene keyword, as ``digit_height``.
        stroke: scene keyword, as ``digit_height``.
        clutter: scene keyword, as ``digit_height``.
        background: scene keyword, as ``digit_height``.
        background_contrast: scene keyword, as ``digit_height``.
        num_val_scenes: scene keyword, as ``digit_height``.
        checkpoint: the frozen model: a path, ``hf-hub:<owner>/<repo>/<file>``, a shipped model's name
            (``"embedded"``, ``"embedded-digits"``) or an ``ElasticMAE``.
        checkpoint_env_var: environment variable read when ``checkpoint`` is not given.
        device: where the model runs.
        num_glimpses: glimpses per episode (None: the task's); see :class:`EpisodeConfig` for the episode fields.
        grid_size: glimpse grid ``g`` (None: the task's).
        max_glimpse_ratio: largest glimpse side as a fraction of the image side.
        reward: ``diff``, ``final`` or ``raw``.
        early_stop_threshold: end an episode when its score reaches this value.
        observation: ``full``, ``latent``, ``flat`` or ``map``.
        extract_latent_layer: observe the input of this encoder block.
        map_size: side of the ``map`` observation.
        max_episode_steps: what ``gym.make_vec`` passes on; at least ``num_glimpses`` (an episode already ends
            there), a lower one is refused.
        num_workers: decoding worker processes (see :class:`GlimpseVectorEnv` for this and the fields below).
        render_mode: None or ``"rgb_array"``.
        output: ``"numpy"`` or ``"torch"``.
        autocast_dtype: mixed precision of the model's forward.
        compile_model: ``torch.compile`` the model.
        incremental: reuse what does not change within an episode.
    """

    env_id: str = ""
    dataset: str = "folder"
    task: str = "reconstruction"
    split: str = "train"
    data_root: str | Path | None = None
    data_env_var: str | None = None
    split_file: str | Path | None = None
    augment: bool | None = None
    eval_resize: str = "center_crop"
    shuffle: bool | None = None
    image_source: ImageSource | None = None
    digit_height: tuple[float, float] | None = None
    max_rotation: float | None = None
    stroke: tuple[int, int] | None = None
    clutter: int | None = None
    background: str | None = None
    background_contrast: float | None = None
    num_val_scenes: int | None = None
    checkpoint: str | Path | ElasticMAE | None = None
    checkpoint_env_var: str | None = None
    device: str | torch.device = "cpu"
    num_glimpses: int | None = None
    grid_size: int | None = None
    max_episode_steps: int | None = None
    num_workers: int = 0
    render_mode: str | None = None
    output: str = "numpy"
    autocast_dtype: str | torch.dtype | None = None
    compile_model: bool = False
    incremental: bool = True

    def __post_init__(self) -> None:
        # Cheap checks only (presets are built at import): no environment variable, file or model is read here.
        check_dataset(self.dataset)
        if self.scene and self.dataset != "digits":
            raise TypeError(f"{self.name}: scene keywords {sorted(self.scene)} need dataset='digits'")
        episode = self.episode  # an out-of-range episode value fails before any data or model is loaded
        if self.max_episode_steps is not None and self.max_episode_steps < episode.num_glimpses:
            # gym.make_vec hands max_episode_steps to the env (gym.make applies it as a TimeLimit). An episode
            # already ends after num_glimpses steps, so a limit at or above that never acts; a lower one would
            # silently be ignored.
            raise ValueError(
                f"{self.name} requires max_episode_steps >= num_glimpses={episode.num_glimpses} (an episode ends "
                f"after its glimpse budget), got max_episode_steps={self.max_episode_steps}; pass "
                f"num_glimpses={self.max_episode_steps} for shorter episodes"
            )

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> EnvPreset:
        """The preset of ``gym.make``'s merged keywords.

        Raises:
            TypeError: a keyword that is not a field, naming every such keyword.
        """
        unknown = set(kwargs) - {field.name for field in fields(cls)}
        if unknown:
            raise TypeError(f"{kwargs.get('env_id') or 'make_env'} got unexpected keyword arguments {sorted(unknown)}")
        return cls(**kwargs)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields that differ from the defaults, as ``gym.register`` keeps them (``from_kwargs`` inverts it)."""
        # getattr, not dataclasses.asdict: asdict would deep-copy a given model or image source.
        values = {field.name: (getattr(self, field.name), field.default) for field in fields(self)}
        return {name: value for name, (value, default) in values.items() if value != default}

    @property
    def name(self) -> str:
        """How errors name this env: its id, or ``make_env``."""
        return self.env_id or "make_env"

    @property
    def scene(self) -> dict[str, Any]:
        """The scene keywords that were given (the others keep :class:`SceneConfig`'s defaults)."""
        return {key: getattr(self, key) for key in SCENE_KEYS if getattr(self, key) is not None}

    @property
    def episode(self) -> ResolvedEpisodeConfig:
        """The episode, resolved (the task's glimpse budget and grid where none was given)."""
        return EpisodeConfig(**{key: getattr(self, key) for key in EPISODE_KEYS}).resolve()

    @property
    def augmentation(self) -> bool:
        """Whether images are augmented: ``augment``, else on for the train split."""
        return self.split == "train" if self.augment is None else self.augment

    @property
    def shuffled(self) -> bool:
        """Whether images come in a shuffled order: ``shuffle``, else on for the train split."""
        return self.split == "train" if self.shuffle is None else self.shuffle
