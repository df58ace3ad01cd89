"""Train a small model with DDP on 2 local processes, the optimizer step on deepoptim's
kernels. Run with:

    torchrun --nproc-per-node 2 examples/ddp_train.py

(or `python examples/ddp_train.py` for one process). The only deepoptim line is the import.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from deepoptim.torch import AdamW  # instead of: from torch.optim import AdamW


def main() -> None:
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    if distributed:
        model = DDP(model)
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)

    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 20, generator=g)
    y = (x[:, :2].norm(dim=1) > 1.2).long()  # a non-linear boundary
    shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    xs, ys = x[shard], y[shard]
    for step in range(200):
        idx = torch.randint(0, len(xs), (64,), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    if rank == 0:
        print(f"world size {world}: final loss {loss.item():.3f}, accuracy {acc:.3f}")
    if distributed:
        dist.barrier()  # leave together: gloo may abort a rank that tears down while its peer works
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
