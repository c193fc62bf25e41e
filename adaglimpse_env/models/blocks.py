"""The transformer pieces of the elastic MAE (original `mae.py`): attention that masks padded keys, the LayerScale
block with a cached constant suffix, the patch embedding and the segmentation head. Parameter names are the
original's, so an original state dict loads into :class:`~adaglimpse_env.models.mae.ElasticMAE` as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

PAD_LOGIT = -1e8
"""Added to the attention logits of empty token slots (original `mae.py`)."""


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
