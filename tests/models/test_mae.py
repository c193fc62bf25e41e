"""The elastic MAE (original `mae.py`): encoder, decoder, pixel layout, attention rollout, factory sizes and config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaglimpse_env.models import MODEL_SIZES, ElasticMAE, MAEConfig, attention_rollout, create_model
from adaglimpse_env.models.factory import model_config
from adaglimpse_env.models.pos_embed import grid_boxes

ATOL = 1e-5


# ------------------------------------------------------------------------------------------------ helpers
def randomise(model: ElasticMAE, seed: int = 0) -> ElasticMAE:
    """Give LayerScale, LayerNorm and biases O(1) random values so every op matters numerically.

    With the default LayerScale init (1e-4) a wrong attention would move the latent by less than the test
    tolerance, so the comparisons below would prove nothing.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "gamma" in name or name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
            elif name.endswith(".bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            elif name in ("cls_token", "mask_token"):
                param.copy_(torch.randn(param.shape, generator=generator))
    return model.eval()


def tiny(task: str = "reconstruction", **overrides) -> ElasticMAE:
    torch.manual_seed(0)
    options = {"depth": 2, "decoder_depth": 1, **overrides}
    return randomise(create_model("tiny", task, **options))


def random_glimpse_tokens(batch: int, num: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random patches and random square pixel boxes inside 224 x 224."""
    generator = torch.Generator().manual_seed(seed)
    patches = torch.randn(batch, num, 3, 16, 16, generator=generator)
    size = torch.randint(16, 113, (batch, num, 1), generator=generator)
    y = (torch.rand(batch, num, 1, generator=generator) * (224 - size)).floor()
    x = (torch.rand(batch, num, 1, generator=generator) * (224 - size)).floor()
    boxes = torch.cat((y, x, y + size, x + size), dim=-1).float()
    return patches, boxes


def reference_box_embed(dim: int, boxes: torch.Tensor) -> torch.Tensor:
    """2D+ embedding written from the spec: per corner (y1, x1, y2, x2) / 16, ``dim / 4`` sin-cos."""
    quarter = dim // 4
    omega = 10000.0 ** (-torch.arange(quarter // 2, dtype=torch.float32) / (quarter / 2))
    parts = []
    for i in range(4):
        angles = (boxes[..., i].float() / 16)[..., None] * omega
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=-1)


def manual_block(block, x: torch.Tensor, pad_mask: torch.Tensor | None, num_heads: int):
    """A LayerScale block in plain functional ops. Returns ``(x, attention (B, heads, T, T))``."""
    batch, tokens, dim = x.shape
    head_dim = dim // num_heads
    h = F.layer_norm(x, (dim,), block.norm1.weight, block.norm1.bias, eps=1e-6)
    qkv = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias)
    q, k, v = (t.reshape(batch, tokens, num_heads, head_dim).transpose(1, 2) for t in qkv.split(dim, dim=-1))
    logits = (q @ k.transpose(-2, -1)) * head_dim**-0.5
    if pad_mask is not None:
        key_bias = torch.zeros(batch, tokens)
        key_bias[:, 1:] = pad_mask.reshape(batch, tokens - 1).float() * -1e8  # keys 1: only
        logits = logits + key_bias[:, None, None, :]
    attention = logits.softmax(dim=-1)
    out = (attention @ v).transpose(1, 2).reshape(batch, tokens, dim)
    out = F.linear(out, block.attn.proj.weight, block.attn.proj.bias)
    x = x + block.gamma_1 * out
    h = F.layer_norm(x, (dim,), block.norm2.weight, block.norm2.bias, eps=1e-6)
    hidden = F.gelu(F.linear(h, block.mlp.fc1.weight, block.mlp.fc1.bias), approximate="none")
    x = x + block.gamma_2 * F.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)
    return x, attention


def manual_embed(model: ElasticMAE, patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Patch conv + 2D+ pos embed + cls concat: the input of block 0."""
    batch, num = patches.shape[:2]
    dim = model.config.embed_dim
    tokens = F.conv2d(
        patches.reshape(batch * num, 3, 16, 16), model.patch_embed.proj.weight, model.patch_embed.proj.bias
    ).reshape(batch, num, dim)
    tokens = tokens + reference_box_embed(dim, boxes)
    return torch.cat((model.cls_token.expand(batch, 1, dim), tokens), dim=1)


def manual_encoder(model: ElasticMAE, patches, boxes, pad_mask=None):
    """Returns ``(latent, per-block inputs, attentions)``."""
    x = manual_embed(model, patches, boxes)
    inputs, attentions = [], []
    for block in model.blocks:
        inputs.append(x)
        x, attention = manual_block(block, x, pad_mask, model.config.num_heads)
        attentions.append(attention)
    latent = F.layer_norm(x, (x.shape[-1],), model.norm.weight, model.norm.bias, eps=1e-6)
    return latent, inputs, attentions


def image_to_grid_patches(images: torch.Tensor) -> torch.Tensor:
    batch = images.shape[0]
    x = images.reshape(batch, 3, 14, 16, 14, 16).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(batch, 196, 3, 16, 16)


def reference_rollout(attentions: list[torch.Tensor], discard_ratio: float = 0.5) -> torch.Tensor:
    """Straightforward per-image attention rollout, float64 (original `mae.py`)."""
    batch, _, tokens, _ = attentions[0].shape
    out = torch.zeros(batch, tokens - 1, 1, dtype=torch.float64)
    eye = torch.eye(tokens, dtype=torch.float64)
    for b in range(batch):
        rollout = eye.clone()
        for attention in attentions:
            fused = attention[b].double().mean(dim=0)
            flat = fused.reshape(-1).clone()
            num_discard = int(tokens * tokens * discard_ratio)
            smallest = torch.argsort(flat)[:num_discard]
            smallest = smallest[smallest != 0]  # [cls, cls] is always kept
            flat[smallest] = 0
            a = (flat.reshape(tokens, tokens) + eye) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            rollout = a @ rollout
        out[b, :, 0] = torch.softmax(rollout[0, 1:], dim=0)
    return out


def random_attention(batch: int, heads: int, tokens: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(batch, heads, tokens, tokens, generator=generator)).softmax(dim=-1)


# ------------------------------------------------------------------------------------------------ encoder
def test_encoder_with_no_tokens_is_cls_only() -> None:
    model = tiny()
    out = model.forward_encoder(torch.zeros(3, 0, 3, 16, 16), torch.zeros(3, 0, 4), return_attention=True)
    assert out.latent.shape == (3, 1, 192)
    expected = F.layer_norm(model.cls_token, (192,), model.norm.weight, model.norm.bias, eps=1e-6)
    # with only the cls token, attention is trivially 1, so latent = blocks(cls) which we can compute manually
    x = model.cls_token.expand(3, 1, 192)
    for block in model.blocks:
        x, _ = manual_block(block, x, None, 3)
    expected = F.layer_norm(x, (192,), model.norm.weight, model.norm.bias, eps=1e-6)
    torch.testing.assert_close(out.latent, expected, atol=ATOL, rtol=0)
    assert len(out.attentions) == 2
    rollout = attention_rollout(out.attentions)
    assert rollout.shape == (3, 0, 1)


@pytest.mark.parametrize("return_attention", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_encoder_matches_manual_forward(return_attention: bool, with_mask: bool) -> None:
    model = tiny()
    patches, boxes = random_glimpse_tokens(2, 9)
    pad_mask = None
    if with_mask:
        pad_mask = torch.zeros(2, 9, 1)
        pad_mask[0, 5:] = 1
        pad_mask[1, [0, 3]] = 1
    with torch.no_grad():
        out = model.forward_encoder(patches, boxes, pad_mask, return_attention=return_attention)
        expected, _, attentions = manual_encoder(model, patches, boxes, pad_mask)
    assert out.latent.shape == (2, 10, 192)
    assert out.aux_latent is None
    torch.testing.assert_close(out.latent, expected, atol=ATOL, rtol=0)
    if return_attention:
        assert len(out.attentions) == 2
        for got, want in zip(out.attentions, attentions, strict=True):
            assert got.shape == (2, 3, 10, 10)
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        if with_mask:
            # masked keys get exactly zero attention; the cls key never is masked
            assert out.attentions[0][0, :, :, 6:].abs().max() == 0
            assert out.attentions[0][1, :, :, [1, 4]].abs().max() == 0
            assert out.attentions[0][0, :, :, 0].min() > 0
    else:
        assert out.attentions == []


def test_encoder_bool_pad_mask_equals_float_pad_mask() -> None:
    model = tiny()
    patches, boxes = random_glimpse_tokens(2, 6)
    pad_mask = torch.zeros(2, 6, 1)
    pad_mask[:, 4:] = 1
    with torch.no_grad():
        a = model.forward_encoder(patches, boxes, pad_mask).latent
        b = model.forward_encoder(patches, boxes, pad_mask.bool()).latent
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("return_attention", [False, True])
def test_pad_mask_hides_masked_tokens_from_unmasked_ones(return_attention: bool) -> None:
    model = tiny()
    patches, boxes = random_glimpse_tokens(2, 8, seed=2)
    pad_mask = torch.zeros(2, 8, 1)
    pad_mask[0, 6:] = 1
    pad_mask[1, [1, 2, 7]] = 1
    masked = pad_mask[..., 0].bool()
    other_patches, other_boxes = random_glimpse_tokens(2, 8, seed=3)
    patches2 = torch.where(masked[..., None, None, None], other_patches, patches)
    boxes2 = torch.where(masked[..., None], other_boxes, boxes)
    with torch.no_grad():
        a = model.forward_encoder(patches, boxes, pad_mask, return_attention=return_attention).latent
        b = model.forward_encoder(patches2, boxes2, pad_mask, return_attention=return_attention).latent
        unmasked_a = model.forward_encoder(patches, boxes, return_attention=return_attention).latent
        unmasked_b = model.forward_encoder(patches2, boxes2, return_attention=return_attention).latent
    keep = torch.cat((torch.ones(2, 1, dtype=torch.bool), ~masked), dim=1)  # cls + unmasked tokens
    torch.testing.assert_close(a[keep], b[keep], atol=ATOL, rtol=0)
    # sanity: the change is visible without the mask, and masked tokens' own latents change (they are queries)
    assert (unmasked_a[:, 0] - unmasked_b[:, 0]).abs().max() > 1e-3
    assert (a[~keep] - b[~keep]).abs().max() > 1e-3


def test_pad_mask_all_empty_equals_cls_only_for_cls() -> None:
    model = tiny()
    patches, boxes = random_glimpse_tokens(2, 4)
    with torch.no_grad():
        masked = model.forward_encoder(patches, boxes, torch.ones(2, 4, 1)).latent
        empty = model.forward_encoder(torch.zeros(2, 0, 3, 16, 16), torch.zeros(2, 0, 4)).latent
    torch.testing.assert_close(masked[:, :1], empty, atol=ATOL, rtol=0)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_aux_latent_is_input_of_block(layer: int) -> None:
    model = tiny(depth=3)
    patches, boxes = random_glimpse_tokens(2, 5)
    pad_mask = torch.zeros(2, 5, 1)
    pad_mask[1, 3:] = 1
    with torch.no_grad():
        out = model.forward_encoder(patches, boxes, pad_mask, aux_latent_layer=layer)
        _, inputs, _ = manual_encoder(model, patches, boxes, pad_mask)
        x = model.forward_encoder(patches, boxes, pad_mask).latent  # reference final latent unchanged
        # running the library's own blocks up to `layer`
        y = manual_embed(model, patches, boxes)
        for block in model.blocks[:layer]:
            y, _ = block(y, pad_mask)
    assert out.aux_latent is not None
    assert out.aux_latent.shape == (2, 6, 192)
    torch.testing.assert_close(out.aux_latent, inputs[layer], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.aux_latent, y, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.latent, x, atol=0, rtol=0)
    if layer == 0:
        # not normed: the raw embedding
        torch.testing.assert_close(out.aux_latent, manual_embed(model, patches, boxes), atol=ATOL, rtol=0)


@pytest.mark.parametrize("layer", [3, 10, None])
def test_aux_latent_none_when_out_of_range(layer) -> None:
    model = tiny(depth=3)
    patches, boxes = random_glimpse_tokens(1, 2)
    assert model.forward_encoder(patches, boxes, aux_latent_layer=layer).aux_latent is None


def test_encoder_requires_boxes_for_patches() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="boxes"):
        model.forward_encoder(torch.zeros(1, 2, 3, 16, 16))


def test_full_image_uses_grid_pos_embed_and_equals_patch_path() -> None:
    model = tiny()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    grid_patches = image_to_grid_patches(images)
    boxes = grid_boxes((14, 14), 16)[None].expand(2, -1, -1)
    with torch.no_grad():
        full = model.forward_encoder(images, return_attention=True)
        patched = model.forward_encoder(grid_patches, boxes, return_attention=True)
        expected, _, _ = manual_encoder(model, grid_patches, boxes)
        # block-0 input of the full-image path uses the pos_embed buffer
        aux = model.forward_encoder(images, aux_latent_layer=0).aux_latent
        tokens = model.patch_embed.proj(images).flatten(2).transpose(1, 2) + model.pos_embed
    assert full.latent.shape == (2, 197, 192)
    torch.testing.assert_close(full.latent, patched.latent, atol=ATOL, rtol=0)
    torch.testing.assert_close(full.latent, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(aux[:, 1:], tokens, atol=ATOL, rtol=0)
    torch.testing.assert_close(aux[:, 0], model.cls_token[:, 0].expand(2, -1), atol=0, rtol=0)
    assert not model.pos_embed.requires_grad
    assert "pos_embed" not in dict(model.named_parameters())


def test_fixed_position_buffers_match_spec() -> None:
    model = tiny()
    boxes = grid_boxes((14, 14), 16).float()
    assert model.pos_embed.shape == (1, 196, 192)
    torch.testing.assert_close(model.pos_embed[0], reference_box_embed(192, boxes), atol=1e-6, rtol=0)
    decoder = model.decoder_pos_embed[0]
    assert decoder.shape == (197, 128)
    assert torch.count_nonzero(decoder[0]) == 0
    ys, xs = (t.double() for t in torch.meshgrid(torch.arange(14), torch.arange(14), indexing="ij"))
    omega = 10000.0 ** (-torch.arange(32, dtype=torch.float64) / 32)
    xa, ya = xs.reshape(-1, 1) * omega, ys.reshape(-1, 1) * omega
    expected = torch.cat((xa.sin(), xa.cos(), ya.sin(), ya.cos()), dim=1).float()  # x first, then y
    torch.testing.assert_close(decoder[1:], expected, atol=1e-6, rtol=0)


def test_forward_head_reads_cls_token() -> None:
    model = tiny("classification")
    latent = torch.randn(2, 5, 192)
    logits = model.forward_head(latent)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, F.linear(latent[:, 0], model.head.weight, model.head.bias))


# ------------------------------------------------------------------------------------------------ decoder
def manual_decoder_tokens(model: ElasticMAE, latent: torch.Tensor) -> torch.Tensor:
    """decoder_embed, mask-token queries + decoder pos embed, blocks (no mask), norm, keep the queries."""
    cfg = model.config
    x = F.linear(latent, model.decoder_embed.weight, model.decoder_embed.bias)
    grid = cfg.grid_size[0] * cfg.grid_size[1]
    queries = model.mask_token.expand(latent.shape[0], grid, -1) + model.decoder_pos_embed[:, 1:]
    x = torch.cat((x, queries), dim=1)
    for block in model.decoder_blocks:
        x, _ = manual_block(block, x, None, cfg.decoder_num_heads)
    x = F.layer_norm(x, (x.shape[-1],), model.decoder_norm.weight, model.decoder_norm.bias, eps=1e-6)
    return x[:, latent.shape[1] :]


@pytest.mark.parametrize("num_tokens", [0, 7])
def test_standard_decoder_matches_manual(num_tokens: int) -> None:
    model = tiny(decoder_depth=2)
    patches, boxes = random_glimpse_tokens(2, num_tokens)
    with torch.no_grad():
        latent = model.forward_encoder(patches, boxes).latent
        out = model.forward_decoder(latent)
        tokens = manual_decoder_tokens(model, latent)
        expected = F.linear(tokens, model.decoder_pred.weight, model.decoder_pred.bias)
    assert out.shape == (2, 196, 768)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_decoder_does_not_mask_padded_tokens() -> None:
    # padded tokens are NOT masked in the decoder (original `mae.py`): their latents influence the prediction
    model = tiny()
    latent = torch.randn(1, 4, 192)
    other = latent.clone()
    other[:, 3] += 1.0
    with torch.no_grad():
        assert (model.forward_decoder(latent) - model.forward_decoder(other)).abs().max() > 1e-4


def test_segment_decoder_shape() -> None:
    model = tiny("segmentation", num_segmentation_classes=5)
    assert model.config.out_chans == 5
    with torch.no_grad():
        out = model.forward_decoder(torch.randn(1, 3, 192, generator=torch.Generator().manual_seed(5)))
    assert out.shape == (1, 5, 224, 224)


def test_segment_decoder_matches_manual() -> None:
    model = tiny("segmentation", num_segmentation_classes=4, img_size=(32, 48), decoder_depth=2)
    assert model.decoder_pos_embed.shape == (1, 7, 128)
    latent = torch.randn(2, 3, 192, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model.forward_decoder(latent)
        expected = model.decoder_segment(manual_decoder_tokens(model, latent))
    assert out.shape == (2, 4, 32, 48)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_segment_head_small_grid_manual() -> None:
    # the up-head: tokens (row-major) -> (Dd, rows, cols) -> 4 x (conv, BN, GELU, up x2) ... -> 1x1 conv
    model = tiny("segmentation", num_segmentation_classes=4, img_size=(32, 48))
    head = model.decoder_segment.eval()
    with torch.no_grad():
        for module in head.conv_head:
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
        tokens = torch.randn(2, 6, 128)
        x = tokens.transpose(1, 2).reshape(2, 128, 2, 3)
        layers = list(head.conv_head)
        convs = [layers[i] for i in (0, 4, 8, 12, 16)]
        bns = [layers[i] for i in (1, 5, 9, 13, 17)]
        for i in range(5):
            x = F.conv2d(x, convs[i].weight, convs[i].bias, padding=1)
            bn = bns[i]
            x = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
            x = x * bn.weight[:, None, None] + bn.bias[:, None, None]
            x = F.gelu(x)
            if i < 4:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        expected = F.conv2d(x, layers[19].weight, layers[19].bias)
        got = head(tokens)
    assert got.shape == (2, 4, 32, 48)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)


def test_classification_model_has_no_decoder() -> None:
    model = tiny("classification")
    with pytest.raises(RuntimeError, match="decoder"):
        model.forward_decoder(torch.randn(1, 1, 192))


# ------------------------------------------------------------------------------------------------ pixels
def test_patchify_layout_and_round_trip() -> None:
    model = tiny()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    tokens = model.patchify(images)
    assert tokens.shape == (2, 196, 768)
    # token index h * 14 + w; within a token (row p, col q, channel c), channel fastest
    b, h, w, p, q, c = 1, 2, 5, 3, 7, 1
    assert tokens[b, h * 14 + w, (p * 16 + q) * 3 + c] == images[b, c, 16 * h + p, 16 * w + q]
    for b, h, w, p, q, c in [(0, 0, 0, 0, 0, 0), (0, 13, 13, 15, 15, 2), (1, 7, 0, 0, 15, 2), (0, 0, 9, 12, 1, 0)]:
        assert tokens[b, h * 14 + w, (p * 16 + q) * 3 + c] == images[b, c, 16 * h + p, 16 * w + q]
    # whole token h, w equals the patch permuted to (p, q, c)
    expected = images[0, :, 32:48, 80:96].permute(1, 2, 0).reshape(-1)
    assert torch.equal(tokens[0, 2 * 14 + 5], expected)
    assert torch.equal(model.unpatchify(tokens), images)
    assert torch.equal(model.patchify(model.unpatchify(tokens)), tokens)


def test_patchify_non_square_and_other_channels() -> None:
    model = tiny("segmentation", num_segmentation_classes=4, img_size=(32, 48))
    images = torch.randn(1, 3, 32, 48)
    tokens = model.patchify(images)
    assert tokens.shape == (1, 6, 768)
    assert tokens[0, 1 * 3 + 2, (4 * 16 + 9) * 3 + 2] == images[0, 2, 16 + 4, 32 + 9]
    assert torch.equal(model.unpatchify(tokens), images)
    one_channel = torch.randn(1, 6, 256)
    assert model.unpatchify(one_channel).shape == (1, 1, 32, 48)


# ------------------------------------------------------------------------------------------------ rollout
@pytest.mark.parametrize(("tokens", "layers"), [(2, 1), (5, 3), (10, 2), (17, 4)])
def test_attention_rollout_matches_reference(tokens: int, layers: int) -> None:
    attentions = [random_attention(3, 4, tokens, seed=10 * tokens + i) for i in range(layers)]
    got = attention_rollout(attentions)
    assert got.shape == (3, tokens - 1, 1)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(3, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(got.double(), reference_rollout(attentions), atol=1e-6, rtol=0)


def test_attention_rollout_keeps_cls_cls_entry() -> None:
    # make [cls, cls] among the smallest entries of every image: it is kept (not zeroed) and only the other
    # selected entries are discarded, so one fewer entry than int(T*T*0.5) is dropped
    attentions = [random_attention(2, 3, 6, seed=40 + i) for i in range(3)]
    for attention in attentions:
        attention[:, :, 0, 0] = 1e-9
    torch.testing.assert_close(attention_rollout(attentions).double(), reference_rollout(attentions), atol=1e-6, rtol=0)


def test_attention_rollout_per_image_independent() -> None:
    attentions = [random_attention(4, 2, 7, seed=50 + i) for i in range(2)]
    whole = attention_rollout(attentions)
    for b in range(4):
        single = attention_rollout([a[b : b + 1] for a in attentions])
        torch.testing.assert_close(whole[b : b + 1], single, atol=1e-7, rtol=0)


def test_attention_rollout_from_encoder() -> None:
    model = tiny()
    patches, boxes = random_glimpse_tokens(2, 8)
    with torch.no_grad():
        out = model.forward_encoder(patches, boxes, return_attention=True)
    rollout = attention_rollout(out.attentions)
    assert rollout.shape == (2, 8, 1)
    torch.testing.assert_close(rollout.sum(dim=1), torch.ones(2, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(rollout.double(), reference_rollout(out.attentions), atol=1e-6, rtol=0)
    assert (rollout > 0).all()


# ------------------------------------------------------------------------------------------------ factory
def base_state_dict_spec(decoder: str, classes: int = 3) -> dict[str, tuple[int, ...]]:
    """The original's `mae.py` names and shapes for the 'base' MAE."""
    spec: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, 768),
        "pos_embed": (1, 196, 768),
        "patch_embed.proj.weight": (768, 3, 16, 16),
        "patch_embed.proj.bias": (768,),
        "norm.weight": (768,),
        "norm.bias": (768,),
        "head.weight": (1000, 768),
        "head.bias": (1000,),
    }

    def blocks(prefix: str, count: int, dim: int) -> None:
        for i in range(count):
            p = f"{prefix}.{i}."
            for name in ("gamma_1", "gamma_2", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
                spec[p + name] = (dim,)
            spec[p + "attn.qkv.weight"] = (3 * dim, dim)
            spec[p + "attn.qkv.bias"] = (3 * dim,)
            spec[p + "attn.proj.weight"] = (dim, dim)
            spec[p + "attn.proj.bias"] = (dim,)
            spec[p + "mlp.fc1.weight"] = (4 * dim, dim)
            spec[p + "mlp.fc1.bias"] = (4 * dim,)
            spec[p + "mlp.fc2.weight"] = (dim, 4 * dim)
            spec[p + "mlp.fc2.bias"] = (dim,)

    blocks("blocks", 12, 768)
    if decoder == "none":
        return spec
    spec.update(
        {
            "mask_token": (1, 1, 512),
            "decoder_pos_embed": (1, 197, 512),
            "decoder_embed.weight": (512, 768),
            "decoder_embed.bias": (512,),
            "decoder_norm.weight": (512,),
            "decoder_norm.bias": (512,),
        }
    )
    blocks("decoder_blocks", 8, 512)
    if decoder == "standard":
        spec["decoder_pred.weight"] = (768, 512)
        spec["decoder_pred.bias"] = (768,)
    else:
        convs = {0: (512, 512, 3, 3), 4: (256, 512, 3, 3), 8: (256, 256, 3, 3), 12: (256, 256, 3, 3)}
        convs[16] = (256, 256, 3, 3)
        convs[19] = (classes, 256, 1, 1)
        for index, shape in convs.items():
            spec[f"decoder_segment.conv_head.{index}.weight"] = shape
            spec[f"decoder_segment.conv_head.{index}.bias"] = (shape[0],)
        for index, width in {1: 512, 5: 256, 9: 256, 13: 256, 17: 256}.items():
            for name in ("weight", "bias", "running_mean", "running_var"):
                spec[f"decoder_segment.conv_head.{index}.{name}"] = (width,)
            spec[f"decoder_segment.conv_head.{index}.num_batches_tracked"] = ()
    return spec


def meta_model(size: str, task: str, **kwargs) -> ElasticMAE:
    with torch.device("meta"):
        return create_model(size, task, **kwargs)


def test_base_reconstruction_state_dict_matches_spec() -> None:
    state = meta_model("base", "reconstruction").state_dict()
    assert len(state) == 296
    assert sum(v.numel() for v in state.values()) == 112_702_696
    assert {k: tuple(v.shape) for k, v in state.items()} == base_state_dict_spec("standard")


def test_base_classification_state_dict_has_no_decoder() -> None:
    state = meta_model("base", "classification").state_dict()
    assert not [k for k in state if k.startswith(("decoder", "mask_token"))]
    assert {k: tuple(v.shape) for k, v in state.items()} == base_state_dict_spec("none")


def test_base_segmentation_state_dict() -> None:
    state = meta_model("base", "segmentation", num_segmentation_classes=21).state_dict()
    assert "decoder_pred.weight" not in state
    assert {k: tuple(v.shape) for k, v in state.items()} == base_state_dict_spec("segment", 21)
    default = meta_model("base", "segmentation").state_dict()
    assert default["decoder_segment.conv_head.19.weight"].shape == (150, 256, 1, 1)


def test_model_sizes_match_spec_table() -> None:
    table = {
        "small": (384, 12, 6, 256, 8, 16),
        "base": (768, 12, 12, 512, 8, 16),
        "large": (1024, 24, 16, 512, 8, 16),
    }
    for size, widths in table.items():
        cfg = MODEL_SIZES[size]
        got = (
            cfg.embed_dim,
            cfg.depth,
            cfg.num_heads,
            cfg.decoder_embed_dim,
            cfg.decoder_depth,
            cfg.decoder_num_heads,
        )
        assert got == widths, size
        assert (cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.mlp_ratio, cfg.num_classes) == (
            (224, 224),
            16,
            3,
            4.0,
            1000,
        )


def test_model_config_tasks_and_overrides() -> None:
    assert model_config("base", "reconstruction").decoder_type == "standard"
    assert model_config("base", "reconstruction").out_chans == 3
    assert model_config("base", "classification").decoder_type == "none"
    seg = model_config("small", "segmentation", num_segmentation_classes=21)
    assert (seg.decoder_type, seg.out_chans, seg.embed_dim) == ("segment", 21, 384)
    assert model_config("tiny", "reconstruction", depth=2).depth == 2
    with pytest.raises(ValueError, match="size"):
        model_config("huge")
    with pytest.raises(ValueError, match="task"):
        model_config("base", "detection")


def test_model_structure_from_config() -> None:
    model = tiny(depth=3, decoder_depth=2)
    assert len(model.blocks) == 3
    assert len(model.decoder_blocks) == 2
    assert model.blocks[0].attn.num_heads == 3
    assert model.blocks[0].attn.scale == pytest.approx(64**-0.5)
    assert model.blocks[0].mlp.fc1.out_features == 768
    assert model.blocks[0].norm1.eps == 1e-6
    fresh = create_model("tiny", "reconstruction", depth=1, decoder_depth=1)
    torch.testing.assert_close(fresh.blocks[0].gamma_1.detach(), torch.full((192,), 1e-4))
    assert not fresh.decoder_pos_embed.requires_grad
    torch.testing.assert_close(fresh.decoder_embed.bias.detach(), torch.zeros(128))


# ------------------------------------------------------------------------------------------------ config
def test_config_validation_errors() -> None:
    with pytest.raises(ValueError, match="img_size"):
        MAEConfig(img_size=(200, 224))
    with pytest.raises(ValueError, match="img_size"):
        MAEConfig(img_size=(224, 230))
    with pytest.raises(ValueError, match="decoder_type"):
        MAEConfig(decoder_type="fancy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_heads"):
        MAEConfig(embed_dim=768, num_heads=5)


def test_config_dict_round_trip() -> None:
    for cfg in (
        MAEConfig(),
        model_config("tiny", "segmentation", num_segmentation_classes=7, img_size=(32, 48), depth=2),
        model_config("large", "classification"),
    ):
        data = cfg.to_dict()
        assert isinstance(data["img_size"], list)
        assert MAEConfig.from_dict(data) == cfg
        assert MAEConfig.from_dict(data).img_size == tuple(cfg.img_size)
    assert MAEConfig(img_size=[32, 32]).img_size == (32, 32)  # type: ignore[arg-type]
    assert MAEConfig(img_size=(32, 48)).grid_size == (2, 3)
    with pytest.raises(ValueError, match="unknown"):
        MAEConfig.from_dict({**MAEConfig().to_dict(), "new_field": 1})


def test_config_dict_survives_weights_only_load(tmp_path) -> None:
    path = tmp_path / "cfg.pt"
    cfg = model_config("tiny", "segmentation", num_segmentation_classes=7)
    torch.save(cfg.to_dict(), path)
    assert MAEConfig.from_dict(torch.load(path, weights_only=True)) == cfg


def test_math_sanity_of_reference_embed() -> None:
    # the test's own 2D+ reference reproduces the spec's formula for one coordinate
    emb = reference_box_embed(32, torch.tensor([[16.0, 0.0, 0.0, 0.0]]))
    assert emb[0, 0].item() == pytest.approx(math.sin(1.0), abs=1e-7)
    assert emb[0, 4].item() == pytest.approx(math.cos(1.0), abs=1e-7)
    np.testing.assert_allclose(emb[0, 8:].numpy()[:4], 0.0)


def test_padded_batch_equals_each_image_alone() -> None:
    # Envs at different glimpse counts share one forward: padding must change nothing (encoder latent of the
    # valid tokens, rollout over the valid tokens only, decoder with its key mask).
    model = tiny()
    counts = torch.tensor([12, 7, 0, 3])
    longest = int(counts.max())
    patches, boxes = random_glimpse_tokens(len(counts), longest, seed=5)
    pad_mask = (torch.arange(longest)[None] >= counts[:, None]).float()[..., None]
    with torch.no_grad():
        batch = model.forward_encoder(patches, boxes, pad_mask, return_attention=True)
        importance = attention_rollout(batch.attentions, num_valid=counts)
        prediction = model.forward_decoder(batch.latent, pad_mask)
        for b, n in enumerate(counts.tolist()):
            alone = model.forward_encoder(patches[b : b + 1, :n], boxes[b : b + 1, :n], return_attention=True)
            torch.testing.assert_close(batch.latent[b : b + 1, : n + 1], alone.latent, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                importance[b : b + 1, :n], attention_rollout(alone.attentions), rtol=1e-5, atol=1e-6
            )
            assert torch.all(importance[b, n:] == 0)
            torch.testing.assert_close(prediction[b : b + 1], model.forward_decoder(alone.latent), rtol=1e-5, atol=1e-5)
    assert torch.allclose(importance.sum(dim=(1, 2))[counts > 0], torch.ones(3))


def test_rollout_num_valid_for_full_batch_equals_default() -> None:
    attentions = [random_attention(2, 3, 9, seed=s) for s in range(3)]
    default = attention_rollout(attentions)
    explicit = attention_rollout(attentions, num_valid=torch.tensor([8, 8]))
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
