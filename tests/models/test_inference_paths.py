"""The model's inference shortcuts give the reference forward's numbers (original `mae.py` is the reference).

Shortcuts: tokens embedded once per glimpse (:meth:`ElasticMAE.embed_tokens` + :meth:`ElasticMAE.encode_tokens`),
decoder constants computed once (:meth:`ElasticMAE.decoder_constants`), and a last decoder block that computes
only the query rows. They reorder no arithmetic inside a row, but matrix products over a different number of
rows may round differently in the last bit, so the tolerance is 1e-6 relative to the output's magnitude.
Two more are exact: the rollout's selection of the smallest entries, and scores from cached image pixels.
"""

from __future__ import annotations

import pytest
import torch
from test_mae import random_glimpse_tokens, tiny
from tiny_models import SEGMENTATION_IMG_SIZE

from adaglimpse_env.models import ReconstructionHead, attention_rollout
from adaglimpse_env.models.blocks import LayerScaleBlock
from adaglimpse_env.normalization import to_pixels

RTOL = 1e-6


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    """``max |actual - expected| <= rtol * max |expected|``: last-bit differences, nothing more."""
    assert actual.shape == expected.shape
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    error = float((actual - expected).abs().max()) if expected.numel() else 0.0
    assert error <= rtol * max(scale, 1e-30), f"max error {error:.3g} > {rtol} x max |expected| {scale:.3g}"


@pytest.mark.parametrize("num_tokens", [0, 4, 12])
@pytest.mark.parametrize("with_mask", [False, True])
def test_tokens_embedded_per_glimpse_give_the_encoder_output(num_tokens: int, with_mask: bool) -> None:
    model = tiny()
    patches, boxes = random_glimpse_tokens(3, num_tokens, seed=2)
    pad_mask = None
    if with_mask and num_tokens:
        pad_mask = torch.zeros(3, num_tokens, 1)
        pad_mask[1, num_tokens // 2 :] = 1.0
    with torch.no_grad():
        reference = model.forward_encoder(patches, boxes, pad_mask, aux_latent_layer=1, return_attention=True)
        chunks = [model.embed_tokens(patches[:, i : i + 4], boxes[:, i : i + 4]) for i in range(0, num_tokens, 4)]
        tokens = torch.cat(chunks, dim=1) if chunks else patches.new_zeros(3, 0, model.config.embed_dim)
        staged = model.encode_tokens(tokens, pad_mask, aux_latent_layer=1, return_attention=True)
    assert_close_relative(staged.latent, reference.latent)
    assert staged.aux_latent is not None and reference.aux_latent is not None
    assert_close_relative(staged.aux_latent, reference.aux_latent)
    for ours, theirs in zip(staged.attentions, reference.attentions, strict=True):
        assert_close_relative(ours, theirs)


@pytest.mark.parametrize("task", ["reconstruction", "segmentation"])
@pytest.mark.parametrize("decoder_depth", [1, 3])
@pytest.mark.parametrize("num_tokens", [0, 8])
def test_decoder_constants_give_the_reference_decoder(task: str, decoder_depth: int, num_tokens: int) -> None:
    # Segmentation on small images (SEGMENTATION_IMG_SIZE). The tokens' boxes, drawn inside 224 x 224, may lie
    # outside the image: both paths get the same tokens, and the box embedding takes any coordinates.
    overrides = {"img_size": SEGMENTATION_IMG_SIZE} if task == "segmentation" else {}
    model = tiny(task, decoder_depth=decoder_depth, num_segmentation_classes=5, **overrides)
    patches, boxes = random_glimpse_tokens(3, num_tokens, seed=3)
    pad_mask = None
    if num_tokens:
        pad_mask = torch.zeros(3, num_tokens, 1)
        pad_mask[2, 3:] = 1.0
    with torch.no_grad():
        latent = model.forward_encoder(patches, boxes, pad_mask).latent
        reference = model.forward_decoder(latent, pad_mask)
        fast = model.forward_decoder(latent, pad_mask, constants=model.decoder_constants())
    assert_close_relative(fast, reference)


def test_decoder_constants_must_match_the_decoder_dtype() -> None:
    model = tiny()
    with torch.no_grad():
        latent = model.forward_encoder(*random_glimpse_tokens(1, 4)).latent
        with torch.autocast("cpu", dtype=torch.bfloat16):
            constants = model.decoder_constants(torch.bfloat16)
        with pytest.raises(ValueError, match=r"constants in the decoder's dtype torch.float32"):
            model.forward_decoder(latent, constants=constants)


def test_decoder_constants_need_a_decoder() -> None:
    with pytest.raises(RuntimeError, match="requires a model with a decoder"):
        tiny("classification").decoder_constants()


@pytest.mark.parametrize("return_attention", [False, True])
def test_block_query_start_computes_the_same_rows(return_attention: bool) -> None:
    torch.manual_seed(0)
    block = LayerScaleBlock(32, 4, init_values=0.5).eval()
    x = torch.randn(2, 9, 32)
    pad_mask = torch.zeros(2, 8, 1)
    pad_mask[0, 5:] = 1.0
    with torch.no_grad():
        full, full_attention = block(x, pad_mask, return_attention)
        rows, rows_attention = block(x, pad_mask, return_attention, query_start=3)
    assert_close_relative(rows, full[:, 3:])
    if return_attention:
        assert full_attention is not None and rows_attention is not None
        assert_close_relative(rows_attention, full_attention[:, :, 3:])


def test_constant_suffix_equals_concatenated_forward() -> None:
    torch.manual_seed(0)
    block = LayerScaleBlock(32, 4, init_values=0.5).eval()
    x, suffix = torch.randn(3, 5, 32), torch.randn(1, 7, 32)
    key_mask = torch.zeros(3, 11, 1)
    key_mask[1, 2:4] = 1.0
    with torch.no_grad():
        full, _ = block(torch.cat((x, suffix.expand(3, -1, -1)), dim=1), key_mask)
        constant = block.constant_tokens(suffix)
        assert_close_relative(block.forward_with_constant_suffix(x, constant, key_mask), full)
        assert_close_relative(block.forward_with_constant_suffix(x, constant, key_mask, query_start=5), full[:, 5:])


def test_training_path_is_untouched_by_constants() -> None:
    # Without constants the decoder is the differentiable reference: gradients reach the mask token.
    model = tiny().train()
    latent = model.forward_encoder(*random_glimpse_tokens(2, 4)).latent
    model.forward_decoder(latent).square().mean().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0


@pytest.mark.parametrize("tokens", [2, 9, 30])
def test_rollout_selection_equals_stable_sort_even_with_ties(tokens: int) -> None:
    # Without num_valid the rollout finds the discarded entries by selection; with it (here: every token valid)
    # by a stable sort. Quantised attention makes many ties, which both must break by position.
    generator = torch.Generator().manual_seed(tokens)
    attentions = []
    for _ in range(3):
        raw = torch.randint(0, 4, (2, 3, tokens, tokens), generator=generator).float()
        attentions.append((raw + 1) / (raw + 1).sum(dim=-1, keepdim=True))
    by_selection = attention_rollout(attentions)
    by_sort = attention_rollout(attentions, num_valid=torch.full((2,), tokens - 1))
    assert torch.equal(by_selection, by_sort)


def test_reconstruction_score_with_cached_pixels_is_identical() -> None:
    model = tiny()
    head = ReconstructionHead()
    images = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        prediction = head.predict(model, model.forward_encoder(*random_glimpse_tokens(3, 4)).latent)
        fresh = head.score(model, prediction, images, None)
        cached = head.score(model, prediction, images, image_pixels=to_pixels(images))
    assert torch.equal(fresh, cached)
