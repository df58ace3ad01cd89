"""deepoptim.torch.Muon and Adafactor in every low-precision mode (issue 11): bfloat16 or
float16 tensors with float32, bfloat16 or 8-bit state, master weights, stochastic
rounding. Each torch adapter hands its step to deepoptim.optim's class, so each mode must
give that class's bits (parameters and state) over several steps; a state_dict resumes
bit for bit through torch.save although torch.optim's load_state_dict casts state to the
parameter's dtype (master weights stay float32, 8-bit codes uint8); bad options and bad
state are refused with deepoptim.optim's messages, nothing written."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import deepoptim.torch as dt  # noqa: E402
from deepoptim import optim  # noqa: E402
from deepoptim.reference._lowp import Blockwise8  # noqa: E402

# Muon: one matrix above int8_min_size (8-bit state), one below (float32 state).
# Adafactor: a matrix and a 3-D tensor (8-bit factors), a vector (8-bit variance), a small vector.
SHAPES = {"Muon": [(80, 64), (6, 5)], "Adafactor": [(72, 64), (3, 40, 40), (4100,), (7,)]}
HYPER = {"Muon": dict(lr=0.02, weight_decay=0.1), "Adafactor": dict(lr=0.05, weight_decay=0.1)}
TDTYPE = {"bf16": torch.bfloat16, "f16": torch.float16}
MODES = {  # stochastic rounding is for bfloat16 parameters without master weights
    "plain": {}, "master": {"master_weights": True}, "stochastic": {"stochastic_rounding": True, "seed": 11},
}
CASES = [(name, t, state, mode) for name in SHAPES for t in TDTYPE for state in ("float32", "bfloat16", "int8")
         for mode in MODES if not (mode == "stochastic" and t == "f16")]


def _bits(t):
    t = t.detach()
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _params(name, tdtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(tdtype)) for s in SHAPES[name]]


def _grads(ps, gen):
    return [torch.randn(p.shape, generator=gen).to(p.dtype) for p in ps]


def _step_both(ours, ps, ref, gs):
    for p, g in zip(ps, gs):
        p.grad = g
    ours.step()
    ref.step([dt._view(g).copy() for g in gs])


def _assert_state_is_the_numpy_classes(ours, ps, ref):
    """Every state tensor of the adapter has the bits of deepoptim.optim's state (8-bit:
    the codes and absmax), in the dtype deepoptim.optim keeps it in."""
    g = ref.param_groups[0]
    kept = 0
    for i, p in enumerate(ps):
        st = ours.state[p]
        for n, arrs in g["_state"].items():
            a = arrs[i]
            if n not in st:  # a state torch does not keep (a matrix's variance): empty in deepoptim.optim
                assert (a.codes if isinstance(a, Blockwise8) else a).size == 0, n
                continue
            kept += 1
            if isinstance(a, Blockwise8):
                assert st[n].dtype == torch.uint8 and st[n + "_absmax"].dtype == torch.float32, n
                np.testing.assert_array_equal(st[n].numpy(), a.codes, err_msg=n)
                np.testing.assert_array_equal(st[n + "_absmax"].numpy().view(np.uint32), a.absmax.view(np.uint32))
            else:
                assert dt._NP_DTYPE[st[n].dtype] == a.dtype, (n, st[n].dtype, a.dtype)
                np.testing.assert_array_equal(dt._view(st[n]).view(f"u{a.itemsize}"), a.view(f"u{a.itemsize}"),
                                              err_msg=n)
        if "step" in st:
            assert st["step"].dtype == torch.float32 and int(st["step"]) == g["_steps"][i]
    assert kept >= len(ps)


def _assert_same_params(ps, ref):
    for p, q in zip(ps, ref.param_groups[0]["params"]):
        np.testing.assert_array_equal(dt._view(p).view(np.uint16), q.view(np.uint16))


@pytest.mark.parametrize("name, tdtype, state, mode", CASES)
def test_every_mode_equals_the_numpy_class_and_resumes(name, tdtype, state, mode):
    kw = dict(HYPER[name], state_dtype=state, **MODES[mode])
    ps = _params(name, TDTYPE[tdtype])
    nps = [dt._view(p).copy() for p in ps]
    ours, ref = getattr(dt, name)(ps, **kw), getattr(optim, name)(nps, **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        _step_both(ours, ps, ref, _grads(ps, gen))
    _assert_same_params(ps, ref)
    _assert_state_is_the_numpy_classes(ours, ps, ref)
    big = ours.state[ps[0]]
    if mode == "master":
        assert big["master_param"].dtype == torch.float32
    if state == "int8":  # the first parameter is above int8_min_size, the last below
        assert any(k.endswith("_absmax") for k in big)
        assert not any(k.endswith("_absmax") for k in ours.state[ps[-1]])
    if mode == "stochastic":  # Muon keeps a step to draw by (torch.optim.Muon keeps none)
        assert int(big["step"]) == 5

    # Through torch.save and torch.load into a fresh optimizer: the same dtypes and bits
    # (torch.optim's load_state_dict would cast master weights and codes to bfloat16).
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    ps2 = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    ours2 = getattr(dt, name)(ps2, **kw)
    ours2.load_state_dict(torch.load(buf, weights_only=True))
    for p, p2 in zip(ps, ps2):
        assert set(ours2.state[p2]) == set(ours.state[p])
        for n, t in ours.state[p].items():
            t2 = ours2.state[p2][n]
            assert t2.dtype == t.dtype, (n, t2.dtype, t.dtype)
            assert torch.equal(_bits(t2), _bits(t)), n
    for _ in range(2):
        gs = _grads(ps, gen)
        for p2, g in zip(ps2, gs):
            p2.grad = g.clone()
        _step_both(ours, ps, ref, gs)
        ours2.step()
    for p, p2 in zip(ps, ps2):
        assert torch.equal(_bits(p), _bits(p2))
    _assert_same_params(ps2, ref)
    _assert_state_is_the_numpy_classes(ours2, ps2, ref)


def test_master_weights_and_codes_keep_their_dtype_through_load_state_dict():
    """torch.optim.Optimizer.load_state_dict casts every floating state tensor (and uint8
    codes) to the parameter's dtype; the adapters set them again from the saved tensors."""
    for name in SHAPES:
        ps = _params(name, torch.bfloat16)
        opt = getattr(dt, name)(ps, master_weights=True, state_dtype="int8")
        gen = torch.Generator().manual_seed(2)
        for p, g in zip(ps, _grads(ps, gen)):
            p.grad = g
        opt.step()
        sd = opt.state_dict()
        # What torch.optim's own load would make of it:
        plain = torch.optim.SGD([torch.nn.Parameter(p.detach().clone()) for p in ps])
        plain.load_state_dict({"state": sd["state"], "param_groups": [dict(sd["param_groups"][0], lr=0.1)]})
        cast = plain.state[plain.param_groups[0]["params"][0]]
        assert cast["master_param"].dtype == torch.bfloat16  # the cast the adapters undo
        ps2 = [torch.nn.Parameter(p.detach().clone()) for p in ps]
        opt2 = getattr(dt, name)(ps2, master_weights=True, state_dtype="int8")
        opt2.load_state_dict(sd)
        st = opt2.state[ps2[0]]
        assert st["master_param"].dtype == torch.float32
        assert torch.equal(st["master_param"], opt.state[ps[0]]["master_param"])
        codes = [k for k in st if k + "_absmax" in st]
        assert codes and all(st[k].dtype == torch.uint8 and st[k + "_absmax"].dtype == torch.float32 for k in codes)


def test_a_torch_optim_state_dict_loads_into_bfloat16_state():
    """torch.optim.Muon/Adafactor keep bfloat16 state for bfloat16 tensors: it loads into
    state_dtype="bfloat16" as is, and into the default float32 state widened."""
    for name in SHAPES:
        ps = _params(name, torch.bfloat16)
        theirs = getattr(torch.optim, name)([torch.nn.Parameter(p.detach().clone()) for p in ps])
        for p in theirs.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        theirs.step()
        sd = theirs.state_dict()
        for state, want in (("bfloat16", torch.bfloat16), (None, torch.float32)):
            ours = getattr(dt, name)([torch.nn.Parameter(p.detach().clone()) for p in ps], state_dtype=state)
            ours.load_state_dict(sd)
            q = ours.param_groups[0]["params"][0]
            for n, t in ours.state[q].items():
                if n != "step":
                    assert t.dtype == want, (n, t.dtype)
                    assert torch.equal(t.float(), theirs.state[theirs.param_groups[0]["params"][0]][n].float())
            q.grad = torch.ones_like(q)
            ours.step()


# ------------------------------------------------------------------ refusals
def _np_message(name, shapes, ndtype, kw):
    with pytest.raises((TypeError, ValueError)) as e:
        getattr(optim, name)([np.zeros(s, ndtype) for s in shapes], **HYPER[name], **kw)
    return e.type, str(e.value)


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("tdtype, kw", [
    (torch.float16, dict(stochastic_rounding=True)),
    (torch.bfloat16, dict(stochastic_rounding=True, master_weights=True)),
    (torch.float32, dict(master_weights=True)),
    (torch.float64, dict(state_dtype="bfloat16")),
    (torch.float64, dict(state_dtype="int8")),
    (torch.bfloat16, dict(state_dtype="float16")),
    (torch.bfloat16, dict(master_weights="yes")),
    (torch.bfloat16, dict(stochastic_rounding=1)),
    (torch.bfloat16, dict(seed=-1)),
    (torch.bfloat16, dict(seed=2**64)),
    (torch.bfloat16, dict(int8_min_size=-1)),
    (torch.bfloat16, dict(int8_min_size=2.5)),
], ids=lambda x: str(x))
def test_bad_options_get_the_numpy_classes_errors(name, tdtype, kw):
    ps = _params(name, tdtype)
    before = [p.detach().clone() for p in ps]
    etype, msg = _np_message(name, SHAPES[name], dt._NP_DTYPE[tdtype], kw)
    with pytest.raises(etype) as e:
        getattr(dt, name)(ps, **HYPER[name], **kw)
    assert str(e.value) == msg
    assert next(k for k in kw) in msg  # the message names the argument
    for p, b in zip(ps, before):
        assert torch.equal(_bits(p), _bits(b))


def _snapshot(opt, ps):
    return ([p.detach().clone() for p in ps],
            {i: {n: (t.clone() if isinstance(t, torch.Tensor) else t) for n, t in opt.state[p].items()}
             for i, p in enumerate(ps) if p in opt.state})


def _assert_untouched(opt, ps, snap):
    params, state = snap
    for p, b in zip(ps, params):
        assert torch.equal(_bits(p), _bits(b))
    assert {i for i, p in enumerate(ps) if opt.state.get(p)} == set(state)
    for i, st in state.items():
        mine = opt.state[ps[i]]
        assert set(mine) == set(st)
        for n, t in st.items():
            assert mine[n].dtype == t.dtype and torch.equal(_bits(mine[n]), _bits(t)), n


@pytest.mark.parametrize("name", list(SHAPES))
def test_bad_groups_and_gradients_are_refused_untouched(name):
    ps = _params(name, torch.bfloat16)
    opt = getattr(dt, name)(ps, **HYPER[name], state_dtype="int8", master_weights=True)
    gen = torch.Generator().manual_seed(3)
    for p, g in zip(ps, _grads(ps, gen)):
        p.grad = g
    opt.step()
    group = opt.param_groups[0]
    for key, value, needle in (("state_dtype", "bfloat16", "state_dtype"), ("state_dtype", None, "state_dtype"),
                               ("master_weights", False, "master_weights"), ("seed", -3, "seed"),
                               ("stochastic_rounding", True, "stochastic_rounding")):
        snap = _snapshot(opt, ps)
        old = group[key]
        group[key] = value
        for p, g in zip(ps, _grads(ps, gen)):
            p.grad = g
        with pytest.raises((TypeError, ValueError), match=needle):
            opt.step()
        group[key] = old
        _assert_untouched(opt, ps, snap)
    # a bad gradient on the last parameter: not even the first one moves
    snap = _snapshot(opt, ps)
    last = ps[-1]
    last.grad = torch.ones(tuple(last.shape) + (2,), dtype=last.dtype)[..., 0]  # not contiguous
    with pytest.raises(ValueError, match=f"parameter 0.{len(ps) - 1}"):
        opt.step()
    _assert_untouched(opt, ps, snap)
    # a group added later is checked with its own dtype
    with pytest.raises(ValueError, match="master_weights"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(4, 4))]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", list(SHAPES))
def test_bad_state_dicts_are_refused_untouched(name):
    ps = _params(name, torch.bfloat16)
    kw = dict(HYPER[name], state_dtype="int8", master_weights=True)
    opt = getattr(dt, name)(ps, **kw)
    gen = torch.Generator().manual_seed(4)
    for p, g in zip(ps, _grads(ps, gen)):
        p.grad = g
    opt.step()
    good = opt.state_dict()
    codes = next(k for k in opt.state[ps[0]] if k + "_absmax" in opt.state[ps[0]])

    def edited(fn):
        sd = {"state": {k: dict(v) for k, v in good["state"].items()},
              "param_groups": [dict(g) for g in good["param_groups"]]}
        fn(sd)
        return sd

    bad = {
        "master_param": edited(lambda sd: sd["state"][0].pop("master_param")),
        f"{codes}_absmax": edited(lambda sd: sd["state"][0].update({codes + "_absmax": torch.ones(3)})),
        "8 bits": edited(lambda sd: sd["state"][0].update({codes: sd["state"][0][codes].float()})),
        "negative": edited(lambda sd: sd["state"][0].update({codes + "_absmax": -sd["state"][0][codes + "_absmax"]})),
        "shape": edited(lambda sd: sd["state"][0].update({"master_param": torch.zeros(3)})),
        "step": edited(lambda sd: sd["state"][0].update({"step": torch.tensor(-1.0)})) if name == "Adafactor" else None,
        "state_dtype": edited(lambda sd: sd["param_groups"][0].update({"state_dtype": "float16"})),
        "seed": edited(lambda sd: sd["param_groups"][0].update({"seed": -1})),
    }
    for needle, sd in bad.items():
        if sd is None:
            continue
        snap = _snapshot(opt, ps)
        with pytest.raises((TypeError, ValueError), match=needle):
            opt.load_state_dict(sd)
        _assert_untouched(opt, ps, snap)
        assert opt.param_groups[0]["state_dtype"] == "int8" and opt.param_groups[0]["seed"] == 0


def test_stochastic_rounding_in_a_later_group_needs_it_at_construction():
    opt = dt.Muon([torch.nn.Parameter(torch.ones(4, 4, dtype=torch.bfloat16))])
    with pytest.raises(ValueError, match="at construction"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(4, 4, dtype=torch.bfloat16))],
                             "stochastic_rounding": True})
    # Adafactor keeps a step anyway (as torch does): a later group may round stochastically
    opt = dt.Adafactor([torch.nn.Parameter(torch.ones(4, 4, dtype=torch.bfloat16))])
    opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(4, 4, dtype=torch.bfloat16))],
                         "stochastic_rounding": True})


def test_the_options_are_keyword_only_with_the_elementwise_adapters_defaults():
    import inspect

    want = {k: p.default for k, p in inspect.signature(dt.AdamW.__init__).parameters.items()
            if k in ("state_dtype", "master_weights", "stochastic_rounding", "seed", "int8_min_size")}
    assert len(want) == 5
    for cls in (dt.Muon, dt.Adafactor):
        sig = inspect.signature(cls.__init__).parameters
        assert {k: sig[k].default for k in want} == want
        assert all(sig[k].kind is inspect.Parameter.KEYWORD_ONLY for k in want)
        theirs = list(inspect.signature(getattr(torch.optim, cls.__name__).__init__).parameters)
        assert list(sig)[: len(theirs)] == theirs  # torch's arguments first, unchanged
