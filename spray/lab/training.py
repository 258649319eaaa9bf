"""A small, seeded CPU training loop (for the demo and the benchmarks, which train their own models)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def train_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    mean: float = 0.0,
    std: float = 1.0,
    progress: bool = True,
) -> nn.Module:
    """Train ``model`` on uint8 images with Adam; deterministic for a given seed.

    Parameters
    ----------
    images : np.ndarray
        ``(n, H, W)`` uint8 (grey) or ``(n, H, W, C)``.
    labels : np.ndarray
        ``(n,)`` int class labels.
    mean, std : float
        Normalisation applied to ``images / 255`` (must match the audit config's transform).

    Returns
    -------
    nn.Module
        The trained model, in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(images).float().div_(255.0)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = (x - mean) / std
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    bar = tqdm(total=steps, desc="training", disable=not progress, leave=False)
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        total, correct = 0.0, 0
        for s in range(0, len(x), batch_size):
            idx = perm[s : s + batch_size]
            out = model(x[idx])
            loss = loss_fn(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
            bar.update(1)
        log.info("epoch %d: loss %.4f, train accuracy %.3f", epoch + 1, total / len(x), correct / len(x))
    bar.close()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes ``(n,)`` for a float input batch ``(n, C, H, W)``."""
    model.eval()
    return torch.cat([model(x[s : s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)])
