"""The real implementation: ``num_envs`` images, one batched frozen-model forward per vector step.

Data flows one way: image stream -> glimpse extraction -> frozen model -> score -> reward -> observation.
All per-env state (images, patches, boxes, coverage) stays on ``device`` between steps; the only host transfers
are the observation, reward and info arrays Gymnasium's numpy API needs.

Envs may be at different glimpse counts (early stopping, partial resets): the batch is padded to the largest
token count and empty slots are masked as attention keys in the encoder and decoder and skipped by the rollout,
so every env gets exactly what it would get alone (see :func:`~adaglimpse_env.models.mae.attention_rollout`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from adaglimpse_env.config import EpisodeConfig
from adaglimpse_env.datasets.base import ImageSource
from adaglimpse_env.datasets.stream import ImageStream
from adaglimpse_env.envs.spaces import action_space, observation_space
from adaglimpse_env.glimpse import action_to_unit, compute_glimpse_boxes, extract_patches
from adaglimpse_env.metrics import confusion_matrix, segmentation_scores
from adaglimpse_env.models.heads import TaskHead, create_task_head
from adaglimpse_env.models.mae import ElasticMAE, attention_rollout

_AUTORESET_MODES = {mode.value: mode for mode in AutoresetMode} | {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
}


class GlimpseVectorEnv(VectorEnv):
    """Active visual exploration on a batch of images (spec §1.4, §3).

    Each sub-env's episode is one image: ``reset`` evaluates the model with no glimpse (step 0), each ``step``
    adds one glimpse of ``g * g`` patch tokens, and the episode terminates after ``num_glimpses`` glimpses or
    when the score reaches ``early_stop_threshold``.

    Args:
        num_envs: images held at once.
        model: the frozen :class:`ElasticMAE` (moved to ``device``, put in eval mode, gradients off).
        image_source: where images come from.
        episode: task, glimpse budget, reward and observation preset.
        device: ``"cpu"``, ``"cuda"``, ...
        shuffle: draw images in a seeded random order (else in file order).
        num_workers: background decoding processes.
        render_mode: ``None`` or ``"rgb_array"``.
        autoreset_mode: ``"next_step"`` (Gymnasium's default), ``"same_step"`` (the final observation is in
            ``info["final_obs"]``) or ``"disabled"``.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (Gymnasium convention)
        "render_modes": ["rgb_array"],
        "render_fps": 2,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int,
        model: ElasticMAE,
        image_source: ImageSource,
        episode: EpisodeConfig | None = None,
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        num_workers: int = 0,
        render_mode: str | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"GlimpseVectorEnv requires num_envs >= 1, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        mode = _AUTORESET_MODES.get(autoreset_mode) if isinstance(autoreset_mode, str) else autoreset_mode
        if mode is None:
            raise ValueError(f"autoreset_mode must be 'next_step', 'same_step' or 'disabled', got {autoreset_mode!r}")
        self.episode = episode or EpisodeConfig()
        self.head: TaskHead = create_task_head(self.episode.task)
        _check_model(model, self.head, self.episode)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode

        height, width = model.config.img_size
        if height != width:
            raise ValueError(f"GlimpseVectorEnv requires a square model input, got img_size={model.config.img_size}")
        if image_source.transform.size != height:
            raise ValueError(
                f"The image source produces {image_source.transform.size} px images but the model expects {height} px; "
                f"build the source with TransformConfig(size={height})"
            )
        if self.episode.task == "segmentation" and not image_source.has_masks:
            raise ValueError("task='segmentation' requires an image source with masks, got one without")
        self.image_source = image_source
        self.stream = ImageStream(image_source, shuffle=shuffle, num_workers=num_workers)
        self.stream.check_readable()
        self.image_size = (height, width)

        cfg = self.episode
        self.max_tokens = cfg.max_tokens
        self.embed_dim = model.config.embed_dim
        self.single_action_space = action_space()
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = observation_space(
            cfg.observation, self.max_tokens, self.embed_dim, self.image_size
        )
        self.observation_space = batch_space(self.single_observation_space, num_envs)

        b, p, dev = num_envs, self.max_tokens, self.device
        self._images = torch.zeros(b, 3, height, width, device=dev)
        self._labels = torch.full((b,), -1, dtype=torch.long, device=dev)
        self._masks = (
            torch.zeros(b, height, width, dtype=torch.long, device=dev) if cfg.task == "segmentation" else None
        )
        self._patches = torch.zeros(b, p, 3, 16, 16, device=dev)
        self._boxes = torch.zeros(b, p, 4, dtype=torch.long, device=dev)
        self._coverage = torch.zeros(b, height, width, dtype=torch.bool, device=dev)
        self._glimpses = np.zeros(b, dtype=np.int64)
        self._crops = np.full((b, cfg.num_glimpses or 0, 4), -1, dtype=np.int64)
        self._score = np.zeros(b, dtype=np.float64)
        self._initial_score = np.zeros(b, dtype=np.float64)
        self._clipped = np.zeros(b, dtype=np.int64)
        self._needs_reset = np.zeros(b, dtype=bool)
        self._started = False
        self._empty_state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._prediction: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start new episodes on new images.

        Args:
            seed: seeds the image order and augmentation (an int; a list uses its first element).
            options: ``{"reset_mask": (num_envs,) bool}`` resets only those envs.
        """
        if isinstance(seed, list):
            seed = seed[0] if seed else None
        super().reset(seed=seed)
        if seed is not None:
            self.stream.reseed(seed)
        elif not self._started:
            self.stream.reseed(int(self.np_random.integers(2**31 - 1)))
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask requires shape ({self.num_envs},), got {mask.shape}")
        if not self._started and not mask.all():
            raise ValueError("The first reset must reset every env (reset_mask all True)")
        self._started = True
        self._load_images(np.flatnonzero(mask))
        evaluation = self._evaluate()
        self._score[mask] = evaluation["score"][mask]
        self._initial_score[mask] = evaluation["score"][mask]
        self._needs_reset[mask] = False
        return self._observation(evaluation), self._info(evaluation, np.zeros(self.num_envs, dtype=bool))

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Take one glimpse in every env (envs that finished last step are reset instead, in next-step mode).

        Args:
            actions: ``(num_envs, 3)`` ``(x, y, scale)`` in ``[-1, 1]``. Finite values outside the box are clipped
                and counted in ``info["num_clipped_actions"]``; NaN, inf or a wrong shape raise ``ValueError``.
        """
        if not self._started:
            raise RuntimeError("GlimpseVectorEnv.step() requires reset() to be called first")
        actions = self._validate_actions(actions)
        resetting = self._needs_reset.copy()
        if resetting.any():
            if self.autoreset_mode == AutoresetMode.DISABLED:
                raise RuntimeError(
                    "step() called on a finished episode with autoreset disabled; call reset() "
                    "(or reset(options={'reset_mask': ...})) first"
                )
            self._load_images(np.flatnonzero(resetting))
        stepping = ~resetting
        self._add_glimpses(actions, stepping)
        evaluation = self._evaluate()
        score = evaluation["score"]

        cfg = self.episode
        early = np.zeros(self.num_envs, dtype=bool)
        if cfg.early_stop_threshold is not None:
            early = score >= cfg.early_stop_threshold
        terminated = stepping & ((self._glimpses >= (cfg.num_glimpses or 0)) | early)
        reward = self._reward(score, terminated)
        reward[resetting] = 0.0
        self._initial_score[resetting] = score[resetting]
        self._score = score.copy()

        observation = self._observation(evaluation)
        info = self._info(evaluation, terminated & early)
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.autoreset_mode == AutoresetMode.SAME_STEP and terminated.any():
            # Gymnasium's same-step autoreset: the finished envs start over now; what they ended with goes in
            # info["final_obs"] / info["final_info"]. When every env finishes together (fixed budgets) the new
            # step-0 evaluation is the cached empty state, so this costs no second forward.
            final_obs, final_info = observation, info
            self._load_images(np.flatnonzero(terminated))
            fresh = self._evaluate()
            self._score[terminated] = fresh["score"][terminated]
            self._initial_score[terminated] = fresh["score"][terminated]
            observation = self._observation(fresh)
            info = self._info(fresh, np.zeros(self.num_envs, dtype=bool))
            info.update(final_obs=final_obs, _final_obs=terminated, final_info=final_info, _final_info=terminated)
        else:
            self._needs_reset = terminated
        return observation, reward.astype(np.float32), terminated, truncated, info

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One ``rgb_array`` frame per env, ``(H, 3W, 3)``: the image with this episode's glimpse boxes, what the
        agent has seen (its patches pasted at their boxes on grey), and the model's current prediction."""
        if self.render_mode is None:
            return None
        from adaglimpse_env.rendering import render_frames

        assert self._prediction is not None, "render() requires reset() to be called first"
        return render_frames(
            self.model,
            self.head,
            self._images,
            self._prediction,
            self._crops,
            self._glimpses,
            self.image_source.classes,
            patches=self._patches,
            boxes=self._boxes,
            tokens_per_glimpse=self.episode.tokens_per_glimpse,
        )

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the decoding workers."""
        self.stream.reseed(0)

    @property
    def num_skipped_images(self) -> int:
        """Unreadable files skipped so far (each also gave one warning)."""
        return self.stream.num_skipped

    # ------------------------------------------------------------------------------------------------ internals
    def _validate_actions(self, actions: Any) -> np.ndarray:
        try:
            array = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"GlimpseVectorEnv.step requires numeric actions of shape ({self.num_envs}, 3), got {actions!r}"
            ) from error
        if array.shape == (3,) and self.num_envs == 1:
            array = array[None]
        if array.shape != (self.num_envs, 3):
            raise ValueError(
                f"GlimpseVectorEnv.step requires actions of shape ({self.num_envs}, 3) ordered (x, y, scale), "
                f"got shape {array.shape}"
            )
        if not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array))[0]
            raise ValueError(
                f"GlimpseVectorEnv.step requires finite actions in [-1, 1], got {array[bad[0], bad[1]]} "
                f"for env {bad[0]}, component {('x', 'y', 'scale')[bad[1]]}; check the policy for NaN/inf outputs"
            )
        outside = (np.abs(array) > 1.0).any(axis=1)
        self._clipped += outside
        return np.clip(array, -1.0, 1.0).astype(np.float32)

    def _load_images(self, rows: np.ndarray) -> None:
        """New images for ``rows``, and a clean slate (no tokens, nothing seen)."""
        if rows.size == 0:
            return
        samples = self.stream.next_samples(int(rows.size))
        index = torch.as_tensor(rows, device=self.device)
        self._images[index] = torch.stack([s["image"] for s in samples]).to(self.device, non_blocking=True)
        self._labels[index] = torch.stack([s["label"] for s in samples]).to(self.device)
        if self._masks is not None:
            self._masks[index] = torch.stack([s["mask"] for s in samples]).to(self.device)
        self._patches[index] = 0.0
        self._boxes[index] = 0
        self._coverage[index] = False
        self._glimpses[rows] = 0
        self._crops[rows] = -1
        self._clipped[rows] = 0

    def _add_glimpses(self, actions: np.ndarray, stepping: np.ndarray) -> None:
        """Append one glimpse to every env in ``stepping`` (all extracted in one vectorised call)."""
        rows = np.flatnonzero(stepping)
        if rows.size == 0:
            return
        cfg = self.episode
        grid = cfg.grid_size or 2
        per_glimpse = cfg.tokens_per_glimpse
        index = torch.as_tensor(rows, device=self.device)
        unit = action_to_unit(torch.as_tensor(actions[rows], device=self.device))
        geometry = compute_glimpse_boxes(unit, self.image_size, grid, cfg.max_glimpse_ratio)
        patches = extract_patches(self._images[index], geometry.cells)  # (R, g*g, 3, 16, 16)
        first_slot = torch.as_tensor(self._glimpses[rows] * per_glimpse, device=self.device)
        slots = first_slot[:, None] + torch.arange(per_glimpse, device=self.device)[None]
        self._patches[index[:, None], slots] = patches
        self._boxes[index[:, None], slots] = geometry.cells

        y, x, side = geometry.crop.unbind(dim=1)
        ys = torch.arange(self.image_size[0], device=self.device)
        xs = torch.arange(self.image_size[1], device=self.device)
        inside_rows = (ys[None] >= y[:, None]) & (ys[None] < (y + side)[:, None])
        inside_cols = (xs[None] >= x[:, None]) & (xs[None] < (x + side)[:, None])
        self._coverage[index] |= inside_rows[:, :, None] & inside_cols[:, None, :]

        crop = torch.stack((y, x, y + side, x + side), dim=1).cpu().numpy()
        self._crops[rows, self._glimpses[rows]] = crop
        self._glimpses[rows] += 1

    def _target(self) -> torch.Tensor | None:
        if self.episode.task == "classification":
            return self._labels
        return self._masks

    def _empty_state_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent and prediction with no glimpse: the same for every image, so computed once (spec §8.9)."""
        if self._empty_state is None:
            encoded = self.model.forward_encoder(
                self._patches.new_zeros(1, 0, 3, 16, 16),
                self._boxes.new_zeros(1, 0, 4),
                aux_latent_layer=self.episode.extract_latent_layer,
            )
            latent = encoded.aux_latent if encoded.aux_latent is not None else encoded.latent
            self._empty_state = (latent, self.head.predict(self.model, encoded.latent))
        return self._empty_state

    @torch.inference_mode()
    def _evaluate(self) -> dict[str, Any]:
        """One batched forward of the model over every env's tokens so far."""
        num_tokens_host = self._glimpses * self.episode.tokens_per_glimpse
        longest = int(num_tokens_host.max())
        batch = self.num_envs
        if longest == 0:
            latent0, prediction0 = self._empty_state_output()
            latent = latent0.expand(batch, -1, -1)
            prediction = prediction0.expand(batch, *prediction0.shape[1:])
            importance = self._patches.new_zeros(batch, 0, 1)
        else:
            num_tokens = torch.as_tensor(num_tokens_host, device=self.device)
            pad_mask = None
            if int(num_tokens_host.min()) < longest:
                pad_mask = (torch.arange(longest, device=self.device)[None] >= num_tokens[:, None]).float()[..., None]
            need_importance = self.episode.observation == "full"
            encoded = self.model.forward_encoder(
                self._patches[:, :longest],
                self._boxes[:, :longest],
                pad_mask,
                aux_latent_layer=self.episode.extract_latent_layer,
                return_attention=need_importance,
            )
            latent = encoded.aux_latent if encoded.aux_latent is not None else encoded.latent
            if pad_mask is not None:  # zero what padded slots computed as queries: they are not tokens
                latent = latent * torch.cat((latent.new_ones(batch, 1, 1), 1.0 - pad_mask), dim=1)
            prediction = self.head.predict(self.model, encoded.latent, pad_mask)
            importance = (
                attention_rollout(encoded.attentions, num_valid=num_tokens if pad_mask is not None else None)
                if need_importance
                else self._patches.new_zeros(batch, longest, 1)
            )
        self._prediction = prediction
        score = self.head.score(self.model, prediction, self._images, self._target())
        return {
            "latent": latent,
            "importance": importance,
            "score": score.double().cpu().numpy(),
            "metric": self._metric(prediction, score),
        }

    def _metric(self, prediction: torch.Tensor, score: torch.Tensor) -> dict[str, np.ndarray]:
        task = self.episode.task
        if task == "reconstruction":
            return {"rmse": (-score).double().cpu().numpy()}
        if task == "classification":
            correct = (prediction.argmax(dim=-1) == self._labels).double()
            correct = torch.where(self._labels >= 0, correct, torch.nan)
            return {"correct": correct.cpu().numpy()}
        assert self._masks is not None
        confusion = confusion_matrix(prediction.argmax(dim=1), self._masks, prediction.shape[1])
        scores = segmentation_scores(confusion)
        return {"miou": scores["miou"].cpu().numpy(), "pixel_accuracy": scores["pixel_accuracy"].cpu().numpy()}

    def _reward(self, score: np.ndarray, terminated: np.ndarray) -> np.ndarray:
        kind = self.episode.reward
        if kind == "diff":
            return score - self._score
        if kind == "raw":
            return score.copy()
        return np.where(terminated, score - self._initial_score, 0.0)

    def _observation(self, evaluation: dict[str, Any]) -> Any:
        batch, budget = self.num_envs, self.max_tokens
        latent = evaluation["latent"]
        tokens = latent.shape[1] - 1
        empty = (
            torch.arange(budget, device=self.device)[None]
            >= torch.as_tensor(self._glimpses * self.episode.tokens_per_glimpse, device=self.device)[:, None]
        ).float()[..., None]  # (B, P, 1)
        coords = self._boxes.float()
        preset = self.episode.observation
        if preset == "flat":
            flat = torch.cat((latent[:, 0], (coords / max(self.image_size)).flatten(1), empty.flatten(1)), dim=1)
            return _to_numpy(flat)
        latent_obs = latent.new_zeros(batch, budget + 1, latent.shape[-1])
        latent_obs[:, : tokens + 1] = latent
        observation = {"latent": latent_obs, "coords": coords, "mask": empty}
        if preset == "full":
            importance = latent.new_zeros(batch, budget, 1)
            importance[:, : evaluation["importance"].shape[1]] = evaluation["importance"]
            observation["importance"] = importance
            observation["patches"] = self._patches
        return {key: _to_numpy(value) for key, value in observation.items()}

    def _info(self, evaluation: dict[str, Any], early_stopped: np.ndarray) -> dict[str, Any]:
        pixels = float(self.image_size[0] * self.image_size[1])
        info: dict[str, Any] = {
            "score": evaluation["score"].copy(),
            "initial_score": self._initial_score.copy(),
            "label": self._labels.cpu().numpy(),
            "num_glimpses": self._glimpses.copy(),
            "glimpse_boxes": self._crops.copy(),
            "pixel_fraction": (self._coverage.flatten(1).sum(dim=1).double() / pixels).cpu().numpy(),
            "num_clipped_actions": self._clipped.copy(),
            "early_stopped": early_stopped.copy(),
            "num_skipped_images": np.full(self.num_envs, self.stream.num_skipped, dtype=np.int64),
            **evaluation["metric"],
        }
        everyone = np.ones(self.num_envs, dtype=bool)
        info.update({f"_{key}": everyone for key in list(info)})
        return info


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    # Always a fresh array: on the CPU .numpy() would alias the env's own state, which the caller may keep.
    return tensor.detach().to("cpu", torch.float32, copy=True).numpy()


def _check_model(model: ElasticMAE, head: TaskHead, episode: EpisodeConfig) -> None:
    if not isinstance(model, ElasticMAE):
        raise TypeError(f"GlimpseVectorEnv requires an ElasticMAE model, got {type(model).__name__}")
    if head.decoder_type in ("standard", "segment") and model.config.decoder_type != head.decoder_type:
        raise ValueError(
            f"task={episode.task!r} requires a model with decoder_type={head.decoder_type!r}, got "
            f"decoder_type={model.config.decoder_type!r}"
        )
    layer = episode.extract_latent_layer
    if layer is not None and not 0 <= layer < model.config.depth:
        raise ValueError(f"extract_latent_layer must be in [0, {model.config.depth}), got {layer}")
