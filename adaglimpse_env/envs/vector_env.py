"""The real implementation: ``num_envs`` images, one batched frozen-model forward per vector step.

Data flows one way: image stream -> glimpse extraction -> frozen model -> score -> reward -> observation.
:class:`GlimpseVectorEnv` keeps the Gymnasium API, the reward and the observation / info export; the per-env
episode state lives in :class:`~adaglimpse_env.envs.episode_buffers.EpisodeBuffers` and the model's forward
(autocast, compile, incremental caches, padding) in :class:`~adaglimpse_env.envs.model_runner.FrozenModelRunner`.
All per-env state stays on ``device`` between steps. With ``output="numpy"`` the only device-to-host copies are the
arrays Gymnasium's numpy API returns; with ``output="torch"`` nothing is copied back (see :class:`GlimpseVectorEnv`
for the two waits that remain: NaN checks of tensor actions and early stopping).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from adaglimpse_env.config import EpisodeConfig, ResolvedEpisodeConfig
from adaglimpse_env.datasets.base import ImageSource
from adaglimpse_env.datasets.stream import ImageStream
from adaglimpse_env.envs.actions import validate_actions
from adaglimpse_env.envs.episode_buffers import EpisodeBuffers, upload
from adaglimpse_env.envs.lookahead import candidate_unit_actions, score_candidate_glimpses
from adaglimpse_env.envs.model_runner import FrozenModelRunner, ModelEvaluation
from adaglimpse_env.envs.observations import agent_observation, info_tensors
from adaglimpse_env.envs.spaces import action_space, observation_space
from adaglimpse_env.glimpse import action_to_unit, compute_glimpse_boxes, extract_patches, glimpse_size_range
from adaglimpse_env.models.heads import TaskHead
from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.tasks import Task, get_task

_AUTORESET_MODES = {mode.value: mode for mode in AutoresetMode} | {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
}
OUTPUTS = ("numpy", "torch")


class GlimpseVectorEnv(VectorEnv):
    """Active visual exploration on a batch of images (original `shared_memory.py`; original `rl_glimpse.py`).

    Each sub-env's episode is one image: ``reset`` evaluates the model with no glimpse (step 0), each ``step``
    adds one glimpse of ``g * g`` patch tokens, and the episode terminates after ``num_glimpses`` glimpses or
    when the score reaches ``early_stop_threshold``.

    Args:
        num_envs: images held at once.
        model: the frozen :class:`ElasticMAE` (moved to ``device``, put in eval mode, gradients off).
        image_source: where images come from.
        episode: task, glimpse budget, reward and observation preset (default: ``EpisodeConfig()``); resolved
            once here, kept as ``self.episode`` (:class:`ResolvedEpisodeConfig`).
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
            ``device``; the host bookkeeping (``num_glimpses``, ``early_stopped``, ``num_skipped_images``) and
            the ``_key`` masks stay numpy. Actions may be numpy arrays or tensors on any device, in either mode.
            The env's own code in a torch step never waits for the device, except to check tensor actions for NaN/inf
            (one bool), to check that every score is finite (one bool) and, with ``early_stop_threshold``, to read which
            envs stopped (episode lengths set the next step's shapes). The helpers it calls do not wait either: the
            ImageNet statistics of
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
        episode: EpisodeConfig | ResolvedEpisodeConfig | None = None,
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
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
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
        self.episode: ResolvedEpisodeConfig = (episode or EpisodeConfig()).resolve()
        self.task: Task = get_task(self.episode.task)
        self.head: TaskHead = self.task.head
        _check_model(model, self.head, self.episode)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.output = output
        self.compile_model = compile_model
        self.incremental = incremental
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode

        height, width = model.config.img_size
        if height != width:
            raise ValueError(f"GlimpseVectorEnv requires a square model input, got img_size={model.config.img_size}")
        # The smallest glimpse (16 * grid_size px) must fit in the image: fail here, not at the first step.
        glimpse_size_range((height, width), self.episode.grid_size, self.episode.max_glimpse_ratio)
        if image_source.transform.size != height:
            raise ValueError(
                f"The image source produces {image_source.transform.size} px images but the model expects {height} px; "
                f"build the source with TransformConfig(size={height})"
            )
        if self.task.needs_masks and not image_source.has_masks:
            raise ValueError(f"task={self.task.name!r} requires an image source with masks, got one without")
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.runner = FrozenModelRunner(
            self.model, self.task, self.episode, self.device, autocast_dtype, compile_model, incremental
        )
        self.autocast_dtype = self.runner.autocast_dtype
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
            cfg.observation, self.max_tokens, self.embed_dim, self.image_size, cfg.map_size
        )
        self.observation_space = batch_space(self.single_observation_space, num_envs)

        # Only the reconstruction score reads the images' 0-255 pixels; the incremental path converts them once.
        self.buffers = EpisodeBuffers(
            num_envs,
            cfg,
            self.task,
            self.image_size,
            self.device,
            token_dtype=self.runner.token_dtype if incremental else None,
            token_dim=self.embed_dim,
            keep_image_pixels=incremental and self.task.reads_image_pixels,
        )
        self._score = torch.zeros(num_envs, dtype=torch.float64, device=self.device)
        self._initial_score = torch.zeros(num_envs, dtype=torch.float64, device=self.device)
        self._all_true = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        self._all_false = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._started = False
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
        self._score = torch.where(restarted, evaluation.score, self._score)
        self._initial_score = torch.where(restarted, evaluation.score, self._initial_score)
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
        actions, clipped = validate_actions(actions, self.num_envs, self.device)
        if clipped is not None:
            self.buffers.clipped += clipped
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
        score = evaluation.score

        cfg = self.episode
        early = np.zeros(self.num_envs, dtype=bool)
        if cfg.early_stop_threshold is not None:
            # The one read of device results a step needs: which episodes end sets the next step's shapes.
            early = (score >= cfg.early_stop_threshold).cpu().numpy()
        terminated = stepping & ((self.buffers.glimpses >= self.num_glimpses) | early)
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
                fresh = self.runner.restart_rows(self.buffers, evaluation, terminated)
                self._prediction = fresh.prediction
            else:
                fresh = self._evaluate()
            restarted = self._device_mask(terminated)
            self._score = torch.where(restarted, fresh.score, self._score)
            self._initial_score = torch.where(restarted, fresh.score, self._initial_score)
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
        buffers = self.buffers
        return render_frames(
            self.model,
            self.task,
            buffers.images,
            self._prediction,
            buffers.crops.cpu().numpy(),
            buffers.glimpses,
            self.image_source.classes,
            patches=buffers.patches,
            boxes=buffers.boxes,
            tokens_per_glimpse=self.episode.tokens_per_glimpse,
            target_boxes=buffers.target_boxes.cpu().numpy(),
        )

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the decoding workers."""
        self.stream.close()

    def __getstate__(self) -> dict[str, Any]:
        # An env holds a frozen model on a device, decoding workers and a live image stream: none survives a
        # pickle round trip, and half-restored envs would fail far from here.
        raise TypeError(
            "GlimpseVectorEnv cannot be pickled (it holds a frozen model, decoding workers and an image stream); "
            "build a new one in the other process with gym.make_vec(id, num_envs=..., **kwargs)"
        )

    @property
    def num_glimpses(self) -> int:
        """Glimpses per episode (the episode's budget)."""
        return self.episode.num_glimpses

    @property
    def grid_size(self) -> int:
        """Grid cells per glimpse side ``g``."""
        return self.episode.grid_size

    @property
    def prediction(self) -> torch.Tensor:
        """The task head's output for the current glimpses, on the env's device (what ``render()`` draws): for
        reconstruction ``(B, G, p*p*3)`` normalised-pixel patches, ``task.prediction_images(model, prediction)``
        the images. The env's own tensor (after a reset, an expanded view of one cached output): clone it before
        changing it in place; the next step replaces it."""
        if self._prediction is None:
            raise RuntimeError("GlimpseVectorEnv.prediction requires reset() to be called first")
        return self._prediction

    @property
    def num_skipped_images(self) -> int:
        """Unreadable files skipped so far (each also gave one warning)."""
        return self.stream.num_skipped

    # ------------------------------------------------------------------------------------------------ internals
    def _device_mask(self, mask: np.ndarray) -> torch.Tensor:
        """A host ``(B,)`` bool mask on the device (the all-True / all-False ones without a copy). Read-only."""
        if mask.all():
            return self._all_true
        if not mask.any():
            return self._all_false
        return upload(mask, self.device)

    def _export(self, tensor: torch.Tensor, fresh: bool = False) -> Any:
        """A tensor as the caller gets it: numpy, or a tensor on the device. Never a view of the env's state."""
        if self.output == "torch":
            return tensor if fresh else tensor.clone()
        return tensor.detach().to("cpu", copy=not fresh).numpy()

    def _flags(self, flags: np.ndarray) -> Any:
        if self.output == "torch":
            return upload(flags.copy(), self.device)
        return flags.copy()

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
        unit = candidate_unit_actions(actions, self.num_envs, self.device)
        buffers = self.buffers
        with self.runner.autocast():
            scores = score_candidate_glimpses(
                self.model, self.task, buffers.images, buffers.patches, buffers.boxes, buffers.token_count,
                buffers.targets(), buffers.image_pixels, unit, self.grid_size, self.episode.max_glimpse_ratio,
                max_batch,
            )  # fmt: skip
        return scores.float().cpu().numpy()

    def _load_images(self, rows: np.ndarray) -> None:
        """New images for ``rows``, and a clean slate (no tokens, nothing seen)."""
        if rows.size:
            self.buffers.load(rows, self.stream.next_samples(int(rows.size)))

    def _add_glimpses(self, actions: torch.Tensor, stepping: np.ndarray) -> None:
        """Append one glimpse to every env in ``stepping`` (all extracted in one vectorised call)."""
        rows = np.flatnonzero(stepping)
        if rows.size == 0:
            return
        index = self.buffers.rows(rows)
        unit = action_to_unit(actions[index])
        geometry = compute_glimpse_boxes(unit, self.image_size, self.grid_size, self.episode.max_glimpse_ratio)
        patches = extract_patches(self.buffers.images[index], geometry.cells)  # (R, g*g, 3, 16, 16)
        tokens = self.runner.embed_tokens(patches, geometry.cells) if self.buffers.tokens is not None else None
        self.buffers.add_glimpse(rows, index, patches, geometry, tokens)

    def _evaluate(self) -> ModelEvaluation:
        evaluation = self.runner.evaluate(self.buffers)
        self._prediction = evaluation.prediction  # what render() draws
        # One bool read per step: a model whose weights are finite but overflow (e.g. LayerScale 3e38) gives
        # inf/NaN scores, which would otherwise become NaN rewards with no error.
        finite = torch.isfinite(evaluation.score)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0, 0])
            sample = int(self.buffers.sample_index[row])
            files = getattr(self.image_source, "files", [])
            image = (
                f"'{files[sample]}'"
                if 0 <= sample < len(files)
                else f"sample {sample} of {self.image_source.description}"
            )
            raise FloatingPointError(
                f"The frozen model gave a non-finite score ({float(evaluation.score[row])}) for image {image} in env "
                f"{row} after {int(self.buffers.glimpses[row])} glimpses: its weights are finite but overflow. "
                "Check the checkpoint (e.g. LayerScale or norm weights far beyond 1e4) or load another one"
            )
        return evaluation

    def _reward(self, score: torch.Tensor, terminated: np.ndarray) -> torch.Tensor:
        """``(B,)`` float64 on the device."""
        kind = self.episode.reward
        if kind == "diff":
            return score - self._score
        if kind == "raw":
            return score.clone()
        return torch.where(self._device_mask(terminated), score - self._initial_score, 0.0)

    def _observation(self, evaluation: ModelEvaluation) -> Any:
        observation = agent_observation(
            self.episode.observation, evaluation, self.buffers, self.max_tokens, self.image_size
        )
        if isinstance(observation, dict):
            return {key: self._export(value, fresh=True) for key, value in observation.items()}
        return self._export(observation, fresh=True)

    def _info(self, evaluation: ModelEvaluation, early_stopped: np.ndarray) -> dict[str, Any]:
        buffers = self.buffers
        computed = info_tensors(evaluation, buffers, self._initial_score)
        info: dict[str, Any] = {key: self._export(value) for key, value in computed.items()}
        info.update(
            num_glimpses=buffers.glimpses.copy(),
            early_stopped=early_stopped.copy(),
            num_skipped_images=np.full(self.num_envs, self.stream.num_skipped, dtype=np.int64),
        )
        everyone = np.ones(self.num_envs, dtype=bool)
        info.update({f"_{key}": everyone for key in list(info)})
        return info


def _check_model(model: ElasticMAE, head: TaskHead, episode: ResolvedEpisodeConfig) -> None:
    if not isinstance(model, ElasticMAE):
        raise TypeError(f"GlimpseVectorEnv requires an ElasticMAE model, got {type(model).__name__}")
    if head.needs_decoder and model.config.decoder_type != head.decoder_type:
        raise ValueError(
            f"task={episode.task!r} requires a model with decoder_type={head.decoder_type!r}, got "
            f"decoder_type={model.config.decoder_type!r}"
        )
    layer = episode.extract_latent_layer
    if layer is not None and not 0 <= layer < model.config.depth:
        raise ValueError(f"extract_latent_layer must be in [0, {model.config.depth}), got {layer}")
