"""Every optimizer kernel against its NumPy twin: random shapes, dtypes and valid
hyperparameters, 50-step trajectories, both the single-array and the list form."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import AWKWARD_SIZES, KERNELS, NAMES, assert_same_bits

DTYPES = [np.float32, np.float64]
STEPS = 50


def _shape(rng: np.random.Generator, size: int):
    # Same number of elements, sometimes as a 2-D or 3-D array: kernels must not care.
    if size >= 6 and size % 2 == 0 and rng.random() < 0.5:
        return (2, size // 2)
    if size >= 12 and size % 3 == 0 and rng.random() < 0.5:
        return (3, 1, size // 3)
    return (size,)


def _grads(rng, shape, dtype, scale):
    g = rng.standard_normal(shape) * scale
    g[rng.random(shape) < 0.05] = 0.0  # exact zeros exercise sqrt(0) and 0/eps paths
    return g.astype(dtype)


def _columns(kernel, hp, rows):
    """Rows of [param, *states] per tensor -> one list per argument (None if unused)."""
    used = [True] + [kernel.needs(hp)[s] for s in kernel.states]
    return [[row[k] for row in rows] if used[k] else None for k in range(len(used))]


def run_pair(kernel, sizes, dtype, hp, seed, steps=STEPS, list_form=False, check_every=10):
    """Runs fast and twin side by side over `steps` steps; compares every array."""
    rng = np.random.default_rng(seed)
    shapes = [_shape(rng, n) for n in sizes]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    fill = hp.get("initial_accumulator_value", 0.0) if kernel.name == "adagrad" else 0.0
    fast = [[p.copy()] + kernel.make_state(p, hp) for p in params]
    twin = [[p.copy()] + kernel.make_state(p, hp) for p in params]
    if fill:  # torch initializes sums to this value; the kernel must ignore it at step 1 anyway
        for row in twin:
            row[1].fill(fill)
    scale = rng.choice([1e-3, 1.0, 1e3])
    for step in range(1, steps + 1):
        grads = [_grads(rng, s, dtype, scale) for s in shapes]
        if list_form:
            cols_f, cols_t = _columns(kernel, hp, fast), _columns(kernel, hp, twin)
            kernel.call(kernel.fast, cols_f[0], grads, cols_f[1:], hp, step)
            kernel.call(kernel.twin, cols_t[0], grads, cols_t[1:], hp, step)
        else:
            for rf, rt, g in zip(fast, twin, grads):
                kernel.call(kernel.fast, rf[0], g, rf[1:], hp, step)
                kernel.call(kernel.twin, rt[0], g, rt[1:], hp, step)
        if step % check_every == 0 or step == steps:
            for t, (rf, rt) in enumerate(zip(fast, twin)):
                for k, (a, b) in enumerate(zip(rf, rt)):
                    if b is not None:
                        assert_same_bits(a, b, f"{kernel.name} tensor {t} array {k} step {step} hp={hp}")
    return fast


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_trajectory_matches_twin(name, data):
    kernel = KERNELS[name]
    hp = data.draw(kernel.hyper(), label="hyper")
    size = data.draw(st.one_of(st.sampled_from(AWKWARD_SIZES), st.integers(0, 20000)), label="size")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    run_pair(kernel, [size], dtype, hp, seed)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_list_trajectory_matches_twin(name, data):
    kernel = KERNELS[name]
    hp = data.draw(kernel.hyper(), label="hyper")
    sizes = data.draw(st.lists(st.sampled_from(AWKWARD_SIZES), min_size=0, max_size=6), label="sizes")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    run_pair(kernel, sizes, dtype, hp, seed, steps=20, list_form=True)


# Every combination of the boolean options at least once, whatever hypothesis draws.
_FLAG_GRID = {
    "sgd": [
        dict(momentum=mu, dampening=damp, nesterov=nest, maximize=mx, weight_decay=wd, momentum_form="torch")
        for mu, damp, nest, mx, wd in itertools.product([0.0, 0.9], [0.0, 0.3], [False, True], [False, True], [0.0, 0.01])
        if not (nest and (mu == 0.0 or damp != 0.0))
    ]
    + [
        dict(momentum=mu, maximize=mx, weight_decay=wd, momentum_form=form)
        for form, mu, mx, wd in itertools.product(["classical", "ema"], [0.0, 0.9], [False, True], [0.0, 0.01])
    ],
    "adagrad": [
        dict(lr_decay=d, weight_decay=wd, initial_accumulator_value=iav, maximize=mx)
        for d, wd, iav, mx in itertools.product([0.0, 0.01], [0.0, 0.01], [0.0, 0.1], [False, True])
    ],
    "rmsprop": [
        dict(centered=c, momentum=mu, weight_decay=wd, maximize=mx)
        for c, mu, wd, mx in itertools.product([False, True], [0.0, 0.9], [0.0, 0.01], [False, True])
    ],
    "adam": [
        dict(amsgrad=a, maximize=mx, decoupled_weight_decay=dec, bias_correction=bc, eps_inside_sqrt=ei, weight_decay=0.01)
        for a, mx, dec, bc, ei in itertools.product([False, True], repeat=5)
    ],
    "adamw": [
        dict(amsgrad=a, maximize=mx, bias_correction=bc, eps_inside_sqrt=ei)
        for a, mx, bc, ei in itertools.product([False, True], repeat=4)
    ],
    "lamb": [dict(weight_decay=wd, bias_correction=bc) for wd, bc in itertools.product([0.0, 0.01], [False, True])],
    "lars": [dict(momentum=mu, weight_decay=wd) for mu, wd in itertools.product([0.0, 0.9], [0.0, 1e-3])],
}


@pytest.mark.parametrize(
    "name,hp", [(n, hp) for n in NAMES for hp in _FLAG_GRID.get(n, [{}])], ids=lambda x: x if isinstance(x, str) else None
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_option_combination(name, hp, dtype):
    run_pair(KERNELS[name], [4097, 5], dtype, hp, seed=1234, steps=12, list_form=True, check_every=4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_gradients_propagate_like_twin(name, dtype):
    """NaN and inf in a gradient poison the same elements, in the same way, in both."""
    kernel = KERNELS[name]
    hp = dict(kernel.defaults)
    rng = np.random.default_rng(7)
    p = rng.standard_normal(37).astype(dtype)
    rows = [[p.copy()] + kernel.make_state(p, hp) for _ in range(2)]
    for step in range(1, 4):
        g = rng.standard_normal(37).astype(dtype)
        g[[3, 20]] = np.nan
        g[[5, 30]] = [np.inf, -np.inf]
        kernel.call(kernel.fast, rows[0][0], g, rows[0][1:], hp, step)
        kernel.call(kernel.twin, rows[1][0], g, rows[1][1:], hp, step)
    for a, b in zip(*rows):
        if b is not None:
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            assert_same_bits(a, b)


def test_seed_forms_of_momentum_by_hand():
    """The seeds' momentum forms, written out: 001 (lr inside) and 004 (EMA), from v = 0."""
    from deepoptim import functional as F

    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    p, v = np.array([0.0, 0.0]), np.zeros(2)
    F.sgd(p, g1, v, lr=0.1, momentum=0.9, momentum_form="classical")
    F.sgd(p, g2, v, lr=0.1, momentum=0.9, momentum_form="classical")
    v_expected = 0.9 * (0.1 * g1) + 0.1 * g2
    np.testing.assert_allclose(v, v_expected, rtol=1e-15)
    np.testing.assert_allclose(p, -(0.1 * g1) - v_expected, rtol=1e-15)

    p, v = np.array([0.0, 0.0]), np.zeros(2)
    F.sgd(p, g1, v, lr=0.1, momentum=0.9, momentum_form="ema")
    F.sgd(p, g2, v, lr=0.1, momentum=0.9, momentum_form="ema")
    v1 = 0.1 * g1
    v2 = 0.9 * v1 + 0.1 * g2
    np.testing.assert_allclose(v, v2, rtol=1e-15)
    np.testing.assert_allclose(p, -0.1 * v1 - 0.1 * v2, rtol=1e-15)


def test_seed_000_adam_form_by_hand():
    """The tutorial variant: m, v without bias correction, p -= lr * m / sqrt(v + eps)."""
    from deepoptim import functional as F

    p, m, v = np.array([1.0, -1.0]), np.zeros(2), np.zeros(2)
    g = np.array([0.3, -0.7])
    F.adam(p, g, m, v, step=1, lr=0.01, eps=1e-7, bias_correction=False, eps_inside_sqrt=True)
    m_e, v_e = 0.1 * g, 0.001 * g * g
    np.testing.assert_allclose(p, np.array([1.0, -1.0]) - 0.01 * m_e / np.sqrt(v_e + 1e-7), rtol=1e-14)


def test_lion_by_hand_and_against_optax():
    """Lion's update written out (sign of the interpolation, decoupled decay, then the
    momentum); and optax's lion trajectory where optax is installed."""
    from deepoptim import functional as F

    p, m = np.array([1.0, -1.0, 0.5]), np.zeros(3)
    g = np.array([0.3, -0.7, 0.0])
    F.lion(p, g, m, lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    np.testing.assert_array_equal(p, np.array([1.0, -1.0, 0.5]) * (1 - 0.05) - 0.1 * np.sign(0.1 * g))
    np.testing.assert_array_equal(m, (1 - 0.99) * g)
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50)
    p, m = p0.copy(), np.zeros(50)
    opt = optax.lion(learning_rate=1e-2, b1=0.9, b2=0.99, weight_decay=0.1)
    q = jnp.asarray(p0)
    state = opt.init(q)
    for _ in range(30):
        g = rng.standard_normal(50)
        F.lion(p, g, m, lr=1e-2, weight_decay=0.1)
        upd, state = opt.update(jnp.asarray(g), state, q)
        q = optax.apply_updates(q, upd)
    np.testing.assert_allclose(p, np.asarray(q), rtol=1e-5, atol=1e-6)


def test_radam_first_steps_are_momentum_sgd_then_rectified():
    """rho_t <= 5 for the first steps (b2 = 0.999): p -= lr * m / bc1, no adaptive rate;
    then the rectified Adam step."""
    from deepoptim import functional as F

    p, m, v = np.ones(2), np.zeros(2), np.zeros(2)
    g = np.array([0.5, -1.0])
    F.radam(p, g, m, v, step=1, lr=0.1)
    np.testing.assert_allclose(p, 1 - 0.1 * g, rtol=1e-15)
    rho_inf = 2 / (1 - 0.999) - 1
    t = next(t for t in range(1, 20) if rho_inf - 2 * t * 0.999**t / (1 - 0.999**t) > 5)
    assert t == 6  # the first rectified step
