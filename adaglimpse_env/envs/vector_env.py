"""The real implementation: ``num_envs`` images, one batched frozen-model forward per vector step.

Data flows one way: image stream -> glimpse extraction -> frozen model -> score -> reward -> observation.
All per-env state (images, patches, token embeddings, boxes, coverage, scores, glimpse boxes) stays on ``device``
between steps. With ``output="numpy"`` the only device-to-host copies are the arrays Gymnasium's numpy API
returns; with ``output="torch"`` nothing is copied back (see :class:`GlimpseVectorEnv` for the two waits that
remain: NaN checks of tensor actions and early stopping).

Envs may be at different glimpse counts (early stopping, partial resets): the batch is padded to the largest
token count and empty slots are masked as attention keys in the encoder and decoder and skipped by the rollout,
so every env gets exactly what it would get alone (see :func:`~adaglimpse_env.models.mae.attention_rollout`).

Each step re-encodes every token gathered so far (spec §2.5): the transformer has no causal structure to cache.
What never changes within an episode is reused (``incremental=True``, the default): each glimpse's token
embeddings (patch embedding + box embedding) are computed once, the image's 0-255 pixels the reconstruction
score compares with once per image, the decoder's constant grid queries and their first-block projection once per
env, the no-glimpse output once per env, and envs with no glimpse yet (or just restarted) take that cached output
instead of a row in the forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from adaglimpse_env.config import EpisodeConfig
from adaglimpse_env.datasets.base import ImageSource
from adaglimpse_env.datasets.stream import ImageStream
from adaglimpse_env.envs.lookahead import score_candidate_glimpses
from adaglimpse_env.envs.spaces import action_space, observation_space
from adaglimpse_env.glimpse import action_to_unit, compute_glimpse_boxes, extract_patches
from adaglimpse_env.metrics import confusion_matrix, segmentation_scores
from adaglimpse_env.models.heads import TaskHead, create_task_head
from adaglimpse_env.models.mae import ConstantTokens, ElasticMAE, attention_rollout
from adaglimpse_env.normalization import to_pixels

_AUTORESET_MODES = {mode.value: mode for mode in AutoresetMode} | {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
}
OUTPUTS = ("numpy", "torch")
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}

# Rows index either every env (a plain slice: views, no index tensor) or some of them (an index tensor).
Rows = slice | torch.Tensor
ModelOutputs = tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor], torch.Tensor]


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
        output: ``"numpy"`` (Gymnasium's API, what wrappers and SB3 expect) or ``"torch"``, for agents that live
            on the device: observations, rewards (float32), terminations, truncations and the info entries the
            model computes (``score``, ``initial_score``, ``label``, ``target_box``, ``glimpse_boxes``,
            ``pixel_fraction``, ``num_clipped_actions`` and the task metric) are then fresh torch tensors on
            ``device``; the host bookkeeping (``num_glimpses``, ``early_stopped``, ``num_skipped_images``) and the
            ``_key`` masks stay numpy. Actions may be numpy arrays or tensors on any device, in either mode. The
            env's own code in a torch step never waits for the device, except to check tensor actions for NaN/inf
            (one bool) and, with ``early_stop_threshold``, to read which envs stopped (episode lengths set the
            next step's shapes). The helpers it calls do not wait either: the ImageNet statistics of
            :func:`~adaglimpse_env.normalization.to_pixels` are cached per device and dtype, and the segmentation
            confusion matrix is a fixed-size ``scatter_add_``.
        autocast_dtype: ``None`` (float32) or ``"bfloat16"`` / ``"float16"``: run the frozen model's encoder and
            decoder under :func:`torch.autocast`. The rollout, scores, rewards and observations stay float32 /
            float64. It moves the numbers. Tolerance, bfloat16 against float32 eager on the shipped model (CPU,
            12 glimpses, 8 images): latents (up to 7.2 in size) moved by at most 0.031, the score (-RMSE on the
            0-255 scale) by 0.11, rewards by 0.08, importance by 0.0018; the test holds them to 0.05, 0.2, 0.2
            and 0.01 (``tests/envs/test_performance_paths.py``). float16 moved latents about 9x and scores about
            6x less (0.0034, 0.019). Larger models drift more: compare before training on it.
        compile_model: :func:`torch.compile` the encoder + task head forward. The first steps compile (seconds to
            minutes; each new token count may recompile until the shapes go dynamic); needs a C++ compiler on
            the CPU, Triton on CUDA. Tolerance: within 1e-4 of eager (measured 1.5e-6 on the latents of the
            tiny test model on the CPU; fused kernels round differently).
        incremental: reuse what does not change within an episode (see the module docstring). ``False`` runs
            the reference path that recomputes everything each step; both agree within float rounding (about
            1e-6 relative, tested).
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
        output: str = "numpy",
        autocast_dtype: str | torch.dtype | None = None,
        compile_model: bool = False,
        incremental: bool = True,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"GlimpseVectorEnv requires num_envs >= 1, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        mode = _AUTORESET_MODES.get(autoreset_mode) if isinstance(autoreset_mode, str) else autoreset_mode
        if mode is None:
            raise ValueError(f"autoreset_mode must be 'next_step', 'same_step' or 'disabled', got {autoreset_mode!r}")
        if output not in OUTPUTS:
            raise ValueError(f"GlimpseVectorEnv requires output='numpy' or output='torch', got {output!r}")
        for name, flag in (("compile_model", compile_model), ("incremental", incremental)):
            if not isinstance(flag, bool):
                raise TypeError(f"GlimpseVectorEnv requires {name} to be a bool, got {flag!r}")
        self.episode = episode or EpisodeConfig()
        self.head: TaskHead = create_task_head(self.episode.task)
        _check_model(model, self.head, self.episode)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.output = output
        self.autocast_dtype = _check_autocast_dtype(autocast_dtype, self.device)
        self.compile_model = compile_model
        self.incremental = incremental
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
        # Pixel box (y1, x1, y2, x2) of the object to find, for sources that place one (procedural scenes);
        # -1 where the source has none. Exported in info for evaluation and pictures, never observed.
        self._target_boxes = torch.full((b, 4), -1, dtype=torch.long, device=dev)
        self._masks = (
            torch.zeros(b, height, width, dtype=torch.long, device=dev) if cfg.task == "segmentation" else None
        )
        self._patches = torch.zeros(b, p, 3, 16, 16, device=dev)
        self._boxes = torch.zeros(b, p, 4, dtype=torch.long, device=dev)
        self._coverage = torch.zeros(b, height, width, dtype=torch.bool, device=dev)
        self._token_count = torch.zeros(b, dtype=torch.long, device=dev)  # device copy of glimpses * g * g
        self._crops = torch.full((b, cfg.num_glimpses or 0, 4), -1, dtype=torch.long, device=dev)
        self._score = torch.zeros(b, dtype=torch.float64, device=dev)
        self._initial_score = torch.zeros(b, dtype=torch.float64, device=dev)
        self._clipped = torch.zeros(b, dtype=torch.long, device=dev)
        self._all_rows = torch.arange(b, device=dev)
        self._all_true = torch.ones(b, dtype=torch.bool, device=dev)
        self._all_false = torch.zeros(b, dtype=torch.bool, device=dev)
        self._glimpses = np.zeros(b, dtype=np.int64)  # host copy: it sets the batch shapes, so no device read
        self._needs_reset = np.zeros(b, dtype=bool)
        self._started = False
        self._empty_state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._prediction: torch.Tensor | None = None

        # Token embeddings of every glimpse so far, in the dtype the encoder sees them in (autocast's, if on).
        with torch.inference_mode(), self._autocast():
            probe = self.model.embed_tokens(self._patches[:1, :1], self._boxes[:1, :1])
        self._tokens = torch.zeros(b, p, self.embed_dim, dtype=probe.dtype, device=dev) if incremental else None
        # The images on the 0-255 scale the reconstruction score compares with, converted once per image.
        keep_pixels = incremental and cfg.task == "reconstruction"
        self._image_pixels = torch.zeros(b, 3, height, width, device=dev) if keep_pixels else None
        self._decoder_constants: ConstantTokens | None = None
        if incremental and self.head.decoder_type != "none":
            with torch.inference_mode(), self._autocast():
                self._decoder_constants = self.model.decoder_constants(probe.dtype)
        self._encode_and_predict: Callable[..., ModelOutputs] = _encode_and_predict
        self._reference_encode_and_predict: Callable[..., ModelOutputs] = _reference_encode_and_predict
        if compile_model:
            self._encode_and_predict = torch.compile(_encode_and_predict)
            self._reference_encode_and_predict = torch.compile(_reference_encode_and_predict)

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
            reset_mask = options["reset_mask"]
            if isinstance(reset_mask, torch.Tensor):
                reset_mask = reset_mask.cpu()
            mask = np.asarray(reset_mask, dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask requires shape ({self.num_envs},), got {mask.shape}")
        if not self._started and not mask.all():
            raise ValueError("The first reset must reset every env (reset_mask all True)")
        self._started = True
        self._load_images(np.flatnonzero(mask))
        evaluation = self._evaluate()
        restarted = self._device_mask(mask)
        self._score = torch.where(restarted, evaluation["score"], self._score)
        self._initial_score = torch.where(restarted, evaluation["score"], self._initial_score)
        self._needs_reset[mask] = False
        return self._observation(evaluation), self._info(evaluation, np.zeros(self.num_envs, dtype=bool))

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Take one glimpse in every env (envs that finished last step are reset instead, in next-step mode).

        Args:
            actions: ``(num_envs, 3)`` ``(x, y, scale)`` in ``[-1, 1]``, a numpy array (or anything numpy reads)
                or a torch tensor. Finite values outside the box are clipped and counted in
                ``info["num_clipped_actions"]``; NaN, inf or a wrong shape raise ``ValueError``.

        Returns:
            ``(observation, reward, terminated, truncated, info)``: numpy arrays, or device tensors with
            ``output="torch"``.
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
            # The one read of device results a step needs: which episodes end sets the next step's shapes.
            early = (score >= cfg.early_stop_threshold).cpu().numpy()
        terminated = stepping & ((self._glimpses >= (cfg.num_glimpses or 0)) | early)
        reward = self._reward(score, terminated)
        if resetting.any():
            restarted = self._device_mask(resetting)
            reward = reward.masked_fill(restarted, 0.0)
            self._initial_score = torch.where(restarted, score, self._initial_score)
        self._score = score

        observation = self._observation(evaluation)
        info = self._info(evaluation, terminated & early)
        if self.autoreset_mode == AutoresetMode.SAME_STEP and terminated.any():
            # Gymnasium's same-step autoreset: the finished envs start over now; what they ended with goes in
            # info["final_obs"] / info["final_info"]. Their new step-0 output is the cached empty state, and
            # the other envs' state did not change, so this costs no second forward.
            final_obs, final_info = observation, info
            self._load_images(np.flatnonzero(terminated))
            if self.incremental and not terminated.all():
                fresh = self._restart_rows(evaluation, terminated)
            else:
                fresh = self._evaluate()
            restarted = self._device_mask(terminated)
            self._score = torch.where(restarted, fresh["score"], self._score)
            self._initial_score = torch.where(restarted, fresh["score"], self._initial_score)
            observation = self._observation(fresh)
            info = self._info(fresh, np.zeros(self.num_envs, dtype=bool))
            info.update(final_obs=final_obs, _final_obs=terminated, final_info=final_info, _final_info=terminated)
        else:
            self._needs_reset = terminated
        truncated = np.zeros(self.num_envs, dtype=bool)
        reward_out = self._export(reward.float(), fresh=True)
        return observation, reward_out, self._flags(terminated), self._flags(truncated), info

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One ``rgb_array`` frame per env, ``(H, 3W, 3)``: the image with this episode's glimpse boxes (and the
        target's box in cyan, for sources that place one), what the agent has seen (its patches pasted at their
        boxes on grey), and the model's current prediction."""
        if self.render_mode is None:
            return None
        from adaglimpse_env.rendering import render_frames

        assert self._prediction is not None, "render() requires reset() to be called first"
        return render_frames(
            self.model,
            self.head,
            self._images,
            self._prediction,
            self._crops.cpu().numpy(),
            self._glimpses,
            self.image_source.classes,
            patches=self._patches,
            boxes=self._boxes,
            tokens_per_glimpse=self.episode.tokens_per_glimpse,
            target_boxes=self._target_boxes.cpu().numpy(),
        )

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the decoding workers."""
        self.stream.reseed(0)

    @property
    def num_skipped_images(self) -> int:
        """Unreadable files skipped so far (each also gave one warning)."""
        return self.stream.num_skipped

    # ------------------------------------------------------------------------------------------------ internals
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _upload(self, value: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Host data on the device; on CUDA through pinned memory, so the copy does not wait for the device."""
        tensor = torch.as_tensor(value)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _rows(self, rows: np.ndarray) -> Rows:
        return slice(None) if rows.size == self.num_envs else self._upload(rows)

    def _device_mask(self, mask: np.ndarray) -> torch.Tensor:
        """A host ``(B,)`` bool mask on the device (the all-True / all-False ones without a copy). Read-only."""
        if mask.all():
            return self._all_true
        if not mask.any():
            return self._all_false
        return self._upload(mask)

    def _export(self, tensor: torch.Tensor, fresh: bool = False) -> Any:
        """A tensor as the caller gets it: numpy, or a tensor on the device. Never a view of the env's state."""
        if self.output == "torch":
            return tensor if fresh else tensor.clone()
        return tensor.detach().to("cpu", copy=not fresh).numpy()

    def _flags(self, flags: np.ndarray) -> Any:
        if self.output == "torch":
            return self._upload(flags.copy())
        return flags.copy()

    def _validate_actions(self, actions: Any) -> torch.Tensor:
        """``(num_envs, 3)`` float32 actions on the device, clipped to ``[-1, 1]`` (clips are counted)."""
        if isinstance(actions, torch.Tensor):
            return self._validate_tensor_actions(actions.detach())
        try:
            raw = np.asarray(actions)
        except (TypeError, ValueError) as error:  # e.g. a ragged nested list
            raise ValueError(
                f"GlimpseVectorEnv.step requires numeric actions of shape ({self.num_envs}, 3), got {actions!r}"
            ) from error
        if raw.dtype.kind not in "biuf":  # strings, objects (None, 10**400, dicts), complex: never parse them
            raise ValueError(
                f"GlimpseVectorEnv.step requires real numeric actions (bool, int or float), got dtype {raw.dtype}: "
                f"{actions!r}"
            )
        array = self._check_action_shape(raw.astype(np.float64))
        if not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array))[0]
            raise _non_finite_action_error(array[bad[0], bad[1]], int(bad[0]), int(bad[1]))
        outside = (np.abs(array) > 1.0).any(axis=1)
        if outside.any():
            self._clipped += self._upload(outside)
        return self._upload(np.clip(array, -1.0, 1.0).astype(np.float32))

    def _validate_tensor_actions(self, actions: torch.Tensor) -> torch.Tensor:
        if actions.dtype == torch.bool or actions.is_complex():
            raise ValueError(
                f"GlimpseVectorEnv.step requires real numeric actions of shape ({self.num_envs}, 3), "
                f"got a {actions.dtype} tensor"
            )
        actions = self._check_action_shape(actions.to(self.device))
        if not actions.is_floating_point():
            actions = actions.double()
        finite = torch.isfinite(actions)
        if not bool(finite.all()):  # waits for the device: a bad action must raise here, in the caller's step
            bad = (~finite).nonzero()[0].tolist()
            raise _non_finite_action_error(actions[bad[0], bad[1]].item(), bad[0], bad[1])
        self._clipped += (actions.abs() > 1.0).any(dim=1)
        return actions.clamp(-1.0, 1.0).float()

    def _check_action_shape(self, actions: Any) -> Any:
        if tuple(actions.shape) == (3,) and self.num_envs == 1:
            actions = actions[None]
        if tuple(actions.shape) != (self.num_envs, 3):
            raise ValueError(
                f"GlimpseVectorEnv.step requires actions of shape ({self.num_envs}, 3) ordered (x, y, scale), "
                f"got shape {tuple(actions.shape)}"
            )
        return actions

    def score_candidates(self, actions: np.ndarray | torch.Tensor, max_batch: int = 512) -> np.ndarray:
        """Oracle look-ahead: the score every env would have after taking each candidate action next.

        It uses the true image and its label/mask/pixels, which an agent never sees: what the ``greedy`` baseline
        of ``agents/baselines.py`` builds its upper bound on. Nothing about the episodes changes.

        Args:
            actions: ``(num_envs, K, 3)`` candidate actions ``(x, y, scale)`` in ``[-1, 1]``.
            max_batch: most (env, candidate) sequences in one forward of the model.

        Returns:
            ``(num_envs, K)`` float32 scores.

        Raises:
            ValueError: wrong shape or non-finite actions, or called before the first reset.
        """
        if not self._started:
            raise ValueError("score_candidates requires reset() first")
        if isinstance(actions, np.ndarray):  # a broadcast view is read-only: copy it into one float32 block
            actions = np.ascontiguousarray(actions, dtype=np.float32)
        candidates = torch.as_tensor(actions, dtype=torch.float32).to(self.device)
        if candidates.ndim != 3 or candidates.shape[0] != self.num_envs or candidates.shape[2] != 3:
            raise ValueError(
                f"score_candidates requires actions of shape ({self.num_envs}, K, 3) ordered (x, y, scale), "
                f"got {tuple(candidates.shape)}"
            )
        if not bool(torch.isfinite(candidates).all()):
            raise ValueError("score_candidates requires finite actions, got NaN or inf")
        batch, count = candidates.shape[:2]
        unit = action_to_unit(candidates.clamp(-1.0, 1.0).reshape(-1, 3)).reshape(batch, count, 3)
        with self._autocast():
            scores = score_candidate_glimpses(
                self.model, self.head, self._images, self._patches, self._boxes, self._token_count,
                self._target(), unit, int(self.episode.grid_size or 2),
                self.episode.max_glimpse_ratio, max_batch,
            )  # fmt: skip
        return scores.float().cpu().numpy()

    def _load_images(self, rows: np.ndarray) -> None:
        """New images for ``rows``, and a clean slate (no tokens, nothing seen)."""
        if rows.size == 0:
            return
        samples = self.stream.next_samples(int(rows.size))
        index = self._rows(rows)
        images = self._upload(torch.stack([s["image"] for s in samples]))
        self._images[index] = images
        if self._image_pixels is not None:
            self._image_pixels[index] = to_pixels(images.float())
        self._labels[index] = self._upload(torch.stack([s["label"] for s in samples]))
        if "target_box" in samples[0]:
            self._target_boxes[index] = self._upload(torch.stack([s["target_box"] for s in samples]))
        if self._masks is not None:
            self._masks[index] = self._upload(torch.stack([s["mask"] for s in samples]))
        self._patches[index] = 0.0
        self._boxes[index] = 0
        if self._tokens is not None:
            self._tokens[index] = 0.0
        self._coverage[index] = False
        self._token_count[index] = 0
        self._crops[index] = -1
        self._clipped[index] = 0
        self._glimpses[rows] = 0

    def _add_glimpses(self, actions: torch.Tensor, stepping: np.ndarray) -> None:
        """Append one glimpse to every env in ``stepping`` (all extracted in one vectorised call)."""
        rows = np.flatnonzero(stepping)
        if rows.size == 0:
            return
        cfg = self.episode
        grid = cfg.grid_size or 2
        per_glimpse = cfg.tokens_per_glimpse
        index = self._rows(rows)
        unit = action_to_unit(actions[index])
        geometry = compute_glimpse_boxes(unit, self.image_size, grid, cfg.max_glimpse_ratio)
        patches = extract_patches(self._images[index], geometry.cells)  # (R, g*g, 3, 16, 16)
        counts = self._glimpses[rows]
        slots: tuple[Any, Any]
        crop_slots: tuple[Any, Any]
        if isinstance(index, slice) and (counts == counts[0]).all():
            # Every env at the same step (the usual case): plain slices, no index tensors.
            first = int(counts[0])
            slots = (index, slice(first * per_glimpse, (first + 1) * per_glimpse))
            crop_slots = (index, first)
        else:
            row_index = self._all_rows if isinstance(index, slice) else index
            first_slot = self._token_count[index]
            slots = (row_index[:, None], first_slot[:, None] + torch.arange(per_glimpse, device=self.device))
            crop_slots = (row_index, torch.div(first_slot, per_glimpse, rounding_mode="floor"))
        self._patches[slots] = patches
        self._boxes[slots] = geometry.cells
        if self._tokens is not None:
            with torch.inference_mode(), self._autocast():
                tokens = self.model.embed_tokens(patches, geometry.cells)
            self._tokens[slots] = tokens

        y, x, side = geometry.crop.unbind(dim=1)
        ys = torch.arange(self.image_size[0], device=self.device)
        xs = torch.arange(self.image_size[1], device=self.device)
        inside_rows = (ys[None] >= y[:, None]) & (ys[None] < (y + side)[:, None])
        inside_cols = (xs[None] >= x[:, None]) & (xs[None] < (x + side)[:, None])
        self._coverage[index] |= inside_rows[:, :, None] & inside_cols[:, None, :]
        self._crops[crop_slots] = torch.stack((y, x, y + side, x + side), dim=1)
        self._token_count[index] += per_glimpse
        self._glimpses[rows] += 1

    def _target(self) -> torch.Tensor | None:
        """What :meth:`TaskHead.score` compares with besides the images: labels, masks, or the images' pixels."""
        if self.episode.task == "classification":
            return self._labels
        if self.episode.task == "reconstruction":
            return self._image_pixels
        return self._masks

    def _empty_state_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent and prediction with no glimpse: the same for every image, so computed once (spec §8.9)."""
        if self._empty_state is None:
            with self._autocast():
                encoded = self.model.forward_encoder(
                    self._patches.new_zeros(1, 0, 3, 16, 16),
                    self._boxes.new_zeros(1, 0, 4),
                    aux_latent_layer=self.episode.extract_latent_layer,
                )
                latent = encoded.aux_latent if encoded.aux_latent is not None else encoded.latent
                self._empty_state = (latent.float(), self.head.predict(self.model, encoded.latent))
        return self._empty_state

    @torch.inference_mode()
    def _evaluate(self) -> dict[str, Any]:
        """One batched forward of the model over every env's tokens so far.

        Envs with no glimpse take the cached empty-state output; with ``incremental`` they are also left out of
        the forward when other envs have glimpses.
        """
        num_tokens = self._glimpses * self.episode.tokens_per_glimpse
        active = num_tokens > 0
        if not active.any():
            latent, prediction = self._empty_state_output()
            latent = latent.expand(self.num_envs, -1, -1)
            prediction = prediction.expand(self.num_envs, *prediction.shape[1:])
            importance = latent.new_zeros(self.num_envs, 0, 1)
        elif active.all() or not self.incremental:
            latent, importance, prediction = self._forward(slice(None), num_tokens)
        else:
            rows = np.flatnonzero(active)
            index = self._upload(rows)
            rows_latent, rows_importance, rows_prediction = self._forward(index, num_tokens[rows])
            latent, importance, prediction = self._empty_batch(rows_latent.shape[1] - 1)
            latent[index] = rows_latent
            importance[index] = rows_importance
            prediction[index] = rows_prediction.to(prediction.dtype)
        return self._scored(latent, importance, prediction)

    def _forward(self, index: Rows, num_tokens: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder, rollout and task head over ``index``'s rows, padded to their longest token count.

        Returns:
            ``(latent (R, 1 + n, D) float32, importance (R, n, 1) float32, prediction)``.
        """
        longest = int(num_tokens.max())
        pad_mask = valid = None
        if int(num_tokens.min()) < longest:
            valid = self._token_count[index]
            pad_mask = (torch.arange(longest, device=self.device)[None] >= valid[:, None]).float()[..., None]
        need_importance = self.episode.observation == "full"
        layer = self.episode.extract_latent_layer
        with self._autocast():
            if self._tokens is not None:
                tokens = self._tokens[index, :longest]
                outputs = self._run_model(
                    self._encode_and_predict,
                    (tokens, pad_mask, layer, need_importance, self._decoder_constants),
                )
            else:
                patches, boxes = self._patches[index, :longest], self._boxes[index, :longest]
                outputs = self._run_model(
                    self._reference_encode_and_predict, (patches, boxes, pad_mask, layer, need_importance)
                )
        latent, aux_latent, attentions, prediction = outputs
        observed = (aux_latent if aux_latent is not None else latent).float()
        if pad_mask is not None:  # zero what padded slots computed as queries: they are not tokens
            observed = observed * torch.cat((observed.new_ones(observed.shape[0], 1, 1), 1.0 - pad_mask), dim=1)
        if need_importance:
            importance = attention_rollout([a.float() for a in attentions], num_valid=valid)
        else:
            importance = observed.new_zeros(observed.shape[0], longest, 1)
        return observed, importance, prediction

    def _run_model(self, function: Callable[..., ModelOutputs], arguments: tuple[Any, ...]) -> ModelOutputs:
        try:
            return function(self.model, self.head, *arguments)
        except Exception as error:
            if self.compile_model and _is_compile_error(error):
                raise RuntimeError(
                    "compile_model=True requires a working torch.compile toolchain (a C++ compiler on the CPU, "
                    f"Triton on CUDA); compiling failed with {type(error).__name__}. Pass compile_model=False."
                ) from error
            raise

    def _empty_batch(self, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every env in the empty state, with room for ``num_tokens`` tokens: ``(latent, importance, prediction)``."""
        latent0, prediction0 = self._empty_state_output()
        latent = latent0.new_zeros(self.num_envs, 1 + num_tokens, latent0.shape[-1])
        latent[:, :1] = latent0
        importance = latent0.new_zeros(self.num_envs, num_tokens, 1)
        prediction = prediction0.expand(self.num_envs, *prediction0.shape[1:]).clone()
        return latent, importance, prediction

    @torch.inference_mode()
    def _restart_rows(self, evaluation: dict[str, Any], restarted: np.ndarray) -> dict[str, Any]:
        """``evaluation`` with the ``restarted`` envs (just given new images) in the empty state, no forward."""
        index = self._upload(np.flatnonzero(restarted))
        latent0, prediction0 = self._empty_state_output()
        latent = evaluation["latent"].clone()
        latent[index] = 0.0
        latent[index, :1] = latent0
        importance = evaluation["importance"].clone()
        importance[index] = 0.0
        prediction = evaluation["prediction"].clone()
        prediction[index] = prediction0.to(prediction.dtype)
        return self._scored(latent, importance, prediction)

    def _scored(self, latent: torch.Tensor, importance: torch.Tensor, prediction: torch.Tensor) -> dict[str, Any]:
        self._prediction = prediction
        score = self.head.score(self.model, prediction, self._images, self._target())
        return {
            "latent": latent,
            "importance": importance,
            "prediction": prediction,
            "score": score.double(),
            "metric": self._metric(prediction, score),
        }

    def _metric(self, prediction: torch.Tensor, score: torch.Tensor) -> dict[str, torch.Tensor]:
        task = self.episode.task
        if task == "reconstruction":
            return {"rmse": (-score).double()}
        if task == "classification":
            correct = (prediction.argmax(dim=-1) == self._labels).double()
            return {"correct": torch.where(self._labels >= 0, correct, torch.nan)}
        assert self._masks is not None
        confusion = confusion_matrix(prediction.argmax(dim=1), self._masks, prediction.shape[1])
        scores = segmentation_scores(confusion)
        return {"miou": scores["miou"].double(), "pixel_accuracy": scores["pixel_accuracy"].double()}

    def _reward(self, score: torch.Tensor, terminated: np.ndarray) -> torch.Tensor:
        """``(B,)`` float64 on the device."""
        kind = self.episode.reward
        if kind == "diff":
            return score - self._score
        if kind == "raw":
            return score.clone()
        return torch.where(self._device_mask(terminated), score - self._initial_score, 0.0)

    def _observation(self, evaluation: dict[str, Any]) -> Any:
        batch, budget = self.num_envs, self.max_tokens
        latent = evaluation["latent"]
        tokens = latent.shape[1] - 1
        empty = (torch.arange(budget, device=self.device)[None] >= self._token_count[:, None]).float()[..., None]
        coords = self._boxes.float()  # (B, P, 4), a fresh tensor
        preset = self.episode.observation
        if preset == "flat":
            flat = torch.cat((latent[:, 0], (coords / max(self.image_size)).flatten(1), empty.flatten(1)), dim=1)
            return self._export(flat, fresh=True)
        latent_obs = latent.new_zeros(batch, budget + 1, latent.shape[-1])
        latent_obs[:, : tokens + 1] = latent
        observation = {"latent": latent_obs, "coords": coords, "mask": empty}
        if preset == "full":
            importance = latent.new_zeros(batch, budget, 1)
            importance[:, : evaluation["importance"].shape[1]] = evaluation["importance"]
            observation["importance"] = importance
            observation["patches"] = self._patches.clone()
        return {key: self._export(value, fresh=True) for key, value in observation.items()}

    def _info(self, evaluation: dict[str, Any], early_stopped: np.ndarray) -> dict[str, Any]:
        pixels = float(self.image_size[0] * self.image_size[1])
        computed = {
            "score": evaluation["score"],
            "initial_score": self._initial_score,
            "label": self._labels,
            "target_box": self._target_boxes,
            "glimpse_boxes": self._crops,
            "pixel_fraction": self._coverage.flatten(1).sum(dim=1).double() / pixels,
            "num_clipped_actions": self._clipped,
            **evaluation["metric"],
        }
        info: dict[str, Any] = {key: self._export(value) for key, value in computed.items()}
        info.update(
            num_glimpses=self._glimpses.copy(),
            early_stopped=early_stopped.copy(),
            num_skipped_images=np.full(self.num_envs, self.stream.num_skipped, dtype=np.int64),
        )
        everyone = np.ones(self.num_envs, dtype=bool)
        info.update({f"_{key}": everyone for key in list(info)})
        return info


def _encode_and_predict(
    model: ElasticMAE,
    head: TaskHead,
    tokens: torch.Tensor,
    pad_mask: torch.Tensor | None,
    aux_latent_layer: int | None,
    return_attention: bool,
    decoder_constants: ConstantTokens | None,
) -> ModelOutputs:
    """Encoder over embedded tokens, then the task head: what ``compile_model`` compiles."""
    encoded = model.encode_tokens(tokens, pad_mask, aux_latent_layer, return_attention)
    prediction = head.predict(model, encoded.latent, pad_mask, decoder_constants=decoder_constants)
    return encoded.latent, encoded.aux_latent, encoded.attentions, prediction


def _reference_encode_and_predict(
    model: ElasticMAE,
    head: TaskHead,
    patches: torch.Tensor,
    boxes: torch.Tensor,
    pad_mask: torch.Tensor | None,
    aux_latent_layer: int | None,
    return_attention: bool,
) -> ModelOutputs:
    """The same from patches and boxes, recomputing everything (``incremental=False``)."""
    encoded = model.forward_encoder(patches, boxes, pad_mask, aux_latent_layer, return_attention)
    prediction = head.predict(model, encoded.latent, pad_mask)
    return encoded.latent, encoded.aux_latent, encoded.attentions, prediction


def _non_finite_action_error(value: float, env: int, component: int) -> ValueError:
    return ValueError(
        f"GlimpseVectorEnv.step requires finite actions in [-1, 1], got {value} for env {env}, component "
        f"{('x', 'y', 'scale')[component]}; check the policy for NaN/inf outputs"
    )


def _is_compile_error(error: Exception) -> bool:
    """Whether ``error`` came from torch.compile's machinery (dynamo / inductor) rather than the model."""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))


def _check_autocast_dtype(value: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    if value is None:
        return None
    dtype = AUTOCAST_DTYPES.get(value) if isinstance(value, str) else value
    if dtype not in AUTOCAST_DTYPES.values():
        raise ValueError(f"autocast_dtype requires None, 'bfloat16' or 'float16', got {value!r}")
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"autocast_dtype requires a device type with torch.autocast support, got device {device}")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"autocast_dtype='bfloat16' requires a GPU with bfloat16 support, got {torch.cuda.get_device_name(device)}"
        )
    return dtype


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
