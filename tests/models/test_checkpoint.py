"""Checkpoint loading: the original layouts (original Lightning checkpoints; original `mae.py`), our own format, and
every way a file can be wrong."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adaglimpse_env.models import (
    CheckpointError,
    CheckpointNotFoundError,
    create_model,
    load_model,
    save_model,
)
from adaglimpse_env.models.checkpoint import extract_mae_state_dict
from adaglimpse_env.models.pos_embed import box_sincos_embed, decoder_sincos_embed, grid_sincos_embed
from adaglimpse_env.models.torch_files import atomic_torch_save

# Tiny original-format dimensions. 192 is in the known width->heads table (3 heads); the original decoder
# always has 16 heads, so the decoder width must be a multiple of 16.
D, DEPTH, DD, DDEPTH, CLASSES = 192, 2, 128, 1, 1000


def original_state_dict(decoder_type: str = "standard", seg_classes: int = 5, seed: int = 0) -> dict:
    """A state dict with exactly the original's names and shapes (original `mae.py`), written out by hand."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.05

    sd: dict[str, torch.Tensor] = {
        "cls_token": rand(1, 1, D),
        "pos_embed": grid_sincos_embed(D, (14, 14)),
        "patch_embed.proj.weight": rand(D, 3, 16, 16),
        "patch_embed.proj.bias": rand(D),
    }

    def block(prefix: str, width: int) -> None:
        sd[f"{prefix}.gamma_1"] = rand(width) + 0.5
        sd[f"{prefix}.gamma_2"] = rand(width) + 0.5
        sd[f"{prefix}.norm1.weight"] = 1 + rand(width)
        sd[f"{prefix}.norm1.bias"] = rand(width)
        sd[f"{prefix}.attn.qkv.weight"] = rand(3 * width, width)
        sd[f"{prefix}.attn.qkv.bias"] = rand(3 * width)
        sd[f"{prefix}.attn.proj.weight"] = rand(width, width)
        sd[f"{prefix}.attn.proj.bias"] = rand(width)
        sd[f"{prefix}.norm2.weight"] = 1 + rand(width)
        sd[f"{prefix}.norm2.bias"] = rand(width)
        sd[f"{prefix}.mlp.fc1.weight"] = rand(4 * width, width)
        sd[f"{prefix}.mlp.fc1.bias"] = rand(4 * width)
        sd[f"{prefix}.mlp.fc2.weight"] = rand(width, 4 * width)
        sd[f"{prefix}.mlp.fc2.bias"] = rand(width)

    for i in range(DEPTH):
        block(f"blocks.{i}", D)
    sd["norm.weight"], sd["norm.bias"] = 1 + rand(D), rand(D)
    if decoder_type != "none":
        sd["mask_token"] = rand(1, 1, DD)
        sd["decoder_pos_embed"] = decoder_sincos_embed(DD, (14, 14))
        sd["decoder_embed.weight"], sd["decoder_embed.bias"] = rand(DD, D), rand(DD)
        for i in range(DDEPTH):
            block(f"decoder_blocks.{i}", DD)
        sd["decoder_norm.weight"], sd["decoder_norm.bias"] = 1 + rand(DD), rand(DD)
        if decoder_type == "standard":
            sd["decoder_pred.weight"], sd["decoder_pred.bias"] = rand(768, DD), rand(768)
        else:
            widths = [(DD, DD), (256, DD), (256, 256), (256, 256), (256, 256)]
            for conv_index, (out_c, in_c) in zip((0, 4, 8, 12, 16), widths, strict=True):
                sd[f"decoder_segment.conv_head.{conv_index}.weight"] = rand(out_c, in_c, 3, 3)
                sd[f"decoder_segment.conv_head.{conv_index}.bias"] = rand(out_c)
                bn = conv_index + 1
                sd[f"decoder_segment.conv_head.{bn}.weight"] = 1 + rand(out_c)
                sd[f"decoder_segment.conv_head.{bn}.bias"] = rand(out_c)
                sd[f"decoder_segment.conv_head.{bn}.running_mean"] = rand(out_c)
                sd[f"decoder_segment.conv_head.{bn}.running_var"] = 1 + rand(out_c).abs()
                sd[f"decoder_segment.conv_head.{bn}.num_batches_tracked"] = torch.tensor(7)
            sd["decoder_segment.conv_head.19.weight"] = rand(seg_classes, 256, 1, 1)
            sd["decoder_segment.conv_head.19.bias"] = rand(seg_classes)
    sd["head.weight"], sd["head.bias"] = rand(CLASSES, D), rand(CLASSES)
    return sd


def manual_encoder(sd: dict, patches: torch.Tensor, boxes: torch.Tensor, heads: int = 3) -> torch.Tensor:
    """The original's `mae.py` encoder written directly on the raw state dict (no pad mask)."""
    batch, num = patches.shape[:2]
    x = F.conv2d(patches.reshape(batch * num, 3, 16, 16), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])
    x = x.reshape(batch, num, D) + box_sincos_embed(D, boxes)
    x = torch.cat((sd["cls_token"].expand(batch, 1, D), x), dim=1)
    for i in range(DEPTH):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).chunk(3, dim=-1)
        split = [t.reshape(batch, -1, heads, D // heads).transpose(1, 2) for t in (q, k, v)]
        att = (split[0] @ split[1].transpose(-1, -2) / math.sqrt(D // heads)).softmax(-1)
        att = (att @ split[2]).transpose(1, 2).reshape(batch, -1, D)
        x = x + sd[p + "gamma_1"] * F.linear(att, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"])
        x = x + sd[p + "gamma_2"] * (h + sd[p + "mlp.fc2.bias"])
    return F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)


def random_tokens(batch: int = 2, num: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    patches = torch.randn(batch, num, 3, 16, 16, generator=gen)
    corner = torch.randint(0, 180, (batch, num, 2), generator=gen)
    side = torch.randint(16, 44, (batch, num, 1), generator=gen)
    return patches, torch.cat((corner, corner + side), dim=-1)


def lightning_checkpoint(sd: dict) -> dict:
    """The trained-model layout of original Lightning checkpoints: MAE under mae._orig_mod., plus agent and Lightning
    bookkeeping."""
    state = {f"mae._orig_mod.{k}": v for k, v in sd.items()}
    state["actor_critic.actor_net.head.2.weight"] = torch.zeros(6, 256)
    state["rl_loss_module.log_alpha"] = torch.zeros(())
    return {
        "state_dict": state,
        "epoch": 3,
        "global_step": 1000,
        "pytorch-lightning_version": "2.2.0.post0",
        "hyper_parameters": {"num_glimpses": 12, "lr": 1e-3},
    }


@pytest.mark.parametrize(
    ("wrap", "expected_format"),
    [
        (lambda sd: sd, "state-dict"),
        (lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, "state-dict"),
        (lambda sd: {"model": sd}, "model-dict"),
        (lightning_checkpoint, "lightning"),
    ],
)
def test_original_layouts_load_cleanly_and_match_manual_forward(tmp_path: Path, wrap, expected_format: str) -> None:
    sd = original_state_dict("standard")
    path = tmp_path / "original.pth"
    torch.save(wrap(sd), path)
    loaded = load_model(path)
    assert loaded.source_format == expected_format
    assert loaded.task == "reconstruction"
    model_sd = loaded.model.state_dict()
    assert set(model_sd) == set(sd)  # no missing, no unexpected keys
    for key, value in sd.items():
        torch.testing.assert_close(model_sd[key], value, rtol=0, atol=0)

    patches, boxes = random_tokens()
    with torch.no_grad():
        ours = loaded.model.forward_encoder(patches, boxes).latent
        logits = loaded.model.forward_head(ours)
    expected = manual_encoder(sd, patches, boxes)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        logits, F.linear(expected[:, 0], sd["head.weight"], sd["head.bias"]), rtol=1e-5, atol=1e-5
    )


def test_original_file_without_fixed_buffers_loads(tmp_path: Path) -> None:
    # The original deletes pos_embed on elastic loading (original `load_pretrained_elastic`): we recompute both sin-cos
    # buffers.
    sd = original_state_dict("standard")
    del sd["pos_embed"], sd["decoder_pos_embed"]
    torch.save({"model": sd}, tmp_path / "elastic.pth")
    model = load_model(tmp_path / "elastic.pth").model
    torch.testing.assert_close(model.pos_embed, grid_sincos_embed(D, (14, 14)))


@pytest.mark.parametrize(("decoder_type", "task"), [("none", "classification"), ("segment", "segmentation")])
def test_task_variants_are_inferred(tmp_path: Path, decoder_type: str, task: str) -> None:
    sd = original_state_dict(decoder_type, seg_classes=5)
    torch.save(lightning_checkpoint(sd), tmp_path / "ckpt.ckpt")
    loaded = load_model(tmp_path / "ckpt.ckpt")
    assert loaded.task == task
    assert loaded.model.config.decoder_type == decoder_type
    assert set(loaded.model.state_dict()) == set(sd)
    if decoder_type == "segment":
        assert loaded.model.config.out_chans == 5


def test_our_checkpoint_round_trip_with_metadata(tmp_path: Path) -> None:
    model = create_model("tiny", "segmentation", num_segmentation_classes=4, depth=1, decoder_depth=1)
    path = tmp_path / "ours.pt"
    save_model(path, model, "segmentation", metadata={"command": "pretrain --x", "step": 12})
    loaded = load_model(path)
    assert loaded.source_format == "adaglimpse-env"
    assert loaded.task == "segmentation"
    assert loaded.model.config == model.config
    assert loaded.metadata == {"command": "pretrain --x", "step": 12}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)


def test_fp16_storage_loads_into_float32(tmp_path: Path) -> None:
    model = create_model("tiny", "reconstruction", depth=1, decoder_depth=1)
    save_model(tmp_path / "half.pt", model, "reconstruction", dtype=torch.float16)
    loaded = load_model(tmp_path / "half.pt").model
    assert loaded.cls_token.dtype == torch.float32
    torch.testing.assert_close(loaded.cls_token, model.cls_token.detach().half().float())


def test_shape_mismatch_names_offending_keys(tmp_path: Path) -> None:
    sd = original_state_dict("standard")
    sd["blocks.1.mlp.fc1.weight"] = torch.zeros(10, D)
    sd["surprise.weight"] = torch.zeros(1)
    del sd["blocks.0.gamma_1"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "bad.pth")
    message = str(info.value)
    assert "blocks.1.mlp.fc1.weight: expected (768, 192), got (10, 192)" in message
    assert "unexpected: surprise.weight" in message
    assert "missing: blocks.0.gamma_1" in message


def test_checkpoint_of_other_architecture_is_refused_for_fixed_config(tmp_path: Path) -> None:
    # Unknown heads for an unknown width: the error says to pass num_heads.
    sd = original_state_dict("none")
    sd = {k: (v[..., :96] if k == "cls_token" else v) for k, v in sd.items()}
    torch.save(sd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="num_heads"):
        load_model(tmp_path / "odd.pth")


def test_wrong_task_is_refused(tmp_path: Path) -> None:
    torch.save({"model": original_state_dict("none")}, tmp_path / "cls.pth")
    with pytest.raises(CheckpointError, match=r"task='reconstruction' requires .*decoder_type='standard'"):
        load_model(tmp_path / "cls.pth", task="reconstruction")
    model = create_model("tiny", "reconstruction", depth=1, decoder_depth=1)
    save_model(tmp_path / "rec.pt", model, "reconstruction")
    with pytest.raises(CheckpointError, match="trained for task='reconstruction'"):
        load_model(tmp_path / "rec.pt", task="classification")
    # An original reconstruction file also has a 1000-way head, but it was never trained: refused for
    # classification, or its noise would drive the rewards.
    torch.save({"model": original_state_dict("standard")}, tmp_path / "rec.pth")
    with pytest.raises(CheckpointError, match=r"task='classification' requires .*decoder_type='none'"):
        load_model(tmp_path / "rec.pth", task="classification")


class Payload:
    """Any class: weights-only loading must refuse to rebuild it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"model": original_state_dict("none"), "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_model(tmp_path / "evil.pth")
    assert "this must never run" not in capsys.readouterr().out


def test_truncated_and_garbage_files_give_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(original_state_dict("none"), good)
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    for name in ("truncated.pth", "empty.pth", "text.pth"):
        with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch checkpoint"):
            load_model(tmp_path / name)


def test_unrecognised_layouts(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="requires a dict"):
        extract_mae_state_dict([1, 2])
    with pytest.raises(CheckpointError, match=r"MAE weights under 'mae\.'"):
        extract_mae_state_dict({"state_dict": {"actor_critic.x": torch.zeros(1)}})
    torch.save({"weights": {"a": 1}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="Unrecognised checkpoint layout"):
        load_model(tmp_path / "odd.pth")


def test_missing_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.pth")
    with pytest.raises(CheckpointNotFoundError, match="is a directory"):
        load_model(tmp_path)


def fake_hub_cache(root: Path, repo_id: str, filename: str, payload: dict) -> Path:
    """Lay out a Hugging Face hub cache folder holding one file, as hf_hub_download leaves it."""
    repo_dir = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    target = repo_dir / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    torch.save(payload, target)
    return target


def test_hub_name_resolves_from_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    fake_hub_cache(tmp_path, "apardyl/AdaGlimpse", "models/rec.ckpt", lightning_checkpoint(original_state_dict()))
    loaded = load_model("hf-hub:apardyl/AdaGlimpse/models/rec.ckpt", local_files_only=True)
    assert loaded.source_format == "lightning"

    with pytest.raises(CheckpointNotFoundError) as info:
        load_model("hf-hub:apardyl/AdaGlimpse/other.ckpt", local_files_only=True)
    message = str(info.value)
    assert "huggingface-cli download apardyl/AdaGlimpse other.ckpt" in message
    assert str(tmp_path) in message


def test_bad_hub_name() -> None:
    with pytest.raises(ValueError, match="hf-hub:<owner>/<repo>/<file>"):
        load_model("hf-hub:apardyl/AdaGlimpse")


def test_atomic_save_leaves_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind
