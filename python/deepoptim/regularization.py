r"""Regularization: which parameters to decay, and the L1, L2 and elastic-net penalties.

- L2, coupled (torch's ``weight_decay``): every optimizer's ``weight_decay``, ``g += wd*p``.
- Decoupled weight decay (AdamW-style) for any optimizer: ``decoupled_weight_decay=True``,
  ``p *= 1 - lr*wd`` before the update.
- L1 (the lasso, Tibshirani, 1996) and elastic net (Zou & Hastie, 2005): the optimizers'
  ``l1`` option, as a subgradient (``g += l1*sign(p)``, kernel
  :func:`deepoptim.functional.add_penalty`) or as a proximal step (``l1_mode="proximal"``:
  ``p = sign(p)*max(|p| - lr*l1, 0)`` after the update, kernel
  :func:`deepoptim.functional.soft_threshold`). Elastic net = ``l1`` plus ``weight_decay``.

Biases and normalization parameters are usually excluded; :func:`param_groups` builds
the two parameter groups from a name or mask filter.

Example:
    >>> import numpy as np
    >>> from deepoptim.optim import SGD
    >>> params = {"fc.weight": np.ones((2, 2)), "fc.bias": np.zeros(2)}
    >>> groups = param_groups(params, weight_decay=1e-4, l1=1e-5)
    >>> [sorted(g["params"]) for g in groups], groups[1]["weight_decay"]
    ([['fc.weight'], ['fc.bias']], 0.0)
    >>> opt = SGD(groups, lr=0.1)
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union, cast

import numpy as np

Exclude = Union[Callable[[str, np.ndarray], bool], Sequence[str], Sequence[bool]]


def is_bias_or_norm(name: str, param: np.ndarray) -> bool:
    """The usual exclusion: biases and every 1-D parameter (normalization scales/shifts)."""
    return name.endswith("bias") or param.ndim <= 1


def penalty(params: Union[np.ndarray, Iterable[np.ndarray], Mapping[str, np.ndarray]], l1: float = 0.0,
            l2: float = 0.0) -> float:
    r"""The value of the elastic-net penalty ``l1*||p||_1 + l2/2*||p||_2^2`` summed over
    ``params`` (an array, list or dict), to add to a reported loss."""
    arrays = list(params.values()) if isinstance(params, Mapping) else ([params] if isinstance(params, np.ndarray) else list(params))
    total = 0.0
    for p in arrays:
        p64 = p.astype(np.float64)
        total += l1 * float(np.abs(p64).sum()) + 0.5 * l2 * float((p64 * p64).sum())
    return total


def param_groups(
    params: Mapping[str, np.ndarray],
    weight_decay: float,
    exclude: Optional[Exclude] = None,
    l1: float = 0.0,
    **hyper: Any,
) -> List[Dict[str, Any]]:
    """Splits named parameters into a group with ``weight_decay`` (and ``l1``) and a
    group without, for any optimizer.

    Args:
      params: dict name -> array.
      exclude: which parameters get no decay: a callable ``(name, array) -> bool``
        (default :func:`is_bias_or_norm`), a list of name substrings, or a mask of bools
        in the dict's order.
      hyper: other hyperparameters for both groups (e.g. ``lr``).
    """
    if not isinstance(params, Mapping):
        raise TypeError("params must be a dict name -> array (names are what the filter sees)")
    names = list(params)
    if exclude is None:
        excluded = [is_bias_or_norm(n, params[n]) for n in names]
    elif callable(exclude):
        excluded = [bool(exclude(n, params[n])) for n in names]
    elif all(isinstance(e, (bool, np.bool_)) for e in exclude):
        if len(exclude) != len(names):
            raise ValueError(f"exclude mask has {len(exclude)} entries, params has {len(names)}")
        excluded = [bool(e) for e in exclude]
    else:
        # Not all bools: the list of name substrings.
        excluded = [any(s in n for s in cast("Sequence[str]", exclude)) for n in names]
    decay = {n: params[n] for n, e in zip(names, excluded) if not e}
    no_decay = {n: params[n] for n, e in zip(names, excluded) if e}
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "l1": l1, **hyper})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "l1": 0.0, **hyper})
    return groups


__all__ = ["is_bias_or_norm", "penalty", "param_groups"]
