"""Final loss of 8-bit AdamW against float32, deepoptim beside the 8-bit peers that run on
a CPU (torchao's and bitsandbytes' AdamW8bit; never requirements: a missing one is
reported, not run).

The demo's precision MLP (10-64-64-3, ReLU, synthetic rings, batch 128, AdamW with lr
cosine 3e-3 -> 3e-5, 600 steps) in torch, every tensor's state in 8 bits (min sizes 0),
three seeds; prints each final training-set loss over torch.optim.AdamW's float32 one.

    OMP_NUM_THREADS=1 python bench/peers_loss.py

Measured 2026-12-01 (torch 2.13.0, torchao 0.18.0, bitsandbytes 0.50.2): deepoptim
0.9968 / 1.0052 / 1.0009, torchao 1.0002 / 1.0010 / 0.9996, bitsandbytes 0.9985 /
1.0050 / 1.0001: the same loss within 0.6% for all three."""
import math

import torch

import deepoptim.torch as dt
from deepoptim.demo import synthetic_rings

torch.set_num_threads(1)
def run(make, seed=0, steps=600):
    X, y = synthetic_rings(6000, seed + 10)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    opt = make(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (3e-5 + 0.5 * (3e-3 - 3e-5) * (1 + math.cos(math.pi * min(t, steps) / steps))) / 3e-3)
    g = torch.Generator().manual_seed(seed + 99)
    for t in range(steps):
        idx = torch.randint(0, len(X), (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(X), y))
res = {}
for seed in (0, 1, 2):
    ref = run(lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.0), seed)
    row = {"float32 torch": ref}
    row["deepoptim int8"] = run(lambda p: dt.AdamW(p, lr=3e-3, weight_decay=0.0, state_dtype="int8", int8_min_size=0), seed)
    try:
        from torchao.optim import AdamW8bit
        row["torchao AdamW8bit"] = run(lambda p: AdamW8bit(p, lr=3e-3, weight_decay=0.0, block_size=256), seed)
    except ImportError as e:  # a peer that is not installed is skipped, not an error
        row["torchao"] = repr(e)[:80]
    try:
        import bitsandbytes as bnb
        row["bitsandbytes AdamW8bit"] = run(lambda p: bnb.optim.AdamW8bit(p, lr=3e-3, weight_decay=0.0, min_8bit_size=0), seed)
    except ImportError as e:
        row["bnb"] = repr(e)[:80]
    print(seed, {k: (round(v / ref, 4) if isinstance(v, float) else v) for k, v in row.items()}, "float32 loss", round(ref, 4), flush=True)
