"""Hostile checkpoint files: each must fail with ``CheckpointError`` naming the file and the reason, through
``load_model`` and through ``gym.make`` / ``gym.make_vec``, never with a raw pickle, torch or Python error.
A file carrying pickled code must be refused unrun.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hostile_inputs import FOLDER_ID
from tiny_models import tiny_model

from adaglimpse_env.models import CheckpointError, create_model, load_model, save_model

UNREADABLE = r"could not be read: it is truncated, corrupt or not a PyTorch checkpoint"


class WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: if the marker file exists afterwards, the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def marker_of(path: Path) -> Path:
    return path.with_name(path.name + ".code-ran")


@dataclass(frozen=True)
class BadCheckpoint:
    """A checkpoint file that must be refused.

    Attributes:
        id: test id.
        write: ``write(path, good)`` writes it at ``path``; ``good`` is a valid tiny reconstruction checkpoint.
        match: regex the ``CheckpointError`` message must match.
        task: the task requested (``load_model(task=...)``, ``gym.make(..., task=...)``).
    """

    id: str
    write: Callable[[Path, Path], None]
    match: str
    task: str = "reconstruction"


def _ours(**changes) -> Callable[[Path, Path], None]:
    """Our format, read from the good file, with top-level entries replaced (None deletes one)."""

    def write(path: Path, good: Path) -> None:
        raw = torch.load(good, weights_only=True)
        for key, value in changes.items():
            if value is None:
                raw.pop(key)
            else:
                raw[key] = value(raw) if callable(value) else value
        torch.save(raw, path)

    return write


def _config(**fields) -> Callable[[dict], dict]:
    return lambda raw: {**raw["config"], **fields}


def _state_dict(**tensors) -> Callable[[dict], dict]:
    return lambda raw: {**raw["state_dict"], **{k.replace("__", "."): v for k, v in tensors.items()}}


def _bytes(data: bytes | Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    def write(path: Path, good: Path) -> None:
        path.write_bytes(data(good.read_bytes()) if callable(data) else data)

    return write


def _pickle_stream(stream: bytes) -> Callable[[Path, Path], None]:
    """A real torch zip checkpoint whose ``data.pkl`` is replaced by ``stream``."""

    def write(path: Path, good: Path) -> None:
        buffer = io.BytesIO()
        torch.save({}, buffer)
        source = zipfile.ZipFile(buffer)
        with zipfile.ZipFile(path, "w") as target:
            for name in source.namelist():
                target.writestr(name, stream if name.endswith("/data.pkl") else source.read(name))

    return write


def _saved(make_object: Callable[[Path], object]) -> Callable[[Path, Path], None]:
    def write(path: Path, good: Path) -> None:
        torch.save(make_object(path), path)

    return write


def _zip_not_torch(path: Path, good: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "a zip archive, but not a PyTorch one")


def _deflated(path: Path, good: Path) -> None:
    """A good checkpoint plus a deflated record of 64 MiB of zeros (64 KB on disk): a memory bomb for torch.load."""
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            target.writestr(name, source.read(name))
        target.writestr(source.namelist()[0].split("/")[0] + "/data/9999", bytes(64 * 2**20))


def _npy(path: Path, good: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    path.write_bytes(buffer.getvalue())


def _timm(name: str, **kwargs) -> Callable[[Path, Path], None]:
    def write(path: Path, good: Path) -> None:
        import timm

        torch.manual_seed(0)
        torch.save(timm.create_model(name, pretrained=False, **kwargs).state_dict(), path)

    return write


def _original_mae(decoder_type: str) -> Callable[[Path, Path], None]:
    """An original-layout state dict (our parameter names, no metadata) of a tiny MAE."""

    def write(path: Path, good: Path) -> None:
        task = {"none": "classification", "standard": "reconstruction"}[decoder_type]
        torch.save({"model": create_model("tiny", task, depth=1, decoder_depth=1).state_dict()}, path)

    return write


def _nan_weights(raw: dict) -> dict:
    weights = dict(raw["state_dict"])
    weights["blocks.0.attn.qkv.weight"] = weights["blocks.0.attn.qkv.weight"].clone()
    weights["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    weights["norm.bias"] = torch.full_like(weights["norm.bias"], float("inf"))
    return weights


BAD_CHECKPOINTS = [
    # ---- not a checkpoint at all
    BadCheckpoint("truncated", _bytes(lambda good: good[: len(good) // 2]), UNREADABLE),
    BadCheckpoint("empty-file", _bytes(b""), UNREADABLE),
    BadCheckpoint("text-file", _bytes(b"model weights: see attached\n"), UNREADABLE),
    BadCheckpoint("numpy-npy-file", _npy, UNREADABLE),
    BadCheckpoint("zip-not-torch", _zip_not_torch, UNREADABLE),
    BadCheckpoint("plain-pickle", _bytes(pickle.dumps({"cls_token": [0.0]}, protocol=2)), UNREADABLE),
    BadCheckpoint("pickle-dangling-memo", _pickle_stream(b"\x80\x02h\x7b."), UNREADABLE),  # BINGET 123: KeyError
    BadCheckpoint("pickle-empty-stack", _pickle_stream(b"\x80\x02R."), UNREADABLE),  # REDUCE on nothing
    BadCheckpoint("top-level-list", _saved(lambda p: [torch.zeros(3)]), r"requires a dict at top level, got list"),
    BadCheckpoint("top-level-tensor", _saved(lambda p: torch.zeros(3)), r"requires a dict at top level, got Tensor"),
    BadCheckpoint("compressed-records", _deflated, r"refused before reading, since torch.save writes records"),
    BadCheckpoint(
        "config-patch-size-0", _ours(config=_config(patch_size=0)), r"requires positive integers .*patch_size"
    ),
    BadCheckpoint("config-num-heads-0", _ours(config=_config(num_heads=0)), r"requires positive integers .*num_heads"),
    BadCheckpoint("config-img-size-1d", _ours(config=_config(img_size=[224])), r"img_size as two positive integers"),
    BadCheckpoint("config-img-size-text", _ours(config=_config(img_size="224")), r"img_size as two positive integers"),
    BadCheckpoint("config-depth-negative", _ours(config=_config(depth=-1)), r"requires positive integers .*depth"),
    BadCheckpoint(
        "original-reconstruction-as-classification",
        _original_mae("standard"),
        r"task='classification' requires a checkpoint with decoder_type='none'.*decoder_type='standard'",
        task="classification",
    ),
    BadCheckpoint(
        "bare-reconstruction-as-classification",
        _saved(lambda p: create_model("tiny", "reconstruction", depth=1, decoder_depth=1).state_dict()),
        r"task='classification' requires a checkpoint with decoder_type='none'",
        task="classification",
    ),
    # ---- another architecture
    BadCheckpoint("timm-resnet", _timm("test_resnet"), r"elastic-MAE state dict requires .*missing .*cls_token"),
    BadCheckpoint(
        "timm-vit-without-layerscale",
        _timm("vit_tiny_patch16_224", depth=1),
        r"does not fit the model.*missing: blocks\.0\.gamma_1",
        task="classification",  # a ViT has no decoder: asked for reconstruction it fails the task check first
    ),
    BadCheckpoint("timm-vit-unknown-width", _timm("test_vit"), r"Cannot infer num_heads for embed_dim=64"),
    BadCheckpoint(
        "mae-config-wider-than-weights",
        _ours(config=_config(embed_dim=384)),
        r"shape mismatch: .*cls_token: expected \(1, 1, 384\), got \(1, 1, 192\)",
    ),
    BadCheckpoint(
        "mae-config-of-huge-width",
        _ours(config=_config(embed_dim=1 << 20, num_heads=1 << 10)),
        r"shape mismatch: .*expected \(1, 1, 1048576\)",
    ),
    BadCheckpoint(
        "mae-config-of-10M-blocks",
        _ours(config=_config(depth=10_000_000)),
        r"requires depth=10000000 blocks of weights under 'blocks\.', got 1",
    ),
    BadCheckpoint(
        "mae-config-of-huge-image", _ours(config=_config(img_size=[1 << 16, 1 << 16])), r"at most 65536 patches"
    ),
    BadCheckpoint("config-unknown-field", _ours(config=_config(hidden_trick=1)), r"invalid config: .*hidden_trick"),
    BadCheckpoint("config-not-a-dict", _ours(config="tiny"), r"requires 'config' \(dict\), 'task' \(str\)"),
    BadCheckpoint("config-missing", _ours(config=None), r"requires 'config' \(dict\), 'task' \(str\)"),
    BadCheckpoint("task-missing", _ours(task=None), r"requires 'config' \(dict\), 'task' \(str\)"),
    BadCheckpoint("state-dict-not-a-dict", _ours(state_dict=[1, 2]), r"requires a 'state_dict' dict, got list"),
    BadCheckpoint(
        "non-tensor-weights",
        _ours(state_dict=_state_dict(head__weight="weights", norm__bias=[0.0])),
        r"requires string keys and tensor values, got .*'head\.weight': str",
    ),
    BadCheckpoint(
        "non-tensor-weights-original-layout",
        _saved(lambda p: {"model": {"cls_token": 1, "patch_embed.proj.weight": 2, "head.weight": None}}),
        r"requires string keys and tensor values",
    ),
    BadCheckpoint(
        "nan-and-inf-weights",
        _ours(state_dict=_nan_weights),
        r"requires finite weights, got NaN or inf in blocks\.0\.attn\.qkv\.weight, norm\.bias",
    ),
    # ---- another task or head
    BadCheckpoint(
        "classification-as-segmentation",
        _saved(lambda p: _our_checkpoint_object("classification")),
        r"task='segmentation' requested, but .* was trained for task='classification'",
        task="segmentation",
    ),
    BadCheckpoint(
        "classification-as-reconstruction",
        _saved(lambda p: _our_checkpoint_object("classification")),
        r"task='reconstruction' requested, but .* was trained for task='classification'",
    ),
    BadCheckpoint(
        "original-classifier-as-segmentation",
        _original_mae("none"),
        r"task='segmentation' requires a checkpoint with decoder_type='segment'.*decoder_type='none'",
        task="segmentation",
    ),
    BadCheckpoint(
        "head-shape-mismatch",
        _ours(state_dict=_state_dict(head__weight=torch.zeros(10, 192), head__bias=torch.zeros(10))),
        r"shape mismatch: head\.weight: expected \(1000, 192\), got \(10, 192\), head\.bias",
    ),
    BadCheckpoint(
        "decoder-prediction-shape-mismatch",
        _ours(state_dict=_state_dict(decoder_pred__weight=torch.zeros(10, 128))),
        r"shape mismatch: decoder_pred\.weight: expected \(768, 128\), got \(10, 128\)",
    ),
    # ---- pickled code: refused by weights-only loading, never run
    BadCheckpoint(
        "pickled-code-top-level",
        _saved(lambda p: WritesMarker(marker_of(p))),
        r"contains pickled Python objects \(\S*open\).*nothing in it was run",
    ),
    BadCheckpoint(
        "pickled-code-inside-state-dict",
        _saved(
            lambda p: {**_our_checkpoint_object("reconstruction"), "metadata": {"note": WritesMarker(marker_of(p))}}
        ),
        r"contains pickled Python objects \(\S*open\)",
    ),
    BadCheckpoint(
        "whole-module-pickled",
        _saved(lambda p: tiny_model()),
        r"contains pickled Python objects \(\S+\).*re-save its state dict",
    ),
]


def _our_checkpoint_object(task: str) -> dict:
    """What :func:`save_model` writes, as an object (so a test can slip something into it before saving)."""
    model = create_model("tiny", task, depth=1, decoder_depth=1)
    return {
        "format": "adaglimpse-env/elastic-mae",
        "format_version": 1,
        "config": model.config.to_dict(),
        "task": task,
        "state_dict": model.state_dict(),
        "metadata": {},
    }


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("good") / "tiny.pt"
    save_model(path, create_model("tiny", "reconstruction", depth=1, decoder_depth=1), "reconstruction")
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, good_checkpoint: Path) -> dict[str, Path]:
    """Every bad checkpoint, written once for the module (each in its own folder, beside its marker)."""
    paths = {}
    for case in BAD_CHECKPOINTS:
        path = tmp_path_factory.mktemp(case.id) / f"{case.id}.pt"
        case.write(path, good_checkpoint)
        paths[case.id] = path
    return paths


cases = pytest.mark.parametrize("case", BAD_CHECKPOINTS, ids=[c.id for c in BAD_CHECKPOINTS])


def check_error(error: CheckpointError, case: BadCheckpoint, path: Path) -> None:
    message = str(error)
    assert re.search(case.match, message, re.DOTALL), message
    assert str(path) in message, message
    assert not marker_of(path).exists(), "the checkpoint's pickled code ran"


@cases
def test_bad_checkpoint_refused_by_load_model(bad_files: dict[str, Path], case: BadCheckpoint) -> None:
    path = bad_files[case.id]
    with pytest.raises(CheckpointError) as info:
        load_model(path, task=case.task)
    check_error(info.value, case, path)


@cases
@pytest.mark.parametrize("make", ["make", "make_vec"])
def test_bad_checkpoint_refused_by_gym_make(
    bad_files: dict[str, Path], good_folder: Path, case: BadCheckpoint, make: str
) -> None:
    path = bad_files[case.id]
    kwargs = {"data_root": str(good_folder), "checkpoint": str(path), "task": case.task, "num_workers": 0}
    with pytest.raises(CheckpointError) as info:
        if make == "make":
            gym.make(FOLDER_ID, **kwargs)
        else:
            gym.make_vec(FOLDER_ID, num_envs=2, **kwargs)
    check_error(info.value, case, path)


def test_the_pickled_code_payload_is_live(tmp_path: Path) -> None:
    """The refusals above matter: loading the same file without weights_only would have run its code."""
    path = tmp_path / "payload.pt"
    torch.save(WritesMarker(marker_of(path)), path)
    assert not marker_of(path).exists()
    torch.load(path, weights_only=False).close()  # what an unguarded loader would do
    assert marker_of(path).exists()


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")  # torch, rebuilding mangled records
def test_bit_flips_in_the_pickle_stream_never_escape_as_raw_errors(tmp_path: Path, good_checkpoint: Path) -> None:
    """Seeded corruptions of ``data.pkl``: each either still loads or fails with CheckpointError."""
    archive = zipfile.ZipFile(good_checkpoint)
    names = archive.namelist()
    stream_name = next(n for n in names if n.endswith("/data.pkl"))
    stream, rng = archive.read(stream_name), np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(40):
        corrupted = bytearray(stream)
        for position in rng.integers(0, len(stream), size=3):
            corrupted[position] = int(rng.integers(0, 256))
        path = tmp_path / f"flipped_{trial}.pt"
        with zipfile.ZipFile(path, "w") as target:
            for name in names:
                target.writestr(name, bytes(corrupted) if name == stream_name else archive.read(name))
        try:
            load_model(path)
            outcomes["loaded"] += 1
        except CheckpointError as error:
            assert str(path) in str(error)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


@pytest.mark.parametrize(
    "name",
    ["hf-hub:apardyl/AdaGlimpse/../../../etc/passwd", "hf-hub:../../models/file.pt", "hf-hub:apardyl/./x.ckpt"],
    ids=["file-traversal", "repo-traversal", "dot-segment"],
)
def test_hub_name_with_path_traversal_is_refused_before_the_hub(
    name: str, good_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("the hub client was reached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_be_called)
    message = r"requires no '\.' or '\.\.' path segments, got"
    with pytest.raises(ValueError, match=message):
        load_model(name, local_files_only=True)
    with pytest.raises(ValueError, match=message):
        gym.make(FOLDER_ID, data_root=str(good_folder), checkpoint=name, num_workers=0)
