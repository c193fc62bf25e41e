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

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from adaglimpse_env.models.pos_embed import box_sincos_embed, decoder_sincos_embed, grid_sincos_embed

DecoderType = Literal["standard", "segment", "none"]

PAD_LOGIT = -1e8
"""Added to the attention logits of empty token slots (original `mae.py`)."""


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


@dataclass(frozen=True)
class ConstantTokens:
    """Tokens that are the same in every sample, with their first-block projection computed once.

    Attributes:
        tokens: ``(1, S, dim)``.
        qkv: ``(1, S, 3 * dim)``, ``block.attn.qkv(block.norm1(tokens))``.
    """

    tokens: torch.Tensor
    qkv: torch.Tensor


class Attention(nn.Module):
    """Multi-head self-attention whose padded tokens are masked as keys only (original `mae.py`).

    Args:
        dim: token width.
        num_heads: attention heads.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Args:
            x: ``(B, T, dim)``, token 0 is the cls token.
            pad_mask: ``(B, T - 1, 1)`` float or bool, 1 = empty slot; only keys ``1:`` are masked, the cls key
                never is, and masked tokens still act as queries (original `mae.py`).
            return_attention: also return the softmax attention ``(B, heads, T, T)``.

        Returns:
            ``(out (B, T, dim), attention or None)``.
        """
        return self.attend(self.qkv(x), pad_mask, return_attention, mask_dtype=x.dtype)

    def attend(
        self,
        qkv: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        query_start: int = 0,
        mask_dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend, given the ``qkv`` projection of the (normed) tokens; see :meth:`forward`.

        Args:
            qkv: ``(B, T, 3 * dim)``, ``self.qkv(x)``; rows of constant tokens may have been computed once.
            pad_mask: as in :meth:`forward`.
            return_attention: as in :meth:`forward` (the attention of the computed queries only).
            query_start: compute the output of tokens ``query_start:`` only; they still attend to all ``T`` keys.
            mask_dtype: dtype of the additive key mask (:meth:`forward` uses its input's, as the original).

        Returns:
            ``(out (B, T - query_start, dim), attention or None)``.
        """
        batch, tokens, width = qkv.shape
        dim = width // 3
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        if query_start:
            q = q[:, :, query_start:]
        bias = None
        if pad_mask is not None:
            dtype = mask_dtype or qkv.dtype
            bias = qkv.new_zeros(batch, 1, 1, tokens, dtype=dtype)
            bias[..., 1:] = pad_mask.reshape(batch, 1, 1, tokens - 1).to(dtype) * PAD_LOGIT
        if return_attention:
            logits = (q @ k.transpose(-2, -1)) * self.scale
            if bias is not None:
                logits = logits + bias
            attention = logits.softmax(dim=-1)
            out = attention @ v
        else:
            attention = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, tokens - query_start, dim)
        return self.proj(out), attention


class LayerScaleBlock(nn.Module):
    """Pre-norm transformer block with per-channel LayerScale, DeiT-III style (original `mae.py`).

    ``x = x + gamma_1 * attn(norm1(x)); x = x + gamma_2 * mlp(norm2(x))``.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden size as a multiple of ``dim``.
        init_values: initial LayerScale value.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, init_values: float = 1e-4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
        self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))

    def forward(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        query_start: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply the block; see :meth:`Attention.forward` for the arguments. Returns ``(x, attention)``.

        With ``query_start``, only tokens ``query_start:`` are computed (they still attend to every token), for a
        last block whose other outputs would be discarded: ``x`` is then ``(B, T - query_start, dim)``.
        """
        normed = self.norm1(x)
        attended, attention = self.attn.attend(
            self.attn.qkv(normed), pad_mask, return_attention, query_start, mask_dtype=normed.dtype
        )
        return self._residual(x[:, query_start:], attended), attention

    def forward_with_constant_suffix(
        self,
        x: torch.Tensor,
        suffix: ConstantTokens,
        pad_mask: torch.Tensor | None = None,
        query_start: int = 0,
    ) -> torch.Tensor:
        """``forward(cat(x, suffix.tokens))[0]``, reusing the suffix's precomputed ``qkv(norm1(.))`` rows.

        Args:
            x: ``(B, T, dim)`` tokens.
            suffix: constant tokens appended to every sample, from :meth:`constant_tokens`.
            pad_mask: ``(B, T + S - 1, 1)`` key mask of the concatenated tokens, as in :meth:`forward`.
            query_start: as in :meth:`forward`.

        Returns:
            ``(B, T + S - query_start, dim)``.
        """
        batch = x.shape[0]
        normed = self.norm1(x)
        qkv = torch.cat((self.attn.qkv(normed), suffix.qkv.expand(batch, -1, -1)), dim=1)
        attended, _ = self.attn.attend(qkv, pad_mask, query_start=query_start, mask_dtype=normed.dtype)
        x = torch.cat((x, suffix.tokens.expand(batch, -1, -1)), dim=1)
        return self._residual(x[:, query_start:], attended)

    def constant_tokens(self, tokens: torch.Tensor) -> ConstantTokens:
        """Precompute the input-independent part of this block for tokens that are the same in every sample.

        Args:
            tokens: ``(1, S, dim)``, in the dtype the block will see them in.
        """
        return ConstantTokens(tokens=tokens, qkv=self.attn.qkv(self.norm1(tokens)))

    def _residual(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma_1 * attended
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Linear embedding of native patches (a ``patch_size``-stride conv, named ``proj`` as in timm)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed patches or a whole image.

        Args:
            x: ``(B, n, C, p, p)`` patches, or a ``(B, C, H, W)`` image cut into the regular grid.

        Returns:
            ``(B, n, D)`` tokens (row-major for an image).
        """
        if x.ndim == 4:
            return self.proj(x).flatten(2).transpose(1, 2)
        batch, num = x.shape[:2]
        # A p x p conv of stride p on one p x p patch is a matmul; this avoids B*n tiny convolutions.
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)
        return F.linear(x.reshape(batch, num, weight.shape[1]), weight, self.proj.bias)


class SegmentationUpHead(nn.Module):
    """Conv up-sampling head from the decoder's token grid to full-resolution logits (original `mae.py`).

    Layer indices inside ``conv_head`` match the original's keys (convs at 0, 4, 8, 12, 16, 19).

    Args:
        num_classes: output channels.
        in_dim: decoder width.
        grid_size: ``(rows, cols)`` of the token grid; four x2 up-samplings follow.
    """

    def __init__(self, num_classes: int, in_dim: int, grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.grid_size = grid_size
        layers: list[nn.Module] = []
        widths = [in_dim, in_dim, 256, 256, 256, 256]
        for i in range(5):
            layers += [
                nn.Conv2d(widths[i], widths[i + 1], 3, padding=1),
                nn.BatchNorm2d(widths[i + 1]),
                nn.GELU(),
            ]
            if i < 4:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        layers.append(nn.Conv2d(256, num_classes, 1))
        self.conv_head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, rows*cols, in_dim)`` -> ``(B, num_classes, 16*rows, 16*cols)`` logits."""
        batch, _, dim = x.shape
        x = x.transpose(1, 2).reshape(batch, dim, *self.grid_size)
        return self.conv_head(x)


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


def attention_rollout(
    attentions: list[torch.Tensor], discard_ratio: float = 0.5, num_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Importance of each patch token for the cls token, by attention rollout (original `mae.py`).

    Per block: mean over heads, zero the ``int(T*T*discard_ratio)`` smallest entries (never ``[cls, cls]``),
    add the identity, row-normalise and chain. The cls row over the patch tokens is soft-maxed, so the result
    sums to one per image.

    A batch may be padded to a common token count: with ``num_valid`` each image is rolled out over its own
    ``T_b = 1 + num_valid[b]`` tokens only (its discard count, ranking and softmax ignore the padded slots), which
    gives exactly what the image would get alone. Padded slots get importance 0. Ties among the smallest
    entries are broken by position (a stable sort), where the original's ``topk`` leaves them unspecified.

    Args:
        attentions: per block ``(B, heads, T, T)`` softmax attention, ``T = 1 + n``; padded keys must have been
            masked (attention exactly 0), as :meth:`ElasticMAE.forward_encoder` does with ``pad_mask``.
        discard_ratio: fraction of entries dropped per block.
        num_valid: optional ``(B,)`` int64 count of valid patch tokens, which are the first slots.

    Returns:
        ``(B, n, 1)`` importance; ``(B, 0, 1)`` when there are no patch tokens.
    """
    first = attentions[0]
    batch, _, tokens, _ = first.shape
    if tokens == 1:
        return first.new_ones(batch, 0, 1)
    device = first.device
    uniform = num_valid is None
    if num_valid is None:
        num_valid = torch.full((batch,), tokens - 1, dtype=torch.long, device=device)
    positions = torch.arange(tokens, device=device)
    valid_tokens = positions[None] < (num_valid.to(device) + 1)[:, None]  # (B, T), cls always valid
    valid_pairs = (valid_tokens[:, :, None] & valid_tokens[:, None, :]).reshape(batch, tokens * tokens)
    valid_count = (num_valid.to(device) + 1).double()
    num_discard = torch.floor(valid_count * valid_count * discard_ratio).long()[:, None]  # python int() of T*T*r
    flat_positions = torch.arange(tokens * tokens, device=device).expand(batch, -1)
    eye = torch.eye(tokens, dtype=first.dtype, device=device)
    rollout = eye.expand(batch, tokens, tokens)
    # Every image has the same count when no num_valid is given: then a selection replaces the sort.
    same_count = int(tokens * tokens * discard_ratio) if uniform else None
    for attention in attentions:
        fused = attention.mean(dim=1).reshape(batch, tokens * tokens)
        # Zero the smallest valid entries, but keep entry 0 ([cls, cls]) even when it is among them.
        if same_count is not None:
            drop = _smallest_entries(fused, same_count)
        else:
            order = fused.masked_fill(~valid_pairs, float("inf")).argsort(dim=-1, stable=True)
            rank = torch.empty_like(order).scatter_(1, order, flat_positions)
            drop = rank < num_discard
        drop &= flat_positions != 0
        fused = fused.masked_fill(drop, 0.0).reshape(batch, tokens, tokens)
        fused = (fused + eye) / 2
        fused = fused / fused.sum(dim=-1, keepdim=True)
        rollout = fused @ rollout
    logits = rollout[:, 0, 1:].masked_fill(~valid_tokens[:, 1:], float("-inf"))
    importance = torch.where(valid_tokens[:, 1:], logits.softmax(dim=-1), 0.0)
    return importance.unsqueeze(-1)


def _smallest_entries(values: torch.Tensor, count: int) -> torch.Tensor:
    """Mask of the ``count`` smallest entries of each row, ties broken by position (as a stable sort ranks them).

    The ``count``-th smallest value is found by selection (``kthvalue``, linear time) instead of a full sort;
    entries below it are in, and of those equal to it, the first ones by position until ``count`` are taken.

    Args:
        values: ``(B, N)`` finite.
        count: ``0 <= count <= N``.

    Returns:
        ``(B, N)`` bool.
    """
    if count == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    threshold = values.kthvalue(count, dim=-1, keepdim=True).values
    below = values < threshold
    tied = values == threshold
    room = count - below.sum(dim=-1, keepdim=True)  # >= 1: the threshold itself is among the smallest
    return below | (tied & (tied.cumsum(dim=-1) <= room))
