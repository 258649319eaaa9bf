"""Attention in the LRP copy: ``nn.MultiheadAttention`` rebuilt from modules spray can give rules to.

``nn.MultiheadAttention`` computes everything in one functional call (its packed input projection,
the attention, the output projection), which neither module rules nor :mod:`spray.lrp.functional` can
see into. Canonization replaces it in the copy by :class:`SplitMultiheadAttention`: the same parameters
as three ``nn.Linear`` projections (so the composite's dense-layer rule applies to them, as to the
output projection), and ``F.scaled_dot_product_attention`` in between, which gets the attention rule
(AttnLRP's uniform rule on both matmuls, or CP-LRP). The output is the same function of the inputs
(checked on the first batch against the user's model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SplitMultiheadAttention", "split_attention"]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return layer.to(weight.device)


class SplitMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (eval mode) with separate ``q_proj``/``k_proj``/``v_proj`` layers.

    Parameters
    ----------
    mha : nn.MultiheadAttention
        The module to rebuild (without ``bias_k``/``bias_v``/``add_zero_attn``).
    """

    #: ``nn.TransformerEncoderLayer`` reads these to choose its fused fast path, which would bypass this
    #: module's projections: None keeps it on the plain path ("self_attn was passed bias=False").
    in_proj_bias: torch.Tensor | None = None
    in_proj_weight: torch.Tensor | None = None
    _qkv_same_embed_dim = False  # read by nn.TransformerEncoder's fast-path check, which it also turns off

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        e = mha.embed_dim
        if mha._qkv_same_embed_dim:
            assert mha.in_proj_weight is not None
            w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        b = mha.in_proj_bias
        b_q, b_k, b_v = (None, None, None) if b is None else (b[:e], b[e : 2 * e], b[2 * e :])
        self.q_proj, self.k_proj, self.v_proj = _linear(w_q, b_q), _linear(w_k, b_k), _linear(w_v, b_v)
        self.out_proj = mha.out_proj
        self.num_heads, self.batch_first, self.embed_dim = mha.num_heads, mha.batch_first, e

    def _heads(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        # (B, L, E) -> (B, heads, L, E / heads)
        return t.reshape(batch, t.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same signature and result as ``nn.MultiheadAttention.forward`` in eval mode."""
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if not self.batch_first or not batched:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        batch = query.shape[0]
        q = self._heads(self.q_proj(query), batch)
        k = self._heads(self.k_proj(key), batch)
        v = self._heads(self.v_proj(value), batch)
        mask = _merged_mask(
            attn_mask, key_padding_mask, q.dtype, (batch, self.num_heads, q.shape[2], k.shape[2])
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, -1, self.embed_dim))
        weights = None
        if need_weights:
            with torch.no_grad():  # the weights are a by-product; relevance flows through the output
                scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
                weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
                weights = weights.mean(1) if average_attn_weights else weights
                weights = weights if batched else weights.squeeze(0)
        if not self.batch_first or not batched:
            out = out.transpose(0, 1)
        return (out if batched else out.squeeze(1)), weights


def _merged_mask(
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    dtype: torch.dtype,
    shape: tuple[int, int, int, int],
) -> torch.Tensor | None:
    """One additive float mask, broadcastable to ``shape`` (batch, heads, length, source), from
    ``attn_mask`` ((L, S) or (batch·heads, L, S)) and ``key_padding_mask`` ((batch, S); bool: True =
    masked)."""

    def additive(m: torch.Tensor) -> torch.Tensor:
        if m.dtype == torch.bool:
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(m, float("-inf"))
        return m.to(dtype)

    mask = None if attn_mask is None else additive(attn_mask)
    if mask is not None and mask.dim() == 3:
        mask = mask.reshape(shape)
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).reshape(shape[0], 1, 1, shape[3])
        mask = pad if mask is None else mask + pad
    return mask


def split_attention(model: nn.Module) -> int:
    """Replace every ``nn.MultiheadAttention`` of ``model`` (a copy) that can be rebuilt; return how many."""
    count = 0
    for path, module in list(model.named_modules()):
        if type(module) is not nn.MultiheadAttention or module.bias_k is not None or module.add_zero_attn:
            continue
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, SplitMultiheadAttention(module))
        count += 1
    return count
