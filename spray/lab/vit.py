"""A tiny vision transformer for the demo and the tests (patch 4 on 28×28 images: 7×7 tokens).

Built from standard modules (a patch-embedding convolution, a class token, position embeddings,
pre-norm blocks of ``nn.MultiheadAttention`` and a GELU MLP), so that it is explained by the same rules
as any ViT (``spray.lrp``: AttnLRP or CP-LRP for the attention, σ held constant in LayerNorm).
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` → ``(B, N, dim)``."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TinyViT(nn.Module):
    """A small ViT classifier.

    Parameters
    ----------
    in_channels : int
        Input channels.
    num_classes : int
        Output classes.
    image_size : int
        Side of the (square) input.
    patch_size : int
        Side of a patch; ``image_size`` must be a multiple of it.
    dim, depth, heads, mlp_dim : int
        Token width, number of blocks, attention heads, MLP width.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_dim: int = 128,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_dim) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W) → logits (B, num_classes), read off the class token."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.class_token.expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1) + self.pos_embedding
        return self.head(self.ln(self.blocks(h))[:, 0])


def tiny_vit(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    patch_size: int = 4,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_dim: int = 128,
) -> TinyViT:
    """Factory for :class:`TinyViT` (usable as ``model.factory: spray.lab.vit:tiny_vit``)."""
    return TinyViT(in_channels, num_classes, image_size, patch_size, dim, depth, heads, mlp_dim)
