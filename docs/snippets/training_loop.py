import numpy as np
from deepoptim import nn, clip, schedules
from deepoptim.optim import AdamW
from deepoptim.regularization import param_groups

rng = np.random.default_rng(0)
X = rng.standard_normal((2000, 10)).astype(np.float32)
y = (np.linalg.norm(X[:, :2], axis=1) > 1.2).astype(np.int64)      # a non-linear boundary
model = nn.Sequential(nn.Linear(10, 64, seed=1), nn.BatchNorm(64), nn.ReLU(), nn.Dropout(0.1, seed=2),
                      nn.Linear(64, 2, seed=3))
lr = schedules.warmup(schedules.cosine(3e-3, total_steps=300), warmup_steps=30)
opt = AdamW(param_groups(model.parameters(), weight_decay=1e-2), lr=lr)   # no decay on biases/BN
for epoch in range(10):
    for xb, yb in nn.minibatches(X, y, batch_size=64, seed=epoch):
        loss, dlogits = nn.softmax_cross_entropy(model(xb), yb)
        model.backward(dlogits)
        grads = model.gradients()
        clip.clip_grad_norm(grads, max_norm=1.0)
        opt.step(grads)
model.eval()
print(f"loss {loss:.3f}, accuracy {nn.accuracy(model(X), y):.3f}")
