"""The small-network workload of P1 and P2: an MLP on scikit-learn's bundled digits data.

8x8 digit images (1,797 samples, 10 classes) ship inside scikit-learn, so nothing is downloaded.
Pixels are scaled to [0, 1]; a stratified 75/25 train/test split is fixed by ``split_seed``.
Training is plain mini-batch cross-entropy; the optimizer is built by a factory so that every
method sees the same initial weights and the same batch order for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

import fusedopt

from ._common import generator, seeded


@dataclass
class Digits:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load(split_seed: int = 0) -> Digits:
    """Digits as fp32 tensors, pixels / 16, stratified 25% test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.25, stratify=y,
                                          random_state=split_seed)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    i = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    return Digits(f(xtr), i(ytr), f(xte), i(yte))


def mlp(hidden: tuple[int, ...]) -> nn.Module:
    """64 -> hidden... -> 10 with ReLU."""
    layers: list[nn.Module] = []
    width = 64
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def train(data: Digits, make_opt: Callable[[list[Tensor]], torch.optim.Optimizer], *,
          hidden: tuple[int, ...], epochs: int, batch: int, seed: int) -> dict:
    """Train a fresh MLP (weights from ``seed``); evaluate after every epoch.

    Returns ``{"train_loss": [...], "test_acc": [...], "backend": str}`` with one entry per
    epoch (full-train-set cross-entropy, test accuracy). AdamL gets ``step(loss=...)``.
    """
    with seeded(seed):
        model = mlp(hidden)
    opt = make_opt(list(model.parameters()))
    needs_loss = isinstance(opt, fusedopt.AdamL)
    gen = generator(seed)
    loss_fn = nn.CrossEntropyLoss()
    n = len(data.y_train)
    train_loss, test_acc = [], []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            if needs_loss:
                opt.step(loss=loss.detach())
            else:
                opt.step()
        with torch.no_grad():
            train_loss.append(float(loss_fn(model(data.x_train), data.y_train)))
            pred = model(data.x_test).argmax(dim=1)
            test_acc.append(float((pred == data.y_test).float().mean()))
    return {"train_loss": np.array(train_loss), "test_acc": np.array(test_acc),
            "backend": getattr(opt, "backend", "torch")}
