"""deepoptim.torch on bfloat16/float16 tensors: the same bits as deepoptim.optim on the
same values (zero-copy views of the tensors), state in the dtype asked for, master
weights, stochastic rounding; and state_dict round trips (through torch.save) that resume
bit for bit although torch.optim's load_state_dict casts state to the parameter's dtype."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import deepoptim.torch as dt  # noqa: E402
from deepoptim import optim  # noqa: E402
from deepoptim.reference.optim import LOWP_KERNELS  # noqa: E402

CLASSES = [n for n, c in optim.REGISTRY.items() if c.kernel in LOWP_KERNELS]
MODES = {
    "plain": {},
    "bf16-state": {"state_dtype": "bfloat16"},
    "master": {"master_weights": True},
    "stochastic": {"stochastic_rounding": True, "seed": 4},
    "int8-state": {"state_dtype": "int8"},
    "master-int8-state": {"master_weights": True, "state_dtype": "int8"},
}
EXTRA = {"SGD": {"momentum": 0.9}}


def _bits(t):
    return t.detach().view(torch.int16) if t.element_size() == 2 else t.detach().view(torch.int32)


# Stochastic rounding is for bfloat16 only (test_refusals covers float16).
CASES = [(name, mode, tdtype) for name in CLASSES for mode in sorted(MODES) for tdtype in ("bf16", "f16")
         if not (tdtype == "f16" and mode == "stochastic")]


@pytest.mark.parametrize("name, mode, tdtype", CASES)
def test_adapter_equals_numpy_and_resumes(name, mode, tdtype):
    kw = MODES[mode]
    tdtype = {"bf16": torch.bfloat16, "f16": torch.float16}[tdtype]
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(300, 70, generator=gen).to(tdtype)),
          torch.nn.Parameter(torch.randn(70, generator=gen).to(tdtype))]
    nps = [dt._view(p).copy() for p in ps]
    extra = EXTRA.get(name, {})
    ours = getattr(dt, name)(ps, lr=1e-2, **extra, **kw)
    ref = getattr(optim, name)(nps, lr=1e-2, **extra, **kw)
    for _ in range(4):
        gs = [torch.randn(p.shape, generator=gen).to(tdtype) for p in ps]
        for p, g in zip(ps, gs):
            p.grad = g
        ours.step()
        ref.step([dt._view(g).copy() for g in gs])
    for p, q in zip(ps, nps):
        assert p.dtype == tdtype
        np.testing.assert_array_equal(dt._view(p).view(np.uint16), q.view(np.uint16))
    want = {"bfloat16": torch.bfloat16, "int8": torch.uint8}.get(kw.get("state_dtype"), torch.float32)
    for n, t in ours.state[ps[0]].items():
        if n not in ("step",) and n not in ours._spec._scalar_state:
            assert t.dtype == (torch.float32 if n in ("master_param",) or n.endswith("_absmax") else want), n

    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    ps2 = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    ours2 = getattr(dt, name)(ps2, lr=1e-2, **extra, **kw)
    ours2.load_state_dict(saved)
    for n, t in ours.state[ps[0]].items():
        t2 = ours2.state[ps2[0]][n]
        assert t2.dtype == t.dtype, (n, t2.dtype, t.dtype)  # not cast to the parameter's dtype
        assert torch.equal(t2, t), n
    for _ in range(2):
        gs = [torch.randn(p.shape, generator=gen).to(tdtype) for p in ps]
        for p, p2, g in zip(ps, ps2, gs):
            p.grad, p2.grad = g, g.clone()
        ours.step()
        ours2.step()
    for p, p2 in zip(ps, ps2):
        assert torch.equal(_bits(p), _bits(p2))


def test_torch_state_dict_of_bfloat16_state_loads_as_float32_and_back():
    """torch.optim.AdamW keeps bfloat16 state for bfloat16 parameters; ours (default
    state_dtype) keeps float32: each loads the other's state_dict."""
    gen = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.randn(50, generator=gen).to(torch.bfloat16))
    theirs = torch.optim.AdamW([p], lr=1e-2)
    p.grad = torch.randn(50, generator=gen).to(torch.bfloat16)
    theirs.step()
    q = torch.nn.Parameter(p.detach().clone())
    ours = dt.AdamW([q], lr=1e-2)
    ours.load_state_dict(theirs.state_dict())
    st = ours.state[q]
    assert st["exp_avg"].dtype == torch.float32
    assert torch.equal(st["exp_avg"], theirs.state[p]["exp_avg"].float())
    back = torch.optim.AdamW([torch.nn.Parameter(q.detach().clone())], lr=1e-2)
    back.load_state_dict(ours.state_dict())
    assert back.state[back.param_groups[0]["params"][0]]["exp_avg"].dtype == torch.bfloat16


def test_refusals():
    p16 = torch.nn.Parameter(torch.ones(8, dtype=torch.float16))
    with pytest.raises(ValueError, match="stochastic_rounding"):
        dt.Adam([p16], stochastic_rounding=True)
    with pytest.raises(ValueError, match="master_weights"):
        dt.Adam([torch.nn.Parameter(torch.ones(8))], master_weights=True)
    with pytest.raises(ValueError, match="state_dtype"):
        dt.Adam([torch.nn.Parameter(torch.ones(8, dtype=torch.float64))], state_dtype="bfloat16")
    with pytest.raises(TypeError, match="dtype"):
        dt.Adam([torch.ones(8, dtype=torch.int8)])
    opt = dt.SGD([torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))], lr=0.1)
    with pytest.raises(ValueError, match="at construction"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))],
                             "stochastic_rounding": True})
