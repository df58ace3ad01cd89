"""A minimal network toolkit in NumPy, for examples, tests and the demo: small and clear,
not a framework.

Modules have ``forward(x)``, ``backward(dy)`` (returning the gradient for the input and
storing parameter gradients), ``parameters()`` and ``gradients()`` (dicts name -> array,
same names, ready for :mod:`deepoptim.optim`), and ``train()``/``eval()``. The batch
normalization and dropout layers of :mod:`deepoptim.layers` (C++ kernels) fit in.

Example:
    >>> import numpy as np
    >>> from deepoptim import nn
    >>> from deepoptim.optim import Adam
    >>> model = nn.Sequential(nn.Linear(4, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1))
    >>> opt = Adam(model.parameters(), lr=1e-2)
    >>> X = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> for _ in range(50):
    ...     loss, dlogits = nn.softmax_cross_entropy(model(X), y)
    ...     _ = model.backward(dlogits)
    ...     _ = opt.step(model.gradients())
    >>> bool(loss < 0.3)
    True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple, TypeVar, cast

import numpy as np

from deepoptim.layers import BatchNorm, Dropout

if TYPE_CHECKING:
    from typing import Protocol

    from numpy.typing import ArrayLike, DTypeLike

    class _LayerLike(Protocol):
        """What :class:`Sequential` calls: a :class:`Module` or a layer of
        :mod:`deepoptim.layers` (BatchNorm, Dropout)."""

        def forward(self, x: np.ndarray) -> np.ndarray: ...

        def backward(self, dy: np.ndarray) -> np.ndarray: ...

        def parameters(self) -> Dict[str, np.ndarray]: ...

        def gradients(self) -> Dict[str, np.ndarray]: ...

        def train(self, mode: bool = ...) -> object: ...

_M = TypeVar("_M", bound="Module")
_S = TypeVar("_S", bound="Sequential")

__all__ = [
    "Module", "Linear", "ReLU", "Sigmoid", "Tanh", "Sequential", "BatchNorm", "Dropout",
    "mse_loss", "softmax_cross_entropy", "accuracy", "minibatches",
]


class Module:
    """Base class: no parameters, identity backward of nothing; subclasses override."""

    training: bool = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def parameters(self) -> Dict[str, np.ndarray]:
        return {}

    def gradients(self) -> Dict[str, np.ndarray]:
        return {}

    def train(self: _M, mode: bool = True) -> _M:
        self.training = bool(mode)
        return self

    def eval(self: _M) -> _M:
        return self.train(False)


class Linear(Module):
    r"""Fully connected layer ``y = x @ W.T + b``, W of shape (out, in) as in torch.

    Initialized like torch.nn.Linear: W and b uniform in ``[-1/sqrt(in), 1/sqrt(in)]``.
    Backward: ``dW = dy.T @ x``, ``db = sum(dy, axis=0)``, ``dx = dy @ W``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, seed: int = 0,
                 dtype: DTypeLike = np.float32) -> None:
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(in_features)
        self.weight = rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype)
        self.bias = rng.uniform(-bound, bound, out_features).astype(dtype) if bias else None
        self.grad_weight = np.zeros_like(self.weight)
        self.grad_bias = np.zeros_like(self.bias) if bias else None
        self._x: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        y: np.ndarray = x @ self.weight.T
        return y + self.bias if self.bias is not None else y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward")
        np.matmul(dy.T, self._x, out=self.grad_weight)
        if self.bias is not None:
            np.sum(dy, axis=0, out=self.grad_bias)
        dx: np.ndarray = dy @ self.weight
        return dx

    def parameters(self) -> Dict[str, np.ndarray]:
        return {"weight": self.weight, **({"bias": self.bias} if self.bias is not None else {})}

    def gradients(self) -> Dict[str, np.ndarray]:
        # grad_bias is an array exactly when bias is.
        return {"weight": self.grad_weight,
                **({"bias": cast(np.ndarray, self.grad_bias)} if self.bias is not None else {})}


class ReLU(Module):
    """``y = max(x, 0)``; ``dx = dy * (x > 0)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask: np.ndarray = x > 0
        return np.where(self._mask, x, 0).astype(x.dtype)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return np.where(self._mask, dy, 0).astype(dy.dtype)


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))`` computed without overflow; ``dx = dy * y * (1 - y)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        e = np.exp(-np.abs(x))  # never overflows
        y: np.ndarray = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)
        self._y = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx: np.ndarray = dy * self._y * (1 - self._y)
        return dx


class Tanh(Module):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y: np.ndarray = np.tanh(x)
        self._y = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx: np.ndarray = dy * (1 - self._y * self._y)
        return dx


class Sequential(Module):
    """Modules applied in order; parameters named ``"<index>.<name>"`` like torch."""

    def __init__(self, *modules: _LayerLike) -> None:
        self.modules: List[_LayerLike] = list(modules)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for m in self.modules:
            x = m.forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for m in reversed(self.modules):
            dy = m.backward(dy)
        return dy

    def parameters(self) -> Dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, m in enumerate(self.modules) for k, v in m.parameters().items()}

    def gradients(self) -> Dict[str, np.ndarray]:
        return {f"{i}.{k}": v for i, m in enumerate(self.modules) for k, v in m.gradients().items()}

    def train(self: _S, mode: bool = True) -> _S:
        self.training = bool(mode)
        for m in self.modules:
            m.train(mode)
        return self

    def state_dict(self) -> Dict[str, object]:
        """Parameters and buffers (BatchNorm running statistics, Dropout RNG state), copied."""
        out: Dict[str, object] = {}
        for i, m in enumerate(self.modules):
            if hasattr(m, "state_dict"):
                out.update({f"{i}.{k}": v for k, v in m.state_dict().items()})
            else:
                out.update({f"{i}.{k}": v.copy() for k, v in m.parameters().items()})
        return out

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Loads :meth:`state_dict` in place (arrays keep their identity)."""
        for i, m in enumerate(self.modules):
            mine = {k[len(f"{i}."):]: v for k, v in state.items() if k.startswith(f"{i}.")}
            if hasattr(m, "load_state_dict"):
                m.load_state_dict(mine)
            else:
                for k, v in m.parameters().items():
                    if k not in mine or np.shape(cast("ArrayLike", mine[k])) != v.shape:
                        raise ValueError(f"state for {i}.{k} is missing or has the wrong shape")
                for k, v in m.parameters().items():
                    v[...] = mine[k]


def mse_loss(pred: np.ndarray, target: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean squared error ``mean((pred - target)^2)`` and its gradient ``2*(pred - target)/n``."""
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {pred.shape} but target has shape {target.shape}")
    d = pred - target
    return float(np.mean(d.astype(np.float64) ** 2)), (2.0 / d.size) * d


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray]:
    r"""Mean cross-entropy of softmax(logits) against integer class labels, and its
    gradient ``(softmax - onehot) / N``. Stable: with ``z = logits - max(logits)``,
    ``loss_i = log(sum(exp(z_i))) - z_i[label_i]``, so no exp overflows."""
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    n, k = logits.shape
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be in [0, {k}), got range [{labels.min()}, {labels.max()}]")
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    loss = float(np.mean(lse - z[np.arange(n), labels]))
    grad = np.exp(z - lse[:, None])
    grad[np.arange(n), labels] -= 1
    return loss, (grad / n).astype(logits.dtype)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose largest logit is the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def minibatches(X: np.ndarray, y: np.ndarray, batch_size: Optional[int] = None, shuffle: bool = True,
                seed: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """One epoch of (X_batch, y_batch). The three flavours of gradient descent are batch
    sizes:
    ``None`` or ``len(X)`` is full-batch gradient descent, 1 is stochastic gradient
    descent, anything between is mini-batch gradient descent. The last batch may be
    smaller. ``shuffle`` permutes with ``numpy.random.default_rng(seed)``."""
    n = len(X)
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)}")
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, bs):
        idx = order[start:start + bs]
        yield X[idx], y[idx]
