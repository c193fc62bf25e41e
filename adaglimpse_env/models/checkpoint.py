"""Save and load elastic-MAE checkpoints: ours (with metadata) and the original code's formats (original checkpoints).

One entry point, :func:`load_model`, takes any of:

* our checkpoint: ``{"format": "adaglimpse-env/elastic-mae", "format_version", "config", "task",
  "state_dict", "metadata"}``; loads with no extra arguments;
* an original trained AdaGlimpse Lightning checkpoint: ``{"state_dict": {"mae._orig_mod.<name>": ...,
  "actor_critic.*": ...}, ...}`` (original Lightning checkpoints); only the ``mae.`` part is read here;
* an original MAE / DeiT-style file ``{"model": state_dict}`` or a bare MAE state dict, with or without the
  ``_orig_mod.`` prefix that ``torch.compile`` adds (original `load_pretrained_elastic`; original `mae.py`).

Our parameter names are the original's, so mapping a foreign file is stripping its prefixes. Everything is read
with ``torch.load(weights_only=True)``: a file holding pickled code is refused, never executed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaglimpse_env.models.heads import TASKS, create_task_head, task_for_decoder
from adaglimpse_env.models.hub import resolve_checkpoint_path
from adaglimpse_env.models.mae import ElasticMAE, MAEConfig

# Safe file reading and writing lives in torch_files; the names stay importable from here, where they were first.
from adaglimpse_env.models.torch_files import CheckpointError, atomic_torch_save, safe_torch_load

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "LoadedModel",
    "atomic_torch_save",
    "extract_mae_state_dict",
    "infer_config",
    "load_model",
    "safe_torch_load",
    "save_model",
]

CHECKPOINT_FORMAT = "adaglimpse-env/elastic-mae"
CHECKPOINT_FORMAT_VERSION = 1

#: Attention heads of the original sizes, by width (original `mae.py`): heads cannot be read off tensor shapes.
HEADS_BY_EMBED_DIM = {192: 3, 384: 6, 768: 12, 1024: 16}
#: Every original factory uses 16 decoder heads (original `mae.py`).
ORIGINAL_DECODER_HEADS = 16
#: Fixed sin-cos buffers: recomputed identically, so a file may omit them (the original deletes ``pos_embed``).
RECOMPUTED_BUFFERS = ("pos_embed", "decoder_pos_embed")
#: Most native patches a loaded config may declare (a 4096 x 4096 input at 16 px): the sin-cos buffers are
#: computed from the config alone, so an absurd ``img_size`` in a file would otherwise allocate gigabytes.
MAX_GRID_TOKENS = 65_536

_PREFIXES = ("_orig_mod.", "module.")


@dataclass
class LoadedModel:
    """A model restored from a checkpoint.

    Attributes:
        model: the :class:`ElasticMAE`, in eval mode, on the requested device.
        task: the task the checkpoint is for.
        source_format: ``"adaglimpse-env"``, ``"lightning"``, ``"model-dict"`` or ``"state-dict"``.
        metadata: free-form metadata stored with our checkpoints (training command, step, ...).
    """

    model: ElasticMAE
    task: str
    source_format: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    stripped = {}
    for key, value in state_dict.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        stripped[key] = value
    return stripped


def _require_tensors(state_dict: Mapping[Any, Any], what: str) -> dict[str, torch.Tensor]:
    """``state_dict`` as a dict, if every key is a string and every value a tensor (what ``load_state_dict`` and
    the shape inference assume), else a :class:`CheckpointError` naming the offending entries."""
    bad = [
        f"{key!r}: {type(value).__name__}"
        for key, value in state_dict.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise CheckpointError(f"{what} requires string keys and tensor values, got {shown}")
    return dict(state_dict)


def extract_mae_state_dict(raw: Any) -> tuple[dict[str, torch.Tensor], str]:
    """Our-named MAE state dict from any supported checkpoint layout.

    Args:
        raw: what :func:`safe_torch_load` returned.

    Returns:
        ``(state_dict, source_format)``.

    Raises:
        CheckpointError: an unrecognised layout.
    """
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"A checkpoint requires a dict at top level, got {type(raw).__name__}")
    if raw.get("format") == CHECKPOINT_FORMAT:
        if not isinstance(raw.get("state_dict"), Mapping):
            raise CheckpointError(
                f"A checkpoint of format {CHECKPOINT_FORMAT!r} requires a 'state_dict' dict, got "
                f"{type(raw.get('state_dict')).__name__}"
            )
        return _require_tensors(raw["state_dict"], "The checkpoint's 'state_dict'"), "adaglimpse-env"
    if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        inner = raw["state_dict"]
        mae = {k[len("mae.") :]: v for k, v in inner.items() if isinstance(k, str) and k.startswith("mae.")}
        if not mae:
            sample = ", ".join(list(inner)[:5])
            raise CheckpointError(f"A Lightning checkpoint requires MAE weights under 'mae.', got keys like {sample}")
        return _strip_prefixes(_require_tensors(mae, "The Lightning checkpoint's 'mae.' weights")), "lightning"
    if "model" in raw and isinstance(raw["model"], Mapping):
        return _strip_prefixes(_require_tensors(raw["model"], "The checkpoint's 'model' dict")), "model-dict"
    if raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return _strip_prefixes(_require_tensors(raw, "A bare state dict")), "state-dict"
    raise CheckpointError(
        f"Unrecognised checkpoint layout with top-level keys {sorted(map(str, raw))[:10]}: expected our format, "
        f"a Lightning checkpoint ('state_dict'), a {{'model': state_dict}} file, or a bare state dict"
    )


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def infer_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> MAEConfig:
    """Read an :class:`MAEConfig` off the tensor shapes of a foreign (original-format) state dict.

    Head counts cannot be read from shapes: they come from :data:`HEADS_BY_EMBED_DIM` and the original's 16
    decoder heads, unless given in ``overrides``.

    Raises:
        CheckpointError: the dict is not an MAE, or its width has no known head count.
    """
    required = ("cls_token", "patch_embed.proj.weight", "head.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointError(
            f"An elastic-MAE state dict requires {list(required)}, missing {missing}; "
            f"got keys like {list(state_dict)[:6]}"
        )
    embed_dim = state_dict["cls_token"].shape[-1]
    proj = state_dict["patch_embed.proj.weight"]
    values: dict[str, Any] = {
        "embed_dim": embed_dim,
        "depth": _count_blocks(state_dict, "blocks"),
        "patch_size": proj.shape[-1],
        "in_chans": proj.shape[1],
        "num_classes": state_dict["head.weight"].shape[0],
        "decoder_type": "none",
    }
    if "pos_embed" in state_dict:
        side = round(state_dict["pos_embed"].shape[1] ** 0.5)
        if side * side == state_dict["pos_embed"].shape[1]:
            values["img_size"] = (side * proj.shape[-1],) * 2
    if "num_heads" not in overrides:
        if embed_dim not in HEADS_BY_EMBED_DIM:
            raise CheckpointError(
                f"Cannot infer num_heads for embed_dim={embed_dim} (known: {HEADS_BY_EMBED_DIM}); "
                f"pass num_heads=... explicitly"
            )
        values["num_heads"] = HEADS_BY_EMBED_DIM[embed_dim]
    if "mask_token" in state_dict:
        values["decoder_embed_dim"] = state_dict["mask_token"].shape[-1]
        values["decoder_depth"] = _count_blocks(state_dict, "decoder_blocks")
        values["decoder_num_heads"] = ORIGINAL_DECODER_HEADS
        if "decoder_pred.weight" in state_dict:
            values["decoder_type"] = "standard"
            values["out_chans"] = state_dict["decoder_pred.weight"].shape[0] // values["patch_size"] ** 2
        else:
            segment_keys = sorted(k for k in state_dict if k.startswith("decoder_segment.conv_head."))
            if not segment_keys:
                raise CheckpointError(
                    "A state dict with a decoder requires 'decoder_pred.*' or 'decoder_segment.*' keys, got neither"
                )
            last_conv = max(segment_keys, key=lambda k: int(k.split(".")[2]))
            values["decoder_type"] = "segment"
            values["out_chans"] = state_dict[last_conv].shape[0]
    values.update(overrides)
    return MAEConfig(**values)


def _check_task(task: str, config: MAEConfig, source: str) -> None:
    if task not in TASKS:
        raise CheckpointError(f"task must be one of {list(TASKS)}, got {task!r}")
    head = create_task_head(task)
    # Classification too: a checkpoint with a decoder is a reconstruction or segmentation model whose classifier
    # head was never trained, which would drive the rewards with noise.
    if config.decoder_type != head.decoder_type:
        raise CheckpointError(
            f"task={task!r} requires a checkpoint with decoder_type={head.decoder_type!r}, but '{source}' has "
            f"decoder_type={config.decoder_type!r} (a {task_for_decoder(config.decoder_type)} model)"
        )


def check_state_dict_fits(model: ElasticMAE, state_dict: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Check that a state dict has nothing missing, nothing unexpected and every shape equal, or explain why not.

    Only shapes are read, so ``model`` may live on the ``meta`` device (no memory allocated).
    The fixed sin-cos buffers (:data:`RECOMPUTED_BUFFERS`) may be absent: the model recomputes them.

    Raises:
        CheckpointError: listing the offending keys with the expected and the found shapes.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and k not in RECOMPUTED_BUFFERS]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(state_dict[k].shape)}"
        for k in state_dict
        if k in expected and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"Checkpoint {source!r} does not fit the model {model.config}:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                lines.append(f"  {title}: {shown}")
        lines.append("Check the model size and task, or load the file with load_model() to infer them.")
        raise CheckpointError("\n".join(lines))


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Refuse floating-point weights holding NaN or inf: a frozen model with them turns every observation and
    reward into NaN, far from the file that caused it.

    Raises:
        CheckpointError: naming the tensors with non-finite values.
    """
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not _all_finite(v)]
    if bad:
        shown = ", ".join(bad[:8]) + (f", ... ({len(bad)} in all)" if len(bad) > 8 else "")
        raise CheckpointError(f"Checkpoint {source!r} requires finite weights, got NaN or inf in {shown}")


def _all_finite(tensor: torch.Tensor) -> bool:
    # numpy where it has the dtype: a single-threaded pass per tensor. torch runs each of the hundreds of small
    # reductions as a parallel region, and on a busy machine every region waits for a core (measured: 0.6 s
    # instead of 1 ms for the tiny model on 2 loaded cores).
    if tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(tensor.detach().cpu().numpy()).all())
    return bool(torch.isfinite(tensor).all())


def _read_our_checkpoint(raw: Mapping[str, Any], path: Path) -> tuple[MAEConfig, str, dict[str, Any]]:
    """``(config, task, metadata)`` of our format, each checked: a hand-edited or corrupted file fails here with
    a :class:`CheckpointError` rather than a ``KeyError`` or ``TypeError`` from deep inside."""
    version = raw.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint '{path}' has format_version {version}; this version of adaglimpse-env reads "
            f"version {CHECKPOINT_FORMAT_VERSION}. Upgrade the package or re-export the checkpoint."
        )
    config_data, task, metadata = raw.get("config"), raw.get("task"), raw.get("metadata", {})
    if not isinstance(config_data, Mapping) or not isinstance(task, str) or not isinstance(metadata, Mapping):
        raise CheckpointError(
            f"Checkpoint '{path}' requires 'config' (dict), 'task' (str) and 'metadata' (dict), got "
            f"{type(config_data).__name__}, {type(task).__name__} and {type(metadata).__name__}"
        )
    try:
        config = MAEConfig.from_dict(dict(config_data))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"Checkpoint '{path}' has an invalid config: {error}") from error
    return config, task, dict(metadata)


def _build_model(config: MAEConfig, state_dict: Mapping[str, torch.Tensor], source: str) -> ElasticMAE:
    """The model of ``config`` holding ``state_dict``, allocated only once the weights are known to fit.

    A config is data from the file: one declaring millions of blocks or a huge width would otherwise allocate
    (and initialise) that model before the mismatch with the weights is found. The block counts and the
    positional grid are checked first, then every shape against a skeleton on the ``meta`` device, then that
    the weights are finite (:func:`check_finite`).
    """
    for field_name, prefix, present in (
        ("depth", "blocks", True),
        ("decoder_depth", "decoder_blocks", config.decoder_type != "none"),
    ):
        declared, found = getattr(config, field_name), _count_blocks(state_dict, prefix)
        if present and declared != found:
            raise CheckpointError(
                f"Checkpoint {source!r} requires {field_name}={declared} blocks of weights under '{prefix}.', "
                f"got {found}"
            )
    grid_tokens = config.grid_size[0] * config.grid_size[1]
    if grid_tokens > MAX_GRID_TOKENS:
        raise CheckpointError(
            f"Checkpoint {source!r} requires img_size with at most {MAX_GRID_TOKENS} patches, got "
            f"img_size={config.img_size} ({grid_tokens} patches of {config.patch_size} px)"
        )
    try:
        with torch.device("meta"):
            skeleton = ElasticMAE(config)
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"Checkpoint {source!r} describes a model that cannot be built ({config}): {type(error).__name__}: {error}"
        ) from error
    check_state_dict_fits(skeleton, state_dict, source)
    check_finite(state_dict, source)
    model = ElasticMAE(config)
    model.load_state_dict(dict(state_dict), strict=False)
    return model


# ------------------------------------------------------------------------------------------------------ public
def load_model(
    source: str | os.PathLike[str],
    task: str | None = None,
    device: str | torch.device = "cpu",
    local_files_only: bool = False,
    **config_overrides: Any,
) -> LoadedModel:
    """Load an elastic MAE from any supported checkpoint (path or ``hf-hub:`` name).

    Args:
        source: file path or ``hf-hub:<owner>/<repo>/<file>``.
        task: expected task; checked against the checkpoint (ours) or its decoder (original formats). None takes
            the checkpoint's own.
        device: where to put the model.
        local_files_only: never contact the hub.
        **config_overrides: :class:`MAEConfig` fields for original files whose heads or image size differ from
            the defaults (e.g. ``num_heads=3``). Ignored for our checkpoints, which carry their config.

    Returns:
        A :class:`LoadedModel` in eval mode.

    Raises:
        CheckpointNotFoundError: the file cannot be found or downloaded.
        CheckpointError: unreadable, unsafe, or not matching the requested task/architecture.
    """
    path = resolve_checkpoint_path(source, local_files_only=local_files_only)
    raw = safe_torch_load(path)
    try:
        state_dict, source_format = extract_mae_state_dict(raw)
    except CheckpointError as error:  # name the file: the layout checks do not know it
        raise CheckpointError(f"Checkpoint '{path}': {error}") from error
    metadata: dict[str, Any] = {}
    if source_format == "adaglimpse-env":
        config, checkpoint_task, metadata = _read_our_checkpoint(raw, path)
        if task is not None and task != checkpoint_task:
            raise CheckpointError(
                f"task={task!r} requested, but checkpoint '{path}' was trained for task={checkpoint_task!r}"
            )
        task = checkpoint_task
    else:
        try:
            config = infer_config(state_dict, **config_overrides)
        except (TypeError, ValueError) as error:  # CheckpointError included: name the file
            raise CheckpointError(f"Checkpoint '{path}': {error}") from error
        task = task or task_for_decoder(config.decoder_type)
    _check_task(task, config, str(path))
    model = _build_model(config, state_dict, str(path))
    return LoadedModel(model.to(device).eval(), task, source_format, metadata)


def save_model(
    path: str | os.PathLike[str],
    model: ElasticMAE,
    task: str,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write our checkpoint format (atomically), loadable by :func:`load_model` with no other arguments.

    Args:
        path: destination file.
        model: the model.
        task: its task.
        metadata: plain data (str, numbers, lists, dicts) to keep with it, e.g. the command that trained it.
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` to halve the size); they are loaded
            back into the model's float32 parameters.
    """
    _check_task(task, model.config, str(path))
    state_dict = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().clone()
        for k, v in model.state_dict().items()
    }
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "config": model.config.to_dict(),
            "task": task,
            "state_dict": state_dict,
            "metadata": dict(metadata or {}),
        },
        path,
    )
