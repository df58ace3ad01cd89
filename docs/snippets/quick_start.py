import numpy as np
from deepoptim import functional as F

params = [np.random.randn(1000, 256).astype(np.float32), np.zeros(256, np.float32)]
m = [np.zeros_like(p) for p in params]
v = [np.zeros_like(p) for p in params]
for step in range(1, 101):
    grads = [2 * p for p in params]            # your gradients here
    F.adamw(params, grads, m, v, step=step, lr=1e-3, weight_decay=1e-2)  # all tensors, one call
