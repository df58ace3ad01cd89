"""Builds each fast function from its NumPy twin, so a kernel's signature and defaults
are written once: in the twin (the specification), never again here.

For a twin ``f(a, b=1, *, c=2)`` and the compiled ``_core.f(a, b, c)`` (pybind11 gives
its parameter names in the first line of ``__doc__``; the bindings have no defaults),
:func:`bind_twin` generates, with ``exec``, the plain function::

    def f(a, b=<twin's default>, *, c=<twin's default>):
        return _core.f(a, b, c)

which costs what a hand-written wrapper costs (no ``inspect.Signature.bind`` per call),
carries the twin's signature, annotations and docstring, and fails at import if the twin
and the binding disagree on a parameter's name or order.
"""

from __future__ import annotations

import inspect
import re
from types import ModuleType
from typing import Any, Callable, Dict, List, Mapping, Optional

from deepoptim import _core

_FIRST_LINE = re.compile(r"^\w+\((.*)\) -> .*$")


def core_parameters(fn: Callable[..., Any]) -> List[str]:
    """The parameter names of a pybind11 function, in order, from its signature line."""
    m = _FIRST_LINE.match((fn.__doc__ or "").splitlines()[0] if fn.__doc__ else "")
    if not m:
        raise RuntimeError(f"{fn!r} has no pybind11 signature line")
    return re.findall(r"(?:^|, )(\w+):", m.group(1))


def bind_twin(twin: Callable[..., Any], core: Callable[..., Any], module: str,
              fixed: Optional[Mapping[str, Any]] = None) -> Callable[..., Any]:
    """The C++ kernel ``core`` behind the signature of ``twin`` (see the module docstring).
    ``fixed`` gives kernel parameters the twin does not have (a variant such as AdamW is
    the Adam kernel with ``decoupled_weight_decay=True``)."""
    fixed = dict(fixed or {})
    sig = inspect.signature(twin)
    names = core_parameters(core)
    missing = [n for n in names if n not in sig.parameters and n not in fixed]
    extra = [n for n in sig.parameters if n not in names]
    if missing or extra:
        raise RuntimeError(f"twin {twin.__name__} and _core.{core.__name__} disagree: the kernel also takes "
                           f"{missing}, the twin also takes {extra}")
    ns: Dict[str, Any] = {"_kernel": core}
    params, kwonly = [], False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not kwonly:
            params.append("*")
            kwonly = True
        if p.default is p.empty:
            params.append(p.name)
        else:
            ns[f"_default_{p.name}"] = p.default
            params.append(f"{p.name}=_default_{p.name}")
    args = []
    for n in names:
        if n in sig.parameters:
            args.append(n)
        else:
            ns[f"_fixed_{n}"] = fixed[n]
            args.append(f"_fixed_{n}")
    name = twin.__name__
    exec(f"def {name}({', '.join(params)}):\n    return _kernel({', '.join(args)})\n", ns)  # noqa: S102
    fn: Callable[..., Any] = ns[name]
    fn.__module__, fn.__qualname__ = module, name
    fn.__annotations__ = dict(getattr(twin, "__annotations__", {}))
    fn.__doc__ = (f"C++ kernel; the NumPy twin :func:`deepoptim.reference.{name}` is its specification.\n\n"
                  f"{twin.__doc__}")
    return fn


def bind_family(twin_module: ModuleType, namespace: Dict[str, Any]) -> List[str]:
    """Binds every kernel of a family: each name in the twin module's ``KERNELS``, to the
    compiled function of the same name or, for a name in ``VARIANTS``, to the kernel and
    fixed parameters it gives. Returns the names (the family's ``__all__``)."""
    for name in twin_module.KERNELS:
        core_name, fixed = twin_module.VARIANTS.get(name, (name, None))
        namespace[name] = bind_twin(getattr(twin_module, name), getattr(_core, core_name),
                                    namespace["__name__"], fixed)
    return list(twin_module.KERNELS)
