"""``deepoptim demo``: classic optimization experiments, run for real, with pictures.

1. ``linear``: linear regression on synthetic data (y = 2x + noise and y = 3x + 2 + noise)
   with full-batch gradient descent, SGD (Robbins & Monro, 1951), mini-batch SGD, momentum
   (Polyak, 1964), Nesterov's accelerated gradient (Nesterov, 1983), AdaGrad (Duchi et al.,
   2011), RMSProp (Tieleman & Hinton, 2012) and Adam (Kingma & Ba, 2015); loss curves and
   final parameters against the closed-form least-squares solution.
2. ``schedules``: every learning-rate schedule over one horizon (step, multi-step,
   exponential and polynomial decay, cosine annealing and warm restarts (Loshchilov &
   Hutter, 2017), linear warmup (Goyal et al., 2017), one-cycle (Smith & Topin, 2019), and
   a restart when the loss crosses a threshold), and what each does to the
   linear-regression loss.
3. ``gradients``: vanishing and exploding gradients (Hochreiter, 1991; Bengio, Simard &
   Frasconi, 1994; Glorot & Bengio, 2010) in a 20-layer MLP: sigmoid vs ReLU with He
   initialization (He et al., 2015), with and without BatchNorm (Ioffe & Szegedy, 2015),
   with and without global-norm clipping (Pascanu, Mikolov & Bengio, 2013); per-layer
   gradient norms at initialization and during training, and the loss curves.
4. ``mlp``: an MLP classifier with BatchNorm and Dropout (Srivastava et al., 2014) trained
   with SGD-momentum, Adam and AdamW (Loshchilov & Hutter, 2019); train/validation
   accuracy curves (synthetic data by default, scikit-learn's digits with
   ``--dataset digits``).
5. ``precision``: the same MLP trained with AdamW in float32, with bfloat16 state, and
   with bfloat16 parameters rounded to nearest, stochastically (Gupta et al., 2015), or
   from float32 master weights; where rounding to nearest stalls (small learning rate,
   late training) and what each mode costs in loss and bytes.

Every configuration draws its data order from its own random stream derived from
``--seed``, so configurations that differ in one option see the same mini-batches.
Writes PNGs, ``summary.json`` and ``report.md`` into ``--out`` (default ./deepoptim-demo).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

import numpy as np

import deepoptim
from deepoptim import clip, nn, schedules
from deepoptim.optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_T = TypeVar("_T")
# A JSON-like experiment summary (numbers, strings, lists and nested summaries).
Summary = Dict[str, Any]

EXPERIMENTS = ("linear", "schedules", "gradients", "mlp", "precision")
DIVERGED_LOSS = 1e4  # a cross-entropy above this (logits of that size) or inf/NaN: the run diverged
MAX_SEED = 2**32 - 1


class DemoError(Exception):
    """A problem the user can fix (bad arguments, missing extra): printed, exit code 2."""


def _need_extras() -> None:
    missing = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        missing.append("matplotlib")
    try:
        import tqdm  # type: ignore[import-untyped, unused-ignore]  # noqa: F401  (stubs: types-tqdm, optional)
    except ImportError:
        missing.append("tqdm")
    if missing:
        raise DemoError(
            f"the demo needs {' and '.join(missing)}: install them with\n"
            f'    pip install "deepoptim[demo]"\n(or: pip install {" ".join(missing)})'
        )
    import matplotlib

    matplotlib.use("Agg")


def _save(fig: Figure, out: str, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=100)
    plt.close(fig)
    return name


def _bar(iterable: Iterable[_T], desc: str, quiet: bool, total: Optional[int] = None) -> Iterable[_T]:
    from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]  # stubs: types-tqdm, optional

    bar: Iterable[_T] = tqdm(iterable, desc=desc, total=total, disable=quiet, leave=False, file=sys.stderr)
    return bar


# ------------------------------------------------------------------ 1. linear regression
def _linear_data(kind: str, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, str]:
    x = rng.uniform(0, 2, n)
    if kind == "2x":
        y, label = 2 * x + rng.standard_normal(n) * 0.5, "y = 2x + noise"
    else:
        y, label = 3 * x + 2 + rng.standard_normal(n) * 0.5, "y = 3x + 2 + noise"
    return np.stack([x, np.ones(n)], 1), y, label


def _mse_grad(A: np.ndarray, w: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray]:
    r = A @ w - y
    return float(np.mean(r * r)), 2.0 * A.T @ r / len(y)


def _cos(lr: float, T: int) -> schedules.cosine:
    return schedules.cosine(lr, total_steps=T)


LINEAR_METHODS: Dict[str, Tuple[Optional[int], Callable[[Dict[str, np.ndarray], int], Optimizer]]] = {
    # name: (batch size: None = full batch, optimizer factory(params, total steps)). The
    # plain gradient descents keep a constant rate; momentum and the
    # adaptive methods decay theirs with a cosine, so they settle at the optimum instead
    # of a mini-batch noise floor.
    "GD (full batch)": (None, lambda p, T: SGD(p, lr=0.4)),
    "SGD (batch 1)": (1, lambda p, T: SGD(p, lr=0.01)),
    "mini-batch SGD (32)": (32, lambda p, T: SGD(p, lr=0.05)),
    "momentum": (32, lambda p, T: SGD(p, lr=_cos(0.02, T), momentum=0.9)),
    "Nesterov": (32, lambda p, T: SGD(p, lr=_cos(0.02, T), momentum=0.9, nesterov=True)),
    "AdaGrad": (32, lambda p, T: Adagrad(p, lr=_cos(2.0, T))),
    "RMSProp": (32, lambda p, T: RMSprop(p, lr=_cos(0.1, T))),
    "Adam": (32, lambda p, T: Adam(p, lr=_cos(0.3, T))),
}


def _train_linear(A: np.ndarray, y: np.ndarray, make_opt: Callable[[Dict[str, np.ndarray], int], Optimizer],
                  batch: Optional[int], epochs: int, seed: int) -> Tuple[np.ndarray, List[float]]:
    w = {"w": np.zeros(2)}
    per_epoch = 1 if batch is None else -(-len(y) // batch)
    opt = make_opt(w, epochs * per_epoch)
    losses: List[float] = []
    for e in range(epochs):
        for xb, yb in nn.minibatches(A, y, batch, seed=seed + e):
            _, g = _mse_grad(xb, w["w"], yb)
            opt.step({"w": g})
        losses.append(_mse_grad(A, w["w"], y)[0])
    return w["w"], losses


def exp_linear(out: str, quick: bool, seed: int, quiet: bool) -> Summary:
    import matplotlib.pyplot as plt

    epochs = 30 if quick else 100
    n = 200 if quick else 1000
    rng = np.random.default_rng(seed)
    summary: Summary = {}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, kind in zip(axes, ("2x", "3x+2")):
        A, y, label = _linear_data(kind, n, rng)
        w_ls = np.linalg.lstsq(A, y, rcond=None)[0]
        loss_ls = _mse_grad(A, w_ls, y)[0]
        rows: Summary = {}
        for name in _bar(LINEAR_METHODS, f"linear {kind}", quiet):
            batch, make = LINEAR_METHODS[name]
            w, losses = _train_linear(A, y, make, batch, epochs, seed)
            rows[name] = {"slope": float(w[0]), "intercept": float(w[1]), "final_loss": losses[-1],
                          "loss_over_optimum": losses[-1] / loss_ls}
            ax.plot(np.arange(1, epochs + 1), np.array(losses) - loss_ls + 1e-12, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("MSE - least-squares MSE")
        ax.set_title(f"{label}: least squares slope {w_ls[0]:.3f}, intercept {w_ls[1]:.3f}")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        summary[kind] = {"least_squares": {"slope": float(w_ls[0]), "intercept": float(w_ls[1]), "loss": loss_ls},
                         "methods": rows}
    fig.suptitle("Linear regression: distance to the least-squares optimum")
    _save(fig, out, "linear_loss.png")
    return {"images": ["linear_loss.png"], **summary}


# ------------------------------------------------------------------ 2. schedules
def _schedule_zoo(lr: float, T: int) -> Dict[str, Callable[[int], float]]:
    return {
        "constant": schedules.constant(lr),
        "step decay": schedules.step_decay(lr, step_size=max(1, T // 4), gamma=0.5),
        "multi-step": schedules.multi_step(lr, milestones=(T // 2, 3 * T // 4), gamma=0.2),
        "exponential": schedules.exponential(lr, gamma=0.01 ** (1 / T)),
        "polynomial (power 2)": schedules.polynomial(lr, total_steps=T, power=2.0),
        "linear decay": schedules.polynomial(lr, total_steps=T, power=1.0),
        "cosine": schedules.cosine(lr, total_steps=T),
        "warmup + cosine": schedules.warmup(schedules.cosine(lr, total_steps=T - T // 10), warmup_steps=T // 10),
        "cosine restarts (SGDR)": schedules.cosine_restarts(lr, first_period=max(1, T // 7), period_mult=2),
        "one-cycle": schedules.one_cycle(lr, total_steps=T),
    }


def _stream(seed: int, experiment: int) -> np.random.Generator:
    """A fresh random stream for one configuration of one experiment, derived from the
    seed alone: configurations compared side by side draw the same mini-batches."""
    return np.random.default_rng([seed, experiment])


def exp_schedules(out: str, quick: bool, seed: int, quiet: bool) -> Summary:
    import matplotlib.pyplot as plt

    T = 200 if quick else 1000
    tail = max(1, T // 10)  # the final loss is averaged over the last 10% of steps
    A, y, label = _linear_data("3x+2", 256, np.random.default_rng(seed + 1))
    loss_ls = _mse_grad(A, np.linalg.lstsq(A, y, rcond=None)[0], y)[0]
    zoo = _schedule_zoo(0.05, T)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1.4, 1]})
    results: Summary = {}
    colors: Dict[str, str] = {}

    def train(lr: Union[float, schedules.Schedule],
              on_step: Optional[Callable[[float], object]] = None) -> Tuple[List[float], List[float]]:
        batches = _stream(seed, 2)  # the same mini-batches for every schedule
        w = {"w": np.zeros(2)}
        opt = SGD(w, lr=lr)
        lrs: List[float] = []
        losses: List[float] = []
        for k in range(T):
            lrs.append(opt.lr[0])
            idx = batches.integers(0, len(y), 16)
            _, g = _mse_grad(A[idx], w["w"], y[idx])
            opt.step({"w": g})
            losses.append(_mse_grad(A, w["w"], y)[0])
            if on_step is not None:
                on_step(losses[-1])
        return lrs, losses

    def record(name: str, losses: List[float], **extra: object) -> None:
        results[name] = {"final_loss": losses[-1], "loss_over_optimum": losses[-1] / loss_ls,
                         "excess_mse_tail": float(np.mean(np.array(losses[-tail:]) - loss_ls)), **extra}

    for name in _bar(zoo, "schedules", quiet):
        (line,) = axes[0].plot([zoo[name](k) for k in range(T)], label=name)
        colors[name] = line.get_color()
        record(name, train(zoo[name])[1])
    # Restart when the loss crosses a threshold that tightens after each restart.
    restart = schedules.RestartOnThreshold(schedules.exponential(0.05, gamma=0.99), threshold=loss_ls * 1.05,
                                           threshold_decay=0.99, min_steps_between=T // 10)
    lrs, losses = train(restart, restart.step)
    name = "restart on loss threshold"
    axes[0].plot(lrs, label=name, color="black", linestyle=":")
    colors[name] = "black"
    record(name, losses, restarts=restart.restarts)

    axes[0].set_title("learning rate by step")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("learning rate")
    axes[0].grid(True, alpha=0.3)
    # The legend goes under the panel, never over the curves.
    axes[0].legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    names = list(results)[::-1]
    vals = [results[n]["excess_mse_tail"] for n in names]
    bars = axes[1].barh(names, vals, color=[colors[n] for n in names])
    axes[1].set_xscale("log")
    for b, v in zip(bars, vals):
        axes[1].text(v, b.get_y() + b.get_height() / 2, f" {v:.1e}", va="center", fontsize=8)
    axes[1].set_xlim(min(vals) / 3, max(vals) * 12)
    axes[1].set_xlabel(f"MSE - least-squares MSE, mean of the last {tail} steps (log)")
    axes[1].set_title(f"how close each schedule ends: {label},\nmini-batch SGD, {T} steps")
    axes[1].grid(True, axis="x", alpha=0.3)
    _save(fig, out, "schedules.png")
    return {"images": ["schedules.png"], "horizon": T, "tail_steps": tail, "least_squares_mse": loss_ls,
            "schedules": results}


# ------------------------------------------------------------------ 3. gradients
def _deep_mlp(act: str, bn: bool, depth: int, width: int, seed: int) -> nn.Sequential:
    layers: List[Union[nn.Module, nn.BatchNorm]] = []
    d_in = 10
    for i in range(depth):
        layers.append(nn.Linear(d_in, width, seed=seed + i))
        if bn:
            layers.append(nn.BatchNorm(width))
        layers.append(nn.Sigmoid() if act == "sigmoid" else nn.ReLU())
        d_in = width
    layers.append(nn.Linear(d_in, 2, seed=seed + depth))
    return nn.Sequential(*layers)


def _scale_init(model: nn.Sequential, gain: float) -> None:
    """Multiplies every Linear weight by ``gain``: torch's default init has std
    1/sqrt(3*fan_in); gain sqrt(6) gives He's sqrt(2/fan_in) for ReLU."""
    for m in model.modules:
        if isinstance(m, nn.Linear):
            m.weight *= gain


def _layer_grad_norms(model: nn.Sequential) -> List[float]:
    return [float(np.linalg.norm(m.grad_weight)) for m in model.modules if isinstance(m, nn.Linear)]


def exp_gradients(out: str, quick: bool, seed: int, quiet: bool) -> Summary:
    import matplotlib.pyplot as plt

    depth, width = 20, 32
    steps = 60 if quick else 300
    rng = np.random.default_rng(seed + 2)
    X = rng.standard_normal((512, 10)).astype(np.float32)
    y = (np.sin(X[:, 0] * 2) + X[:, 1] > 0).astype(np.int64)
    he = math.sqrt(6.0)
    configs = {  # name: (activation, BatchNorm, init gain, clip)
        "sigmoid": ("sigmoid", False, 1.0, False),
        "sigmoid + BatchNorm": ("sigmoid", True, 1.0, False),
        "ReLU, He init": ("relu", False, he, False),
        "ReLU + BatchNorm": ("relu", True, 1.0, False),
        "ReLU, 1.5x He init (exploding)": ("relu", False, 1.5 * he, False),
        "same + clip norm 1": ("relu", False, 1.5 * he, True),
    }
    results: Summary = {}
    init_norms: Dict[str, List[float]] = {}
    curves: Dict[str, List[float]] = {}
    during: Dict[str, np.ndarray] = {}
    errstate = np.errstate(all="ignore")  # the exploding run overflows on purpose
    errstate.__enter__()
    for name in _bar(configs, "gradients", quiet):
        act, bn, gain, clipped = configs[name]
        model = _deep_mlp(act, bn, depth, width, seed)
        _scale_init(model, gain)
        opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
        batches = _stream(seed, 3)  # the same mini-batches for every configuration
        losses: List[float] = []
        norms: List[List[float]] = []
        for k in range(steps):
            idx = batches.integers(0, len(y), 64)
            loss, d = nn.softmax_cross_entropy(model(X[idx]), y[idx])
            model.backward(d)
            ln = _layer_grad_norms(model)
            if k == 0:
                init_norms[name] = ln
            norms.append(ln)
            grads = model.gradients()
            if clipped:
                clip.clip_grad_norm(grads, max_norm=1.0)
            opt.step(grads)
            losses.append(loss if math.isfinite(loss) else float("nan"))
        curves[name] = losses
        during[name] = np.array(norms)
        nonfinite = [k for k, v in enumerate(losses) if not math.isfinite(v)]
        blown = [k for k, v in enumerate(losses) if not math.isfinite(v) or v > DIVERGED_LOSS]
        results[name] = {
            "first_layer_grad_norm_at_init": init_norms[name][0],
            "last_layer_grad_norm_at_init": init_norms[name][-1],
            "final_loss": float(np.nanmean(losses[-10:])) if not all(map(math.isnan, losses[-10:])) else None,
            "diverged": bool(blown),
            "diverged_at_step": blown[0] + 1 if blown else None,
            "nonfinite_from_step": nonfinite[0] + 1 if nonfinite else None,
            "max_loss": float(np.nanmax(losses)) if not all(map(math.isnan, losses)) else None,
            "zero_grad_layer_steps": int(np.sum(during[name] == 0)),
        }
    errstate.__exit__(None, None, None)
    from matplotlib.ticker import MaxNLocator

    layers_axis = np.arange(1, depth + 2)  # Linear layers numbered from 1 (input side) to depth + 1 (output)
    fig, ax = plt.subplots(2, 2, figsize=(14, 9.5))
    axes = [ax[0, 0], ax[0, 1], ax[1, 0], ax[1, 1]]
    for name, ln in init_norms.items():
        # The clipped run starts from the exploding run's weights and batch, so at init the two
        # curves coincide: dashed over solid keeps both visible.
        same = name.startswith("same")
        axes[0].plot(layers_axis, np.maximum(ln, 1e-30), marker="x" if same else ".", label=name,
                     linestyle="--" if same else "-", linewidth=2.2 if same else 1.5)
    axes[0].set_yscale("log")
    axes[0].set_xlabel(f"Linear layer (1 = input side, {depth + 1} = output)")
    axes[0].set_ylabel("|dL/dW| at initialization")
    axes[0].set_title(f"{depth}-layer MLP: gradient norm per layer at init")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlim(0.5, depth + 1.5)
    # Loss: the axis covers the runs that stayed finite; a run that leaves it is cut at the
    # top edge and marked where it diverged.
    kept = [v for n, c in curves.items() if not results[n]["diverged"] for v in c if math.isfinite(v)]
    top, bottom = max(kept) * 3, min(kept) / 2
    steps_axis = np.arange(1, steps + 1)
    for name, losses in curves.items():
        arr = np.array(losses)
        inside = np.isfinite(arr) & (arr <= top)
        (line,) = axes[1].plot(steps_axis, np.where(inside, arr, np.nan), label=name, linewidth=1)
        if not inside.all():  # cut at the top edge: mark where it leaves, say how far it went
            r, first_out = results[name], int(np.argmin(inside)) + 1
            axes[1].plot([first_out], [top], marker="X", markersize=11, color=line.get_color(), clip_on=False)
            note = (f"{name}: diverged at step {first_out}"
                    + (f", loss up to {r['max_loss']:.0e}" if r["max_loss"] is not None else "")
                    + (f", inf/NaN from step {r['nonfinite_from_step']}" if r["nonfinite_from_step"] else ""))
            axes[1].annotate(note, xy=(first_out, top), xytext=(steps * 0.15, top / 6), color=line.get_color(),
                             fontsize=8, arrowprops={"arrowstyle": "->", "color": line.get_color()})
    axes[1].set_ylim(bottom, top)
    axes[1].set_xlim(0, steps + 1)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("training loss (log)")
    axes[1].set_title(f"training loss (axis cut at {top:.3g}; X: a run diverged)")
    axes[1].set_yscale("log")
    for a, name in ((axes[2], "sigmoid"), (axes[3], "same + clip norm 1")):
        grid = during[name].T  # (layer, step)
        with np.errstate(divide="ignore", invalid="ignore"):
            logn = np.log10(grid)
        positive = np.isfinite(logn)
        img = np.ma.masked_where(grid == 0, np.where(np.isfinite(grid), logn, np.nan))
        img = np.ma.masked_invalid(img)
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("0.6")  # exactly-zero (and non-finite) gradients: grey, outside the colour scale
        im = a.imshow(img, aspect="auto", cmap=cmap, origin="lower", interpolation="nearest",
                      extent=(0.5, steps + 0.5, 0.5, depth + 1.5),
                      vmin=float(logn[positive].min()), vmax=float(logn[positive].max()))
        a.set_xlabel("step")
        a.set_ylabel("Linear layer (1 = input side)")
        a.yaxis.set_major_locator(MaxNLocator(integer=True))
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        zero_rows = np.flatnonzero((grid == 0).any(axis=1)) + 1
        title = (f"{'exploding init, clipped' if 'clip' in name else name}: log10 |dL/dW|"
                 + (" (before clipping)" if "clip" in name else ""))
        if zero_rows.size:
            title += (f"\ngrey: exactly 0 (layers {zero_rows.min()}-{zero_rows.max()}): the ReLUs above them "
                      "are all off for that batch")
        a.set_title(title, fontsize=10)
        fig.colorbar(im, ax=a)
    for a in axes[:2]:
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7, loc="lower right" if a is axes[0] else "center right")
    _save(fig, out, "gradients.png")
    return {"images": ["gradients.png"], "depth": depth, "configs": results}


# ------------------------------------------------------------------ 4. MLP classifier
def synthetic_rings(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The demo's default classification data: three noisy concentric rings (radius 1, 2,
    3; noise 0.25) in the first two of 10 features, the other 8 pure noise (std 0.5).
    Not linearly separable: a linear model stays near chance (1/3). Returns (X float32
    (n, 10), labels int64 (n,))."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    r = labels + 1 + rng.standard_normal(n) * 0.25
    th = rng.uniform(0, 2 * np.pi, n)
    X = np.hstack([np.stack([r * np.cos(th), r * np.sin(th)], 1), rng.standard_normal((n, 8)) * 0.5])
    return X.astype(np.float32), labels


def _dataset(name: str, quick: bool, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    if name == "digits":
        try:
            from sklearn.datasets import load_digits  # type: ignore[import-not-found, import-untyped, unused-ignore]  # optional, untyped
        except ImportError:
            raise DemoError("--dataset digits needs scikit-learn: pip install scikit-learn") from None
        d = load_digits()
        X = (d.data / 16.0).astype(np.float32)
        perm = np.random.default_rng(seed).permutation(len(X))
        X, y = X[perm], d.target[perm].astype(np.int64)
        cut = int(0.8 * len(X))
        return X[:cut], y[:cut], X[cut:], y[cut:], "scikit-learn digits (8x8 images, 10 classes)"
    n = 1500 if quick else 6000
    Xtr, ytr = synthetic_rings(n, seed + 10)
    Xva, yva = synthetic_rings(n // 3, seed + 11)
    return Xtr, ytr, Xva, yva, "synthetic: 3 concentric rings + 8 noise features"


def exp_mlp(out: str, quick: bool, seed: int, quiet: bool, dataset: str = "synthetic") -> Summary:
    import matplotlib.pyplot as plt

    Xtr, ytr, Xva, yva, desc = _dataset(dataset, quick, seed)
    k = int(max(ytr.max(), yva.max())) + 1
    epochs = 6 if quick else 20
    opts: Dict[str, Callable[[Dict[str, np.ndarray]], Optimizer]] = {
        "SGD-momentum": lambda p: SGD(p, lr=0.05, momentum=0.9),
        "Adam": lambda p: Adam(p, lr=2e-3),
        "AdamW": lambda p: AdamW(p, lr=2e-3, weight_decay=1e-2),
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    results: Summary = {}
    for name in _bar(opts, "mlp", quiet):
        model = nn.Sequential(
            nn.Linear(Xtr.shape[1], 128, seed=seed + 1), nn.BatchNorm(128), nn.ReLU(), nn.Dropout(0.2, seed=seed + 2),
            nn.Linear(128, 64, seed=seed + 3), nn.BatchNorm(64), nn.ReLU(), nn.Dropout(0.2, seed=seed + 4),
            nn.Linear(64, k, seed=seed + 5),
        )
        opt = opts[name](model.parameters())
        tr, va = [], []
        for e in range(epochs):
            model.train()
            for xb, yb in nn.minibatches(Xtr, ytr, 64, seed=seed + e):
                _, d = nn.softmax_cross_entropy(model(xb), yb)
                model.backward(d)
                opt.step(model.gradients())
            model.eval()
            tr.append(nn.accuracy(model(Xtr), ytr))
            va.append(nn.accuracy(model(Xva), yva))
        axes[0].plot(np.arange(1, epochs + 1), tr, marker=".", label=name)
        axes[1].plot(np.arange(1, epochs + 1), va, marker=".", label=name)
        results[name] = {"train_accuracy": tr[-1], "val_accuracy": va[-1], "curve_val": va}
    for ax, t in zip(axes, ("training accuracy", "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(t)
        ax.set_title(t)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"MLP with BatchNorm and Dropout on {desc}")
    _save(fig, out, "mlp_accuracy.png")
    return {"images": ["mlp_accuracy.png"], "dataset": desc, "epochs": epochs, "optimizers": results}


# ------------------------------------------------------------------ 5. low precision
#: The precision modes, in plot order: (parameters in bfloat16?, AdamW options).
PRECISION_MODES: Dict[str, Tuple[bool, Dict[str, Any]]] = {
    "float32": (False, {}),
    "bfloat16 state": (False, {"state_dtype": "bfloat16"}),
    "8-bit state": (False, {"state_dtype": "int8", "int8_min_size": 0}),
    "bfloat16 params, nearest": (True, {}),
    "bfloat16 params, stochastic rounding": (True, {"stochastic_rounding": True}),
    "bfloat16 params, float32 master weights": (True, {"master_weights": True}),
}
#: Optimizer bytes per parameter of each mode (parameter, gradient, AdamW's two moments,
#: master copy), as stored.
PRECISION_BYTES = {"float32": 16, "bfloat16 state": 12, "8-bit state": 10, "bfloat16 params, nearest": 12,
                   "bfloat16 params, stochastic rounding": 12, "bfloat16 params, float32 master weights": 16}


def train_precision(mode: str, steps: int, seed: int, lr: float = 3e-3, final_lr: float = 3e-5,
                    every: int = 25) -> Summary:
    """Trains the precision experiment's MLP (10-64-64-3, ReLU) on the synthetic rings with
    AdamW (cosine decay from ``lr`` to ``final_lr``, batch 128) in one of
    :data:`PRECISION_MODES`. bfloat16 parameters are trained the way mixed-precision
    training runs: the forward and backward passes compute in float32 on the widened
    bfloat16 weights, the gradients are rounded to bfloat16, and the optimizer updates the
    bfloat16 parameters (rounding to nearest, stochastically, or from float32 master
    weights). Every mode starts from the same weights and sees the same mini-batches.

    Returns the per-step mini-batch losses, the per-step fraction of stored parameters
    that changed, the parameter vector every ``every`` steps, and the final loss on the
    whole training set."""
    import ml_dtypes

    low, kw = PRECISION_MODES[mode]
    bf16 = np.dtype(ml_dtypes.bfloat16)
    X, y = synthetic_rings(6000, seed + 10)
    model = nn.Sequential(nn.Linear(10, 64, seed=seed + 1), nn.ReLU(), nn.Linear(64, 64, seed=seed + 2), nn.ReLU(),
                          nn.Linear(64, 3, seed=seed + 3))
    work = model.parameters()  # the float32 arrays forward and backward compute with
    store = {k: v.astype(bf16) for k, v in work.items()} if low else work
    extra = dict(kw, seed=seed) if kw.get("stochastic_rounding") else kw
    opt = AdamW(store, lr=schedules.cosine(lr, steps, final_lr), weight_decay=0.0, **extra)
    rng = _stream(seed, 5)
    losses: List[float] = []
    moved: List[float] = []
    snapshots: List[np.ndarray] = []

    def widen() -> None:
        if low:
            for k in work:
                work[k][...] = store[k].astype(np.float32)

    for t in range(steps):
        widen()
        if t % every == 0:
            snapshots.append(np.concatenate([work[k].ravel() for k in sorted(work)]).astype(np.float64))
        idx = rng.integers(0, len(X), 128)
        loss, d = nn.softmax_cross_entropy(model(X[idx]), y[idx])
        model.backward(d)
        grads = model.gradients()
        before = [store[k].copy() for k in sorted(store)]
        opt.step({k: g.astype(bf16) for k, g in grads.items()} if low else grads)
        changed = sum(int(np.count_nonzero(b != store[k])) for b, k in zip(before, sorted(store)))
        moved.append(changed / sum(b.size for b in before))
        losses.append(float(loss))
    widen()
    snapshots.append(np.concatenate([work[k].ravel() for k in sorted(work)]).astype(np.float64))
    full, _ = nn.softmax_cross_entropy(model(X), y)
    return {"losses": losses, "moved": moved, "snapshots": snapshots, "final_loss": float(full)}


def _smooth(x: List[float], k: int) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if len(a) < k:
        return a
    return np.convolve(a, np.ones(k) / k, mode="valid")


def exp_precision(out: str, quick: bool, seed: int, quiet: bool) -> Summary:
    import matplotlib.pyplot as plt

    steps = 600 if quick else 2000
    runs = {m: train_precision(m, steps, seed) for m in _bar(PRECISION_MODES, "precision", quiet)}
    ref = runs["float32"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    k = max(steps // 40, 5)
    results: Summary = {}
    tail = max(steps // 10, 1)
    for m, r in runs.items():
        x = np.arange(len(_smooth(r["losses"], k))) + k
        axes[0].plot(x, _smooth(r["losses"], k), label=m, lw=1.3)
        axes[1].plot(np.arange(len(_smooth(r["moved"], k))) + k, _smooth(r["moved"], k), label=m, lw=1.3)
        dist = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(r["snapshots"], ref["snapshots"])]
        axes[2].plot(np.arange(len(dist)) * 25, dist, label=m, lw=1.3)
        results[m] = {"final_loss": r["final_loss"], "loss_over_float32": r["final_loss"] / ref["final_loss"],
                      "distance_from_float32": dist[-1], "moved_last_10pct": float(np.mean(r["moved"][-tail:])),
                      "bytes_per_param": PRECISION_BYTES[m]}
    axes[0].set_yscale("log")
    axes[0].set_title(f"training loss (mean of {k} steps)")
    axes[1].set_title("fraction of stored parameters that changed, per step")
    axes[1].set_yscale("log")
    axes[2].set_title("distance from the float32 run, |w - w32| / |w32|")
    for a in axes:
        a.set_xlabel("step (lr: cosine 3e-3 -> 3e-5)")
        a.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("AdamW on bfloat16: late in training (small lr) the update falls below half a bfloat16 ulp; "
                 "nearest rounding drops it, stochastic rounding and master weights keep it", fontsize=10)
    _save(fig, out, "precision.png")
    return {"images": ["precision.png"], "steps": steps, "modes": results}


# ------------------------------------------------------------------ driver
def _report(out: str, summary: Summary) -> None:
    lines = ["# deepoptim demo\n", f"deepoptim {summary['deepoptim']['version']} "
             f"({summary['deepoptim']['isa']}), seed {summary['seed']}, quick={summary['quick']}. "
             "Each configuration draws its mini-batches from its own random stream derived from the seed, so "
             "configurations compared side by side see the same data in the same order.\n"]
    if "linear" in summary["experiments"]:
        lines.append("## Linear regression: gradient descent and its variants\n\n"
                     "Full-batch gradient descent, SGD (Robbins & Monro, 1951), mini-batch SGD, momentum "
                     "(Polyak, 1964), Nesterov's accelerated gradient (Nesterov, 1983), AdaGrad (Duchi, Hazan & "
                     "Singer, 2011), RMSProp (Tieleman & Hinton, 2012) and Adam (Kingma & Ba, 2015) fit a line to "
                     "noisy data; the closed-form least-squares fit is the target.\n\n![linear](linear_loss.png)\n")
        for kind, v in summary["experiments"]["linear"].items():
            if kind == "images":
                continue
            ls = v["least_squares"]
            lines.append(f"\n{kind}: least squares slope {ls['slope']:.4f}, intercept {ls['intercept']:.4f}, "
                         f"MSE {ls['loss']:.4f}\n\n| method | slope | intercept | final MSE / optimum |\n|---|---|---|---|")
            for m, r in v["methods"].items():
                lines.append(f"| {m} | {r['slope']:.4f} | {r['intercept']:.4f} | {r['loss_over_optimum']:.4f} |")
    if "schedules" in summary["experiments"]:
        sc = summary["experiments"]["schedules"]
        lines.append(
            "\n## Learning-rate schedules\n\n"
            "Step, multi-step, exponential and polynomial decay; cosine annealing and cosine with warm restarts "
            "(SGDR, Loshchilov & Hutter, 2017); linear warmup (Goyal et al., 2017); one-cycle (Smith & Topin, "
            "2019); and a restart of an exponential decay whenever the loss falls below a threshold that "
            f"tightens after each restart. Every schedule drives mini-batch SGD on the same {sc['horizon']} "
            "mini-batches of y = 3x + 2 + noise, starting from the same peak rate 0.05.\n\n![schedules](schedules.png)\n\n"
            f"| schedule | final MSE / least-squares MSE | MSE - least-squares MSE, mean of the last {sc['tail_steps']} steps |"
            "\n|---|---|---|")
        for n, r in sc["schedules"].items():
            extra = f" ({r['restarts']} restarts)" if "restarts" in r else ""
            lines.append(f"| {n}{extra} | {r['loss_over_optimum']:.4f} | {r['excess_mse_tail']:.2e} |")
    if "gradients" in summary["experiments"]:
        g = summary["experiments"]["gradients"]
        lines.append(
            "\n## Vanishing and exploding gradients\n\n"
            f"A {g['depth']}-layer MLP (Hochreiter, 1991; Bengio, Simard & Frasconi, 1994; Glorot & Bengio, 2010): "
            "sigmoid units shrink the gradient layer by layer; ReLU with He initialization (He et al., 2015) keeps "
            "it level; BatchNorm (Ioffe & Szegedy, 2015) rescales every layer; a 1.5x too large initialization "
            "makes it explode, and clipping the global gradient norm (Pascanu, Mikolov & Bengio, 2013) keeps that "
            "run's loss finite (whether it then learns shows in the last column: ln 2 = 0.693 is the loss of a "
            "constant prediction on these two roughly balanced classes). Every configuration starts from the same weights (up to its initialization gain) and "
            "sees the same mini-batches, so \"same + clip norm 1\" measures the same initial gradient as the run "
            "it clips.\n\n![gradients](gradients.png)\n\n"
            f"| network | first-layer grad norm at init | last-layer | diverged (loss > {DIVERGED_LOSS:g} or inf/NaN) "
            "| mean loss, last 10 steps |\n|---|---|---|---|---|")
        for n, r in g["configs"].items():
            div = f"at step {r['diverged_at_step']}" if r["diverged"] else "no"
            final = "-" if r["final_loss"] is None else f"{r['final_loss']:.3f}"
            lines.append(f"| {n} | {r['first_layer_grad_norm_at_init']:.3g} | {r['last_layer_grad_norm_at_init']:.3g} "
                         f"| {div} | {final} |")
    if "mlp" in summary["experiments"]:
        m = summary["experiments"]["mlp"]
        lines.append(f"\n## MLP classifier with BatchNorm and Dropout ({m['dataset']})\n\n"
                     "BatchNorm (Ioffe & Szegedy, 2015) and inverted dropout (Srivastava et al., 2014), trained with "
                     "SGD with momentum, Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019)."
                     "\n\n![mlp](mlp_accuracy.png)\n\n"
                     "| optimizer | train accuracy | validation accuracy |\n|---|---|---|")
        for n, r in m["optimizers"].items():
            lines.append(f"| {n} | {r['train_accuracy']:.3f} | {r['val_accuracy']:.3f} |")
    if "precision" in summary["experiments"]:
        pr = summary["experiments"]["precision"]
        lines.append(
            f"\n## Low precision: bfloat16 parameters and state ({pr['steps']} AdamW steps)\n\n"
            "The same MLP (10-64-64-3) trained on the synthetic rings with AdamW, its learning rate decaying "
            "from 3e-3 to 3e-5 (cosine), in six storage modes: everything float32; float32 parameters with "
            "bfloat16 moments, or with 8-bit blockwise moments (Dettmers et al., 2022: blocks of 256, a dynamic "
            "code, every tensor here); and bfloat16 parameters and gradients (forward and backward in float32 on the "
            "widened weights, as mixed-precision training runs) updated with rounding to nearest, with stochastic "
            "rounding (Gupta et al., 2015), or from float32 master weights (the ZeRO-Offload pattern). A bfloat16 "
            "weight near 0.5 moves in steps of 2**-9 = 0.002; once AdamW's update (about the learning rate per "
            "step) is below half of that, rounding to nearest returns the old weight and training stalls, while "
            "stochastic rounding keeps the update in expectation and master weights keep it exactly."
            "\n\n![precision](precision.png)\n\n"
            "| mode | optimizer bytes per parameter | final loss (training set) | / float32 | distance from float32 "
            "| parameters changed per step, last 10% |\n|---|---|---|---|---|---|")
        for n, r in pr["modes"].items():
            lines.append(f"| {n} | {r['bytes_per_param']} | {r['final_loss']:.4f} | {r['loss_over_float32']:.3f} "
                         f"| {r['distance_from_float32']:.3f} | {r['moved_last_10pct']:.3f} |")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _terminal_summary(summary: Summary) -> str:
    ex = summary["experiments"]
    out = ["", "deepoptim demo: summary"]
    if "linear" in ex:
        r = ex["linear"]["3x+2"]["methods"]
        out.append("  linear regression (y = 3x + 2): final MSE / least-squares MSE")
        out += [f"    {m:<22} {v['loss_over_optimum']:.4f}   slope {v['slope']:.3f}  intercept {v['intercept']:.3f}"
                for m, v in r.items()]
    if "schedules" in ex:
        sch = ex["schedules"]["schedules"]
        out.append("  schedules, final MSE / least-squares MSE: " + ", ".join(
            f"{n} {v['loss_over_optimum']:.4f}" for n, v in sch.items()))
    if "gradients" in ex:
        c = ex["gradients"]["configs"]
        out.append("  gradients, first-layer |dL/dW| at init: " + ", ".join(
            f"{n} {v['first_layer_grad_norm_at_init']:.2g}" for n, v in c.items()))
    if "precision" in ex:
        out.append("  precision, final loss / float32: " + ", ".join(
            f"{n} {v['loss_over_float32']:.3f}" for n, v in ex["precision"]["modes"].items()))
    if "mlp" in ex:
        out.append("  MLP validation accuracy: " + ", ".join(
            f"{n} {v['val_accuracy']:.3f}" for n, v in ex["mlp"]["optimizers"].items()))
    return "\n".join(out)


def _check_dataset(which: List[str], dataset: str) -> None:
    """The optional package a dataset needs, checked before any experiment runs."""
    if dataset == "digits" and "mlp" in which:
        try:
            import sklearn.datasets  # type: ignore[import-not-found, import-untyped, unused-ignore]  # noqa: F401  (optional, untyped)
        except ImportError:
            raise DemoError("--dataset digits needs scikit-learn: pip install scikit-learn") from None


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}], got {value}")
    return value


def run(which: List[str], out: str, quick: bool, seed: int, quiet: bool = False, dataset: str = "synthetic") -> Summary:
    """Runs the chosen experiments and writes images, summary.json and report.md to ``out``.

    Everything that can be checked up front (extras, optional packages, the seed, the
    output folder) is checked before the first experiment starts."""
    if not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
        raise DemoError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    _need_extras()
    _check_dataset(which, dataset)
    os.makedirs(out, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise DemoError(f"cannot write to {out}")
    t0 = time.perf_counter()
    funcs = {"linear": exp_linear, "schedules": exp_schedules, "gradients": exp_gradients, "mlp": exp_mlp,
             "precision": exp_precision}
    experiments = {}
    for name in which:
        if name == "mlp":
            experiments[name] = exp_mlp(out, quick, seed, quiet, dataset)
        else:
            experiments[name] = funcs[name](out, quick, seed, quiet)
    summary = {"deepoptim": dict(deepoptim.build_info()), "seed": seed, "quick": quick,
               "seconds": round(time.perf_counter() - t0, 2), "experiments": experiments}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    _report(out, summary)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="deepoptim demo", description="Run classic optimization experiments "
                                 "(linear regression, schedules, vanishing/exploding gradients, an MLP) and "
                                 "write plots, summary.json and report.md.")
    ap.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                    help=f"any of {', '.join(EXPERIMENTS)} (default: all)")
    ap.add_argument("--out", default="deepoptim-demo", help="output folder (default: ./deepoptim-demo)")
    ap.add_argument("--seed", type=_seed, default=0,
                    help=f"random seed in [0, {MAX_SEED}] (the run is deterministic given it)")
    ap.add_argument("--quick", action="store_true", help="small sizes: finishes in seconds")
    ap.add_argument("--dataset", choices=("synthetic", "digits"), default="synthetic",
                    help="data for the MLP experiment (digits needs scikit-learn)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    bad = [e for e in a.experiments if e not in EXPERIMENTS]
    if bad:
        print(f"deepoptim demo: unknown experiment {', '.join(map(repr, bad))}; choose from {', '.join(EXPERIMENTS)}",
              file=sys.stderr)
        return 2
    which = list(dict.fromkeys(a.experiments)) or list(EXPERIMENTS)
    out = os.path.abspath(a.out)
    try:
        _need_extras()
        _check_dataset(which, a.dataset)
        if os.path.exists(out) and not os.path.isdir(out):
            raise DemoError(f"--out {a.out} exists and is not a folder")
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise DemoError(f"cannot create --out {a.out}: {e.strerror}")
        if not os.access(out, os.W_OK):
            raise DemoError(f"cannot write to --out {a.out}")
        summary = run(which, out, a.quick, a.seed, a.quiet, a.dataset)
    except DemoError as e:
        print(f"deepoptim demo: {e}", file=sys.stderr)
        return 2
    print(_terminal_summary(summary))
    print(f"\nwrote {', '.join(sorted(i for e in summary['experiments'].values() for i in e['images']))}, "
          f"summary.json and report.md to {out} ({summary['seconds']} s)")
    return 0


__all__ = ["run", "main", "EXPERIMENTS", "synthetic_rings"]
