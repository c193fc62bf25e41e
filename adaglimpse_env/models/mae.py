"""The elastic MAE: a ViT encoder over tokens of arbitrary pixel boxes, with an MAE decoder and task heads.

The original's `mae.py`. Module and parameter names equal the original's (original `mae.py`), so an original state dict
loads with nothing but its prefix stripped (see :mod:`adaglimpse_env.models.checkpoint`).

Stages, as in timm and MAE:

* :meth:`ElasticMAE.forward_encoder`: patches + boxes -> latent ``(B, 1 + n, D)`` (cls first), in two stages,
  :meth:`ElasticMAE.embed_tokens` (per token, reusable across steps) and :meth:`ElasticMAE.encode_tokens`;
* :meth:`ElasticMAE.forward_decoder`: latent -> pixel patches ``(B, G, p*p*3)`` or segmentation logits;
* :meth:`ElasticMAE.forward_head`: latent -> class logits ``(B, num_classes)``;
* :func:`attention_rollout`: the encoder's attention maps -> token importance ``(B, n, 1)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn

from adaglimpse_env.models.blocks import ConstantTokens, LayerScaleBlock, PatchEmbed, SegmentationUpHead
from adaglimpse_env.models.pos_embed import box_sincos_embed, decoder_sincos_embed, grid_sincos_embed
from adaglimpse_env.models.rollout import attention_rollout

__all__ = ["ConstantTokens", "ElasticMAE", "EncoderOutput", "LayerScaleBlock", "MAEConfig", "attention_rollout"]

DecoderType = Literal["standard", "segment", "none"]


@dataclass(frozen=True)
class MAEConfig:
    """Architecture of an :class:`ElasticMAE`; stored in our checkpoints so they load with no arguments.

    Attributes:
        img_size: ``(H, W)`` of the images the decoder reconstructs; multiples of ``patch_size``.
        patch_size: native patch side (16).
        in_chans: image channels.
        out_chans: decoder output channels: 3 for reconstruction, the class count for segmentation.
        embed_dim: encoder width ``D``.
        depth: encoder blocks.
        num_heads: encoder attention heads.
        decoder_embed_dim: decoder width ``Dd``.
        decoder_depth: decoder blocks.
        decoder_num_heads: decoder attention heads.
        mlp_ratio: MLP hidden size as a multiple of the width.
        decoder_type: ``"standard"`` (pixel prediction), ``"segment"`` (up-sampling conv head) or ``"none"``.
        num_classes: outputs of the classifier head on the cls token (the original always has 1000).
        layer_scale_init: initial LayerScale ``gamma`` (the original's 1e-4; larger values train faster from
            scratch on a small budget, as CaiT's 0.1 for shallow models). Only affects initialisation.
    """

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    out_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    decoder_type: DecoderType = "standard"
    num_classes: int = 1000
    layer_scale_init: float = 1e-4

    def __post_init__(self) -> None:
        # Values come from checkpoint files too: check types and signs before any arithmetic divides by them.
        size = self.img_size
        if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(_positive_int(s) for s in size):
            raise ValueError(f"MAEConfig requires img_size as two positive integers [height, width], got {size!r}")
        object.__setattr__(self, "img_size", tuple(self.img_size))
        counts = ["patch_size", "in_chans", "out_chans", "embed_dim", "num_heads", "decoder_embed_dim"]
        counts += ["decoder_num_heads", "num_classes"]
        bad = {name: getattr(self, name) for name in counts if not _positive_int(getattr(self, name))}
        depths = ("depth", "decoder_depth")
        bad |= {name: getattr(self, name) for name in depths if not _positive_int(getattr(self, name), minimum=0)}
        if not isinstance(self.mlp_ratio, (int, float)) or not self.mlp_ratio > 0:
            bad["mlp_ratio"] = self.mlp_ratio
        if bad:
            raise ValueError(f"MAEConfig requires positive integers (depths >= 0, mlp_ratio > 0), got {bad}")
        if any(s % self.patch_size for s in self.img_size):
            raise ValueError(
                f"MAEConfig requires img_size divisible by patch_size={self.patch_size}, got {self.img_size}"
            )
        if self.embed_dim % self.num_heads or self.embed_dim % 8:
            raise ValueError(
                f"MAEConfig requires embed_dim divisible by num_heads and by 8, got embed_dim={self.embed_dim}, "
                f"num_heads={self.num_heads}"
            )
        if self.decoder_type not in ("standard", "segment", "none"):
            raise ValueError(
                f"MAEConfig requires decoder_type in ('standard', 'segment', 'none'), got {self.decoder_type!r}"
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(rows, cols)`` of the native patch grid."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, safe for ``torch.load(weights_only=True)``."""
        data = asdict(self)
        data["img_size"] = list(self.img_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error so a newer format is not misread."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"MAEConfig got unknown fields {sorted(unknown)}; is the checkpoint from a newer version?")
        return cls(**{**data, "img_size": tuple(data.get("img_size", (224, 224)))})


def _positive_int(value: Any, minimum: int = 1) -> bool:
    """Whether ``value`` is an ``int`` (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass
class EncoderOutput:
    """What one encoder pass produces.

    Attributes:
        latent: ``(B, 1 + n, D)`` final-normed tokens, cls first.
        aux_latent: ``(B, 1 + n, D)`` input of block ``aux_latent_layer`` (not normed), or None (original
            `aux_latent_layer`).
        attentions: per block ``(B, heads, 1 + n, 1 + n)`` softmax attention, when requested.
    """

    latent: torch.Tensor
    aux_latent: torch.Tensor | None = None
    attentions: list[torch.Tensor] = field(default_factory=list)


class ElasticMAE(nn.Module):
    """ViT encoder over arbitrary-box tokens with MAE decoder and classifier head (original `mae.py`).

    Args:
        config: the architecture.
    """

    pos_embed: torch.Tensor
    decoder_pos_embed: torch.Tensor

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        self.config = config
        dim, grid = config.embed_dim, config.grid_size
        num_grid = grid[0] * grid[1]
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed (not learned) buffers; they are in the state dict under the original's names.
        self.register_buffer("pos_embed", grid_sincos_embed(dim, grid))
        self.blocks = nn.ModuleList(
            LayerScaleBlock(dim, config.num_heads, config.mlp_ratio, config.layer_scale_init)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, config.num_classes)

        if config.decoder_type != "none":
            ddim = config.decoder_embed_dim
            self.decoder_embed = nn.Linear(dim, ddim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
            self.register_buffer("decoder_pos_embed", decoder_sincos_embed(ddim, grid, cls_token=True))
            self.decoder_blocks = nn.ModuleList(
                LayerScaleBlock(ddim, config.decoder_num_heads, config.mlp_ratio, config.layer_scale_init)
                for _ in range(config.decoder_depth)
            )
            self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
            if config.decoder_type == "standard":
                self.decoder_pred = nn.Linear(ddim, config.patch_size**2 * config.out_chans)
            else:
                self.decoder_segment = SegmentationUpHead(config.out_chans, ddim, grid)
        self.num_grid_tokens = num_grid
        self._init_weights()

    def _init_weights(self) -> None:
        # original `mae.py` "Init": xavier for Linear and the flattened patch projection, N(0, 0.02) tokens.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        if self.config.decoder_type != "none":
            nn.init.normal_(self.mask_token, std=0.02)

    # ------------------------------------------------------------------------------------------------- encoder
    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters :meth:`forward_encoder` uses: token embedding, cls token, blocks and final norm."""
        for part in (self.patch_embed, self.blocks, self.norm):
            yield from part.parameters()
        yield self.cls_token

    def forward_encoder(
        self,
        patches: torch.Tensor,
        boxes: torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
        aux_latent_layer: int | None = None,
        return_attention: bool = False,
    ) -> EncoderOutput:
        """Encode the tokens gathered so far (original `mae.py`): :meth:`embed_tokens`, then :meth:`encode_tokens`.

        Args:
            patches: ``(B, n, C, p, p)`` native patches (``n`` may be 0), or a ``(B, C, H, W)`` image, which is
                embedded on the regular grid with the fixed grid positional embedding.
            boxes: ``(B, n, 4)`` pixel boxes ``(y1, x1, y2, x2)`` of the patches; required for patches.
            pad_mask: ``(B, n, 1)`` 1 = empty slot, masked as attention keys.
            aux_latent_layer: also return the input of this block (original `aux_latent_layer`); ignored if
                ``>= depth``.
            return_attention: keep every block's attention for :func:`attention_rollout`.

        Returns:
            The :class:`EncoderOutput`.
        """
        if patches.ndim == 4:
            tokens = self.patch_embed(patches) + self.pos_embed
        else:
            if boxes is None:
                raise ValueError("forward_encoder requires boxes (B, n, 4) when given patches (B, n, C, p, p)")
            tokens = self.embed_tokens(patches, boxes)
        return self.encode_tokens(tokens, pad_mask, aux_latent_layer, return_attention)

    def embed_tokens(self, patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Patch tokens as they enter the first block: patch embedding plus the "2D+" embedding of their boxes.

        Each token depends on its own patch and box only, so an episode can embed each glimpse once and keep its
        tokens for the later steps (original `forward_game_state` re-encodes everything, but this part never changes).

        Args:
            patches: ``(B, n, C, p, p)`` native patches.
            boxes: ``(B, n, 4)`` pixel boxes ``(y1, x1, y2, x2)``.

        Returns:
            ``(B, n, D)``.
        """
        x = self.patch_embed(patches)
        return x + box_sincos_embed(self.config.embed_dim, boxes, self.config.patch_size).to(x.dtype)

    def encode_tokens(
        self,
        tokens: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        aux_latent_layer: int | None = None,
        return_attention: bool = False,
    ) -> EncoderOutput:
        """Run the encoder blocks on embedded tokens (see :meth:`embed_tokens`); the cls token is prepended.

        Args:
            tokens: ``(B, n, D)``.
            pad_mask, aux_latent_layer, return_attention: as in :meth:`forward_encoder`.

        Returns:
            The :class:`EncoderOutput`.
        """
        x = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens), dim=1)
        output = EncoderOutput(latent=x)
        for i, block in enumerate(self.blocks):
            if i == aux_latent_layer:
                output.aux_latent = x
            x, attention = block(x, pad_mask, return_attention)
            if attention is not None:
                output.attentions.append(attention)
        output.latent = self.norm(x)
        return output

    def forward(
        self, patches: torch.Tensor, boxes: torch.Tensor | None = None, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encoder latent ``(B, 1 + n, D)``; see :meth:`forward_encoder` (what DDP and ``torch.compile`` wrap)."""
        return self.forward_encoder(patches, boxes, pad_mask).latent

    # ------------------------------------------------------------------------------------------------- decoder
    def decoder_queries(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The decoder's ``G`` grid queries: mask token plus the fixed 2-D embedding, ``(1, G, Dd)`` in ``dtype``."""
        return self.mask_token.to(dtype) + self.decoder_pos_embed[:, 1:].to(dtype)

    @torch.no_grad()
    def decoder_constants(self, dtype: torch.dtype = torch.float32) -> ConstantTokens:
        """The decoder work that does not depend on the input, for :meth:`forward_decoder`'s ``constants``.

        That is the grid queries and their first-block ``qkv`` projection. Valid while the weights do not change
        (a frozen model, as in the envs); call it where the decoder will run (same device, same autocast), with
        the dtype the decoder's tokens will have (the autocast dtype, or the weights' dtype).
        """
        if self.config.decoder_type == "none":
            raise RuntimeError("decoder_constants requires a model with a decoder, got decoder_type='none'")
        first = cast(LayerScaleBlock, self.decoder_blocks[0])
        return first.constant_tokens(self.decoder_queries(dtype))

    def forward_decoder(
        self,
        latent: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        constants: ConstantTokens | None = None,
    ) -> torch.Tensor:
        """Predict the whole image from the encoded tokens (original `mae.py`, the ``mask=None`` path).

        Visible tokens get no decoder positional embedding; the ``G`` grid queries are mask tokens plus the fixed
        2-D embedding. The original never masks padded tokens here (its padded slots belong to finished
        episodes whose output is discarded); pass ``pad_mask`` to mask them as keys, so that a batch padded to
        a common token count predicts exactly what each image would alone.

        Args:
            latent: ``(B, 1 + n, D)``.
            pad_mask: optional ``(B, n, 1)``, 1 = empty slot.
            constants: for a frozen model, :meth:`decoder_constants` (the queries and their first-block
                projection, computed once). The last block then also skips the visible tokens, whose output
                is discarded. Same result as without, up to float rounding (last bits; tested within 1e-6).

        Returns:
            ``(B, G, p*p*out_chans)`` normalised-pixel patches (``standard``) or ``(B, C, H, W)`` logits
            (``segment``).
        """
        if self.config.decoder_type == "none":
            raise RuntimeError(
                "forward_decoder requires a model with a decoder (decoder_type 'standard' or 'segment'), "
                "got decoder_type='none'; this is a classification-only model"
            )
        x = self.decoder_embed(latent)
        batch, num_visible = x.shape[:2]
        num_queries = self.num_grid_tokens
        key_mask = None
        if pad_mask is not None:
            key_mask = torch.cat((pad_mask.to(x.dtype), x.new_zeros(batch, num_queries, 1)), dim=1)
        if constants is None:
            x = torch.cat((x, self.decoder_queries(x.dtype).expand(batch, -1, -1)), dim=1)
            for block in self.decoder_blocks:
                x, _ = block(x, key_mask)
            x = self.decoder_norm(x)[:, num_visible:]
        else:
            if constants.tokens.dtype != x.dtype:
                raise ValueError(
                    f"forward_decoder requires constants in the decoder's dtype {x.dtype}, got "
                    f"{constants.tokens.dtype}; build them with decoder_constants({x.dtype})"
                )
            # Only the G query outputs of the last block are used: it skips the visible tokens' rows.
            last = len(self.decoder_blocks) - 1
            first = cast(LayerScaleBlock, self.decoder_blocks[0])
            x = first.forward_with_constant_suffix(x, constants, key_mask, query_start=num_visible if last == 0 else 0)
            for i in range(1, last + 1):
                x, _ = self.decoder_blocks[i](x, key_mask, query_start=num_visible if i == last else 0)
            x = self.decoder_norm(x)
        if self.config.decoder_type == "standard":
            return self.decoder_pred(x)
        return self.decoder_segment(x)

    def forward_head(self, latent: torch.Tensor) -> torch.Tensor:
        """Class logits from the cls token: ``(B, 1 + n, D)`` -> ``(B, num_classes)``."""
        return self.head(latent[:, 0])

    # ------------------------------------------------------------------------------------------------- pixels
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, G, p*p*C)`` in MAE's layout (row p, col q, channel fastest)."""
        p = self.config.patch_size
        batch, channels, height, width = images.shape
        x = images.reshape(batch, channels, height // p, p, width // p, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(batch, (height // p) * (width // p), p * p * channels)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`: ``(B, G, p*p*C)`` -> ``(B, C, H, W)``."""
        p = self.config.patch_size
        rows, cols = self.config.grid_size
        batch = tokens.shape[0]
        channels = tokens.shape[-1] // (p * p)
        x = tokens.reshape(batch, rows, cols, p, p, channels)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(batch, channels, rows * p, cols * p)
