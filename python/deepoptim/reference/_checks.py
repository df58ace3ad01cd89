"""Argument checks of the reference twins: the same refusals, with the same exception
types, as the C++ bindings (``cpp/bindings/checks.cpp``). Nothing here does math."""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar, cast

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# (first byte, one past the last byte, written, label) of an array a kernel reads or writes.
_Span = Tuple[int, int, bool, str]


def _is_list_like(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def _native_float_dtype(a: np.ndarray) -> Optional[np.dtype]:
    # Equal dtypes compare equal regardless of how they were spelled; a byte-swapped
    # float32 does not equal the native one, and is refused like in C++.
    for dt in _FLOATS:
        if a.dtype == dt:
            return dt
    return None


def operands(
    spec: Sequence[Tuple[str, bool, bool, Optional[str]]], args: Sequence[Any]
) -> Tuple[List[List[Optional[np.ndarray]]], bool]:
    """Check the array arguments of one call.

    ``spec[k] = (name, written, used, needed_because)``; ``args[k]`` is either an array
    or a list/tuple of arrays (the list form), ``args[0]`` the params. Returns one row of
    arrays per tensor (None where unused) and whether the list form was used.
    """
    from deepoptim.reference import _lowp

    step = _lowp.current()  # inside an optimizer twin that takes low-precision storage
    has_master = step is not None and step.master_params is not None
    if has_master:
        spec = list(spec) + [("master_params", True, True, None)]
        args = list(args) + [step.master_params]  # type: ignore[union-attr]
    lead = spec[0][0]
    list_form = _is_list_like(args[0])
    if not list_form and not isinstance(args[0], np.ndarray):
        raise TypeError(
            f"{lead} must be a numpy.ndarray or a list/tuple of them, got {type(args[0]).__name__}"
        )
    n = len(args[0]) if list_form else 1

    for k, ((name, _written, used, why), arg) in enumerate(zip(spec, args)):
        if not used:
            continue
        if arg is None:
            raise ValueError(f"{name} is required" + (f" when {why}" if why else "") + ", got None")
        if list_form:
            if not _is_list_like(arg):
                raise TypeError(
                    f"{name} must be a list or tuple ({lead} is one), got {type(arg).__name__}"
                )
            if len(arg) != n:
                raise ValueError(f"{name} has {len(arg)} arrays but {lead} has {n}")
        elif not isinstance(arg, np.ndarray) and not (
                step is not None and 2 <= k < len(spec) - (1 if has_master else 0)
                and isinstance(arg, _lowp.Blockwise8)):
            raise TypeError(f"{name} must be a numpy.ndarray ({lead} is one), got {type(arg).__name__}")

    rows: List[List[Optional[np.ndarray]]] = []
    labels: List[List[str]] = []
    spans: List[_Span] = []
    lead_dtype = None
    lead_owner = ""
    for t in range(n):
        row: List[Optional[np.ndarray]] = []
        labels.append([])
        for k, ((name, written, used, _why), arg) in enumerate(zip(spec, args)):
            label = f"{name}[{t}]" if list_form else name
            labels[t].append(label)
            if not used:
                row.append(None)
                continue
            a = arg[t] if list_form else arg
            if (step is not None and 2 <= k < len(spec) - (1 if has_master else 0)
                    and not isinstance(a, np.ndarray) and isinstance(a, _lowp.Blockwise8)):
                # 8-bit blockwise state: its codes and absmax, checked against the parameter.
                _lowp.check_blockwise8(a, row[0], written, label)  # type: ignore[arg-type]
                add_span(spans, a.codes, written, label)
                add_span(spans, a.absmax, written, label)
                row.append(a)  # type: ignore[arg-type]
                continue
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{label} must be a numpy.ndarray, got {type(a).__name__}")
            not_masked(a, label)
            if step is not None:
                # The low-precision dtype rules are checked once every array is parsed, as in C++.
                _lowp.storage_dtype(a, label)
            elif (dt := _native_float_dtype(a)) is None:
                raise TypeError(f"{label} must have dtype float32 or float64, got {a.dtype}")
            elif lead_dtype is None:
                lead_dtype, lead_owner = dt, label
            elif dt != lead_dtype:
                raise TypeError(
                    f"{label} has dtype {a.dtype} but {lead_owner} has dtype {lead_dtype}; "
                    "all arrays of one call must share a dtype"
                )
            if k > 0 and a.shape != row[0].shape:  # type: ignore[union-attr]
                plabel = f"{spec[0][0]}[{t}]" if list_form else spec[0][0]
                raise ValueError(f"{label} has shape {a.shape} but {plabel} has shape {row[0].shape}")  # type: ignore[union-attr]
            contiguous(a, label)
            if written:
                writeable(a, label)
            add_span(spans, a, written, label)
            row.append(a)
        rows.append(row)
    if step is not None:
        _lowp.check_dtypes(step, spec, rows, labels, has_master)
    _check_aliasing(spans)
    if step is not None:
        return _lowp.working_rows(step, spec, rows, has_master), list_form
    return rows, list_form


def _check_aliasing(spans: List[_Span]) -> None:
    # Two arrays may share memory only if neither is written (two reads of one grad).
    spans.sort(key=lambda s: s[0])
    reach_any = reach_written = None
    for s in spans:
        other = None
        if reach_written is not None and s[0] < reach_written[1]:
            other = reach_written
        elif s[2] and reach_any is not None and s[0] < reach_any[1]:
            other = reach_any
        if other is not None:
            raise ValueError(
                f"{other[3]} and {s[3]} share memory; every array the kernel writes must be "
                "distinct from all the others"
            )
        if reach_any is None or s[1] > reach_any[1]:
            reach_any = s
        if s[2] and (reach_written is None or s[1] > reach_written[1]):
            reach_written = s


def finite_ge(name: str, x: float, lo: float) -> None:
    if not (x >= lo) or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number >= {lo!r}, got {float(x)!r}")


def finite_gt(name: str, x: float, lo: float) -> None:
    if not (x > lo) or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number > {lo!r}, got {float(x)!r}")


def in_range(name: str, x: float, lo: float, hi: float, hi_inclusive: bool) -> None:
    ok = x >= lo and (x <= hi if hi_inclusive else x < hi)
    if not ok:
        raise ValueError(f"{name} must be in [{lo!r}, {hi!r}{']' if hi_inclusive else ')'}, got {float(x)!r}")


def step(s: int) -> int:
    """The step count as a Python int: a NumPy integer would turn the float32 twins'
    arithmetic into float64 (NumPy 2 promotion), and the kernel into other bits."""
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
        raise TypeError(f"step must be an int, got {type(s).__name__}")
    if not 1 <= s < 2**63:
        raise ValueError(f"step must be in [1, 2**63) (the count of updates including this one), got {s}")
    return int(s)


def eps_representable(name: str, eps: float, rows: Sequence[Sequence[Optional[np.ndarray]]]) -> None:
    """An eps that rounds to 0 in the dtype the math runs in (that of the checked
    ``rows``, see :func:`operands`) would turn 0/0 into NaN."""
    if rows and cast(np.ndarray, rows[0][0]).dtype == np.float32 and eps > 0.0 and np.float32(eps) == 0.0:
        raise ValueError(f"{name} must not round to 0 in float32 (the parameters' dtype), got {float(eps)!r}")


def not_masked(a: np.ndarray, name: str) -> None:
    """numpy.ma.MaskedArray is an ndarray whose mask the kernels cannot honour: refused."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a numpy.ma.MaskedArray, whose mask the kernels cannot honour; pass "
            "numpy.ma.filled(...) (the masked entries filled as you intend)"
        )


def betas(b: Any) -> Tuple[float, float]:
    if not (isinstance(b, (tuple, list)) and len(b) == 2):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {b!r}")
    b1, b2 = real("beta1", b[0]), real("beta2", b[1])
    in_range("beta1", b1, 0.0, 1.0, False)
    in_range("beta2", b2, 0.0, 1.0, False)
    return b1, b2


def adam_like(s: Any, lr: Any, b: Any, eps: Any, wd: Any) -> Tuple[int, float, float, float, float, float]:
    """The hyperparameters Adam's family shares (step, lr, betas, eps, weight_decay),
    parsed and checked in the order of ``adam_like`` in cpp/bindings/optim.cpp; returns
    (step, lr, beta1, beta2, eps, weight_decay)."""
    s = step(s)
    lr = real("lr", lr)
    b1, b2 = betas(b)
    eps = real("eps", eps)
    wd = real("weight_decay", wd)
    finite_ge("lr", lr, 0.0)
    finite_gt("eps", eps, 0.0)
    finite_ge("weight_decay", wd, 0.0)
    return s, lr, b1, b2, eps, wd


def flag(name: str, x: Any) -> bool:
    """A yes/no option: True, False or a numpy.bool_; TypeError for anything else (an int
    or a str is not silently taken for its truth value)."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return bool(x)


_F = TypeVar("_F", bound=Callable[..., Any])


def with_flag_checks(fn: _F) -> _F:
    """``fn`` checking, before anything else (as the bindings parse them first), that each
    parameter annotated ``bool`` was given a bool (:func:`flag`)."""
    sig = inspect.signature(fn)
    names = [n for n, p in sig.parameters.items() if p.annotation in ("bool", bool)]
    if not names:
        return fn

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        given = sig.bind(*args, **kwargs).arguments
        for n in names:
            if n in given:
                flag(n, given[n])
        return fn(*args, **kwargs)

    return checked  # type: ignore[return-value]


def real(name: str, x: Any) -> float:
    """A hyperparameter as a Python float; TypeError for anything that is not a number."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}")
    try:
        return float(x)
    except OverflowError:  # an int too large for a double
        raise ValueError(f"{name} must be a finite number, got {x!r}") from None


# Lower-level checks (checks.hpp: require_array, float_dtype, require_contiguous, ...).
def array(a: Any, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    not_masked(a, name)
    return a


def float_dtype(a: np.ndarray, name: str) -> np.dtype:
    dt = _native_float_dtype(a)
    if dt is None:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    return dt


def contiguous(a: np.ndarray, name: str) -> None:
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (no hidden copies are made); pass "
                         "numpy.ascontiguousarray(...) or the array itself, not a view")
    # NumPy flags every empty array aligned; the kernels check the address itself.
    if not a.flags.aligned or a.ctypes.data % a.dtype.alignment:
        raise ValueError(f"{name} is not aligned to its itemsize")


def writeable(a: np.ndarray, name: str) -> None:
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only, but it is updated in place")


def add_span(spans: List[_Span], a: np.ndarray, written: bool, name: str) -> None:
    if a.nbytes:
        start = a.__array_interface__["data"][0]
        spans.append((start, start + a.nbytes, written, name))


def aliasing(spans: List[_Span]) -> None:
    _check_aliasing(spans)


def uint64(x: Any, name: str) -> int:
    """An int in [0, 2**64), as the C++ bindings take seeds and offsets."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    value = int(x)
    if not 0 <= value < 2**64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


def scalar_states(spec: Sequence[Tuple[str, bool, bool, Optional[str]]], rows: Sequence[Sequence[Optional[np.ndarray]]], list_form: bool,
                  scalars: Sequence[Tuple[str, Any]]) -> List[List[np.ndarray]]:
    """Check per-tensor scalar state arguments (NAdam's ``mu_products``, ASGD's ``mus``
    and ``etas``; torch keeps them as 0-d tensors): per tensor one array holding exactly
    one float32 or float64 element, whatever the parameters' dtype; writeable, and
    sharing memory with no array of the call. ``spec`` and ``rows`` are those of
    :func:`operands`, checked first. Returns one list of arrays per scalar argument."""
    from deepoptim.reference import _lowp

    step = _lowp.current()
    if step is not None and step.checked is not None:  # rows are working copies: check the originals
        spec, rows = step.checked
    lead = spec[0][0]
    n = len(rows)
    spans: List[_Span] = []
    for t, row in enumerate(rows):
        for (name, written, _used, _why), a in zip(spec, row):
            if isinstance(a, _lowp.Blockwise8):  # an 8-bit state: its codes and absmax
                add_span(spans, a.codes, written, f"{name}[{t}]" if list_form else name)
                add_span(spans, a.absmax, written, f"{name}[{t}]" if list_form else name)
            elif a is not None:
                add_span(spans, a, written, f"{name}[{t}]" if list_form else name)
    out = []
    for name, arg in scalars:
        if arg is None:
            raise ValueError(f"{name} is required, got None")
        if list_form:
            if not _is_list_like(arg):
                raise TypeError(f"{name} must be a list or tuple ({lead} is one), got {type(arg).__name__}")
            if len(arg) != n:
                raise ValueError(f"{name} has {len(arg)} arrays but {lead} has {n}")
            items = list(arg)
        else:
            if not isinstance(arg, np.ndarray):
                raise TypeError(f"{name} must be a numpy.ndarray ({lead} is one), got {type(arg).__name__}")
            items = [arg]
        checked = []
        for t, a in enumerate(items):
            label = f"{name}[{t}]" if list_form else name
            array(a, label)
            float_dtype(a, label)
            if a.size != 1:
                raise ValueError(f"{label} must hold one element (a per-tensor scalar state), got shape {a.shape}")
            contiguous(a, label)
            writeable(a, label)
            add_span(spans, a, True, label)
            checked.append(a)
        out.append(checked)
    _check_aliasing(spans)
    return out
