"""Layer objects over the functional kernels: parameters, buffers and RNG state, with
``forward``/``backward``, ``train()``/``eval()`` and ``state_dict()``/``load_state_dict()``.

Arrays are updated in place and never replaced, so references held elsewhere (an
optimizer's parameter list) stay valid across steps and checkpoint loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, TypeVar, cast

import numpy as np

from deepoptim import functional as F
from deepoptim.reference.norm import BatchNormCache

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

_L = TypeVar("_L", bound="_Layer")


class _Layer:
    training: bool = True

    if TYPE_CHECKING:  # every layer has one; declared for the type checker only
        def forward(self, x: np.ndarray) -> np.ndarray: ...

    def train(self: _L, mode: bool = True) -> _L:
        """Switches training mode on (or off with ``mode=False``); returns self."""
        self.training = bool(mode)
        return self

    def eval(self: _L) -> _L:
        """Switches to evaluation mode; returns self."""
        return self.train(False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def parameters(self) -> Dict[str, np.ndarray]:
        """The trainable arrays by name (none by default)."""
        return {}

    def gradients(self) -> Dict[str, np.ndarray]:
        """The gradients of :meth:`parameters`, same names (none by default)."""
        return {}


def _load_arrays(target: Dict[str, np.ndarray], state: Mapping[str, Any], what: str) -> None:
    """Copies state[k] into target[k] for every k, after checking all of them."""
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise KeyError(f"{what}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
    for k, dst in target.items():
        src = np.asarray(state[k])
        if src.shape != dst.shape:
            raise ValueError(f"{what}.load_state_dict: {k} has shape {src.shape}, expected {dst.shape}")
        if not np.can_cast(src.dtype, dst.dtype, casting="same_kind"):
            raise TypeError(f"{what}.load_state_dict: {k} has dtype {src.dtype}, expected {dst.dtype}")
    for k, dst in target.items():
        dst[...] = state[k]


class BatchNorm(_Layer):
    r"""Batch normalization (Ioffe & Szegedy, 2015) over axis ``channel_axis``: 1d, 2d or
    3d by the input's shape, as torch's BatchNorm1d/2d/3d.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with batch statistics in
    training (and running statistics updated), running ones in eval; see
    :func:`deepoptim.reference.batch_norm`.

    Attributes:
      weight: (C,) parameter (None without ``affine``).
      bias: (C,) parameter (None without ``affine``).
      grad_weight: the gradient of ``weight`` after :meth:`backward`.
      grad_bias: the gradient of ``bias`` after :meth:`backward`.
      running_mean: buffer (None without ``track_running_stats``, in which case batch
        statistics are used in eval too).
      running_var: buffer (None without ``track_running_stats``).
      num_batches_tracked: buffer (None without ``track_running_stats``).

    Example:
      >>> import numpy as np
      >>> bn = BatchNorm(3)
      >>> x = np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32)
      >>> y = bn.forward(x)
      >>> dx = bn.backward(np.ones_like(y))
      >>> y.shape, dx.shape, bn.grad_weight.shape, int(bn.num_batches_tracked)
      ((8, 3, 4, 4), (8, 3, 4, 4), (3,), 1)
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        channel_axis: int = 1,
        dtype: DTypeLike = np.float32,
    ) -> None:
        if int(num_features) < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        C, dtype = int(num_features), np.dtype(dtype)
        self.num_features, self.eps, self.momentum, self.channel_axis = C, eps, momentum, channel_axis
        self.weight = np.ones(C, dtype) if affine else None
        self.bias = np.zeros(C, dtype) if affine else None
        self.grad_weight = np.zeros(C, dtype) if affine else None
        self.grad_bias = np.zeros(C, dtype) if affine else None
        self.running_mean = np.zeros(C, dtype) if track_running_stats else None
        self.running_var = np.ones(C, dtype) if track_running_stats else None
        self.num_batches_tracked = np.zeros((), np.int64) if track_running_stats else None
        self.training = True
        self._cache: Optional[BatchNormCache] = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalizes x; in training also updates the running statistics."""
        batch_stats = self.training or self.running_mean is None
        y, self._cache = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=batch_stats,
            momentum=self.momentum, eps=self.eps,
            num_batches_tracked=self.num_batches_tracked if self.training else None,
            channel_axis=self.channel_axis,
        )
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient with respect to the last forward's input; stores grad_weight and grad_bias."""
        if self._cache is None:
            raise RuntimeError("BatchNorm.backward called before forward")
        dx, dw, db = F.batch_norm_backward(dy, self._cache)
        if dw is not None:
            self.grad_weight[...] = dw  # type: ignore[index]  # dw is returned only with affine, grad_weight set
        if db is not None:
            self.grad_bias[...] = db  # type: ignore[index]  # likewise
        return dx

    def parameters(self) -> Dict[str, np.ndarray]:
        """The trainable arrays by name (empty without affine)."""
        return {} if self.weight is None else {"weight": self.weight, "bias": self.bias}  # type: ignore[dict-item]  # bias is set with weight

    def gradients(self) -> Dict[str, np.ndarray]:
        """The gradients of :meth:`parameters`, same names, filled by :meth:`backward`."""
        return {} if self.weight is None else {"weight": self.grad_weight, "bias": self.grad_bias}  # type: ignore[dict-item]  # set with weight

    def _arrays(self) -> Dict[str, np.ndarray]:
        out = dict(self.parameters())
        if self.running_mean is not None:
            # The three buffers exist together (track_running_stats).
            out.update(running_mean=self.running_mean, running_var=cast(np.ndarray, self.running_var),
                       num_batches_tracked=cast(np.ndarray, self.num_batches_tracked))
        return out

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters and buffers (plain NumPy arrays)."""
        return {k: v.copy() for k, v in self._arrays().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Loads a :meth:`state_dict` in place; checks every entry first, so a bad state
        (missing key, wrong shape or dtype, a negative running variance or batch count,
        which no training produces) raises and changes nothing."""
        if isinstance(state, Mapping):
            rv, nbt = state.get("running_var"), state.get("num_batches_tracked")
            if rv is not None and np.any(np.asarray(rv) < 0):
                raise ValueError("BatchNorm.load_state_dict: running_var has negative values, which no training produces")
            if nbt is not None and np.any(np.asarray(nbt) < 0):
                raise ValueError("BatchNorm.load_state_dict: num_batches_tracked must be >= 0")
        _load_arrays(self._arrays(), state, "BatchNorm")


class Dropout(_Layer):
    r"""Inverted dropout (Srivastava et al., 2014) with a counter-based generator.

    Each training forward draws the mask for elements ``offset .. offset + x.size - 1``
    of the stream ``seed`` and then advances ``offset``, so consecutive calls get fresh
    masks and a layer restored from :meth:`state_dict` continues the same sequence.

    Args:
      p: drop probability in [0, 1].
      seed: int in [0, 2**64).
      store_mask: keep the packed mask (1 bit per element) for the backward; False keeps
        nothing and regenerates the mask from (seed, offset) in :meth:`backward`.
    """

    def __init__(self, p: float = 0.5, seed: int = 0, store_mask: bool = True) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be in [0.0, 1.0], got {p!r}")
        self.p, self.seed, self.offset, self.store_mask = float(p), int(seed), 0, bool(store_mask)
        self.training = True
        self._saved: Optional[Tuple[bool, Optional[np.ndarray], int, Tuple[int, ...]]] = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, mask = F.dropout(x, self.p, self.training, self.seed, self.offset, return_mask=self.store_mask)
        active = self.training and self.p > 0.0
        self._saved = (active, mask, self.offset, x.shape)
        if active:
            self.offset += x.size
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient with respect to the last forward's input."""
        if self._saved is None:
            raise RuntimeError("Dropout.backward called before forward")
        active, mask, offset, shape = self._saved
        if not isinstance(dy, np.ndarray):
            raise TypeError(f"dy must be a numpy.ndarray, got {type(dy).__name__}")
        if dy.shape != shape:
            raise ValueError(f"dy must have shape {shape} (the forward's x shape), got {dy.shape}")
        if not active:
            return dy
        return F.dropout_backward(dy, mask, self.p, seed=None if mask is not None else self.seed, offset=offset)

    def state_dict(self) -> Dict[str, Any]:
        """``{"p", "seed", "offset"}``: plain Python scalars."""
        return {"p": self.p, "seed": self.seed, "offset": self.offset}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores p, seed and offset; checks them all first."""
        missing = sorted({"p", "seed", "offset"} - set(state))
        if missing:
            raise KeyError(f"Dropout.load_state_dict: missing keys {missing}")
        p, seed, offset = state["p"], state["seed"], state["offset"]
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise TypeError(f"Dropout.load_state_dict: p must be a number, got {p!r}")
        for name, v in (("seed", seed), ("offset", offset)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"Dropout.load_state_dict: {name} must be an int, got {v!r}")
        p, seed, offset = float(p), int(seed), int(offset)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout.load_state_dict: p must be in [0.0, 1.0], got {p!r}")
        if not (0 <= seed < 2**64 and 0 <= offset < 2**64):
            raise ValueError("Dropout.load_state_dict: seed and offset must be in [0, 2**64)")
        self.p, self.seed, self.offset = p, seed, offset
