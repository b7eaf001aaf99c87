"""Run by `test_gather.py` under torchrun: the contrastive loss on this process's half of a batch, through DDP."""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from polymodal.distributed import init_distributed
from test_gather import BATCH, TwoTowers, contrastive_loss, inputs

info = init_distributed()
model = TwoTowers()  # the same seeded weights in every process
ddp = DistributedDataParallel(model)
images, texts = inputs()
share = BATCH // info.world_size
rows = slice(info.rank * share, (info.rank + 1) * share)
loss = contrastive_loss(ddp, images[rows], texts[rows])
loss.backward()  # DDP averages the parameter gradients over processes
torch.save({"loss": loss.detach(), "grads": {n: p.grad for n, p in model.named_parameters()}},
           f"{sys.argv[1]}/rank{info.rank}.pt")
dist.barrier()  # no process leaves while the other still talks to it
dist.destroy_process_group()
