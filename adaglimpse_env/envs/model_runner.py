"""The frozen model's side of an env step: one batched forward over every env's tokens, then the task's score.

Each step re-encodes every token gathered so far: the transformer has no causal structure to cache (the original
does the same in ``forward_game_state`` of ``architectures/rl_glimpse.py``). What never changes within an episode
is reused (``incremental=True``, the env's default): each glimpse's token embeddings (patch embedding + box
embedding, kept in :class:`~adaglimpse_env.envs.episode_buffers.EpisodeBuffers`), the image's 0-255 pixels the
reconstruction score compares with, the decoder's constant grid queries and their first-block projection, the
no-glimpse output (the same for every image), and envs with no glimpse yet (or just restarted) take that cached
output instead of a row in the forward.

Envs may be at different glimpse counts (early stopping, partial resets): the batch is padded to the largest
token count and empty slots are masked as attention keys in the encoder and decoder and skipped by the rollout,
so every env gets exactly what it would get alone (see :func:`~adaglimpse_env.models.rollout.attention_rollout`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adaglimpse_env.config import ResolvedEpisodeConfig
from adaglimpse_env.envs.episode_buffers import EpisodeBuffers, Rows, upload
from adaglimpse_env.models.blocks import ConstantTokens
from adaglimpse_env.models.heads import TaskHead
from adaglimpse_env.models.mae import ElasticMAE
from adaglimpse_env.models.rollout import attention_rollout
from adaglimpse_env.tasks import Task

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
ModelOutputs = tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ModelEvaluation:
    """What the frozen model made of every env's tokens so far (``n``: the longest token count in the batch).

    Attributes:
        latent: ``(B, 1 + n, D)`` float32 observed latent (cls first; the aux layer's input when
            ``extract_latent_layer`` is set), zero in slots an env has not filled.
        importance: ``(B, n, 1)`` float32 attention-rollout importance (zeros unless ``observation="full"``).
        prediction: the task head's output, e.g. ``(B, G, p*p*3)`` reconstruction patches.
        score: ``(B,)`` float64 task score, higher is better.
        metrics: ``{name: (B,) float64}`` per-image task metrics (see :meth:`Task.episode_metrics`).
    """

    latent: torch.Tensor
    importance: torch.Tensor
    prediction: torch.Tensor
    score: torch.Tensor
    metrics: dict[str, torch.Tensor]


class FrozenModelRunner:
    """Runs the frozen model for a vector env: autocast, ``torch.compile``, the incremental caches, padding.

    Args:
        model: the frozen model (already on ``device``, in eval mode, without gradients).
        task: the task whose head reads the latent and whose score is reported.
        episode: the episode settings (token budget, observation preset, latent layer).
        device: where the model runs.
        autocast_dtype: None (float32) or ``"bfloat16"`` / ``"float16"`` (see :class:`GlimpseVectorEnv`).
        compile_model: :func:`torch.compile` the encoder + head forward.
        incremental: reuse what does not change within an episode (see the module docstring).
    """

    def __init__(
        self,
        model: ElasticMAE,
        task: Task,
        episode: ResolvedEpisodeConfig,
        device: torch.device,
        autocast_dtype: str | torch.dtype | None = None,
        compile_model: bool = False,
        incremental: bool = True,
    ) -> None:
        self.model = model
        self.task = task
        self.head: TaskHead = task.head
        self.episode = episode
        self.device = device
        self.autocast_dtype = check_autocast_dtype(autocast_dtype, device)
        self.compile_model = compile_model
        self.incremental = incremental
        self._empty_state: tuple[torch.Tensor, torch.Tensor] | None = None
        with torch.inference_mode(), self.autocast():
            probe = model.embed_tokens(torch.zeros(1, 1, 3, 16, 16, device=device), torch.zeros(1, 1, 4, device=device))
        #: dtype of the cached token embeddings: what the encoder sees them in (autocast's, if on).
        self.token_dtype = probe.dtype
        self._decoder_constants: ConstantTokens | None = None
        if incremental and self.head.needs_decoder:
            with torch.inference_mode(), self.autocast():
                self._decoder_constants = model.decoder_constants(probe.dtype)
        self._encode_and_predict: Callable[..., ModelOutputs] = _encode_and_predict
        self._reference_encode_and_predict: Callable[..., ModelOutputs] = _reference_encode_and_predict
        if compile_model:
            self._encode_and_predict = torch.compile(_encode_and_predict)
            self._reference_encode_and_predict = torch.compile(_reference_encode_and_predict)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of the model's forward (a no-op in float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def embed_tokens(self, patches: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(R, g*g, D)`` of new patches ``(R, g*g, 3, 16, 16)`` at pixel boxes ``(R, g*g, 4)``."""
        with self.autocast():
            return self.model.embed_tokens(patches, cells)

    @torch.inference_mode()
    def evaluate(self, buffers: EpisodeBuffers) -> ModelEvaluation:
        """One batched forward of the model over every env's tokens so far.

        Envs with no glimpse take the cached empty-state output; with ``incremental`` they are also left out of
        the forward when other envs have glimpses.
        """
        num_envs = buffers.num_envs
        num_tokens = buffers.glimpses * self.episode.tokens_per_glimpse
        active = num_tokens > 0
        if not active.any():
            latent, prediction = self._empty_state_output()
            latent = latent.expand(num_envs, -1, -1)
            prediction = prediction.expand(num_envs, *prediction.shape[1:])
            importance = latent.new_zeros(num_envs, 0, 1)
        elif active.all() or not self.incremental:
            latent, importance, prediction = self._forward(buffers, slice(None), num_tokens)
        else:
            rows = np.flatnonzero(active)
            index = upload(rows, self.device)
            rows_latent, rows_importance, rows_prediction = self._forward(buffers, index, num_tokens[rows])
            latent, importance, prediction = self._empty_batch(num_envs, rows_latent.shape[1] - 1)
            latent[index] = rows_latent
            importance[index] = rows_importance
            prediction[index] = rows_prediction.to(prediction.dtype)
        return self._scored(buffers, latent, importance, prediction)

    @torch.inference_mode()
    def restart_rows(
        self, buffers: EpisodeBuffers, evaluation: ModelEvaluation, restarted: np.ndarray
    ) -> ModelEvaluation:
        """``evaluation`` with the ``restarted`` envs (just given new images) in the empty state, no forward."""
        index = upload(np.flatnonzero(restarted), self.device)
        latent0, prediction0 = self._empty_state_output()
        latent = evaluation.latent.clone()
        latent[index] = 0.0
        latent[index, :1] = latent0
        importance = evaluation.importance.clone()
        importance[index] = 0.0
        prediction = evaluation.prediction.clone()
        prediction[index] = prediction0.to(prediction.dtype)
        return self._scored(buffers, latent, importance, prediction)

    # ------------------------------------------------------------------------------------------------ internals
    def _empty_state_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent and prediction with no glimpse: the same for every image, so computed once.

        The original evaluates this step too (step 0 of its ``SyncGlimpseEngine``, cls token only); its score is
        the baseline of the first ``diff`` reward.
        """
        if self._empty_state is None:
            with self.autocast():
                encoded = self.model.forward_encoder(
                    torch.zeros(1, 0, 3, 16, 16, device=self.device),
                    torch.zeros(1, 0, 4, dtype=torch.long, device=self.device),
                    aux_latent_layer=self.episode.extract_latent_layer,
                )
                latent = encoded.aux_latent if encoded.aux_latent is not None else encoded.latent
                self._empty_state = (latent.float(), self.head.predict(self.model, encoded.latent))
        return self._empty_state

    def _forward(
        self, buffers: EpisodeBuffers, index: Rows, num_tokens: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder, rollout and task head over ``index``'s rows, padded to their longest token count.

        Returns:
            ``(latent (R, 1 + n, D) float32, importance (R, n, 1) float32, prediction)``.
        """
        longest = int(num_tokens.max())
        pad_mask = valid = None
        if int(num_tokens.min()) < longest:
            valid = buffers.token_count[index]
            pad_mask = (torch.arange(longest, device=self.device)[None] >= valid[:, None]).float()[..., None]
        need_importance = self.episode.observation == "full"
        layer = self.episode.extract_latent_layer
        with self.autocast():
            if buffers.tokens is not None:
                tokens = buffers.tokens[index, :longest]
                outputs = self._run_model(
                    self._encode_and_predict,
                    (tokens, pad_mask, layer, need_importance, self._decoder_constants),
                )
            else:
                patches, boxes = buffers.patches[index, :longest], buffers.boxes[index, :longest]
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

    def _empty_batch(self, num_envs: int, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every env in the empty state, with room for ``num_tokens`` tokens: ``(latent, importance, prediction)``."""
        latent0, prediction0 = self._empty_state_output()
        latent = latent0.new_zeros(num_envs, 1 + num_tokens, latent0.shape[-1])
        latent[:, :1] = latent0
        importance = latent0.new_zeros(num_envs, num_tokens, 1)
        prediction = prediction0.expand(num_envs, *prediction0.shape[1:]).clone()
        return latent, importance, prediction

    def _scored(
        self, buffers: EpisodeBuffers, latent: torch.Tensor, importance: torch.Tensor, prediction: torch.Tensor
    ) -> ModelEvaluation:
        targets = buffers.targets()
        score = self.task.score(self.model, prediction, buffers.images, targets, image_pixels=buffers.image_pixels)
        return ModelEvaluation(
            latent=latent,
            importance=importance,
            prediction=prediction,
            score=score.double(),
            metrics=self.task.episode_metrics(prediction, score, targets),
        )


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


def _is_compile_error(error: Exception) -> bool:
    """Whether ``error`` came from torch.compile's machinery (dynamo / inductor) rather than the model."""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))


def check_autocast_dtype(value: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``autocast_dtype=value`` on ``device``.

    Raises:
        ValueError: for a dtype other than bfloat16 / float16, or one the device cannot autocast to.
    """
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
