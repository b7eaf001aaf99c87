"""The gathered contrastive loss under 2 processes gives a single process's gradient on the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from polymodal.tasks.contrastive import ContrastiveData, ContrastiveTask
from polymodal.models.output import ModelOutput

BATCH = 8


class TwoTowers(nn.Module):
    """Two linear "encoders" into a shared space, and a learnt scale: the parts the gathered loss trains."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(6, 4)
        self.text = nn.Linear(5, 4)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, images, texts):
        return F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1), self.scale.exp()


def inputs():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 6, generator=generator), torch.randn(BATCH, 5, generator=generator)


def contrastive_loss(model, images, texts):
    image, text, scale = model(images, texts)
    out = ModelOutput(modalities={}, pooled=None, embeddings={"image": image, "text": text}, logit_scale=scale)
    return ContrastiveTask(ContrastiveData())(out, torch.zeros(len(images)))["loss"]


def test_two_process_gradient_equals_single_process_on_the_whole_batch(tmp_path):
    here = Path(__file__).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(here / "gather_worker.py"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 and "(SIGABRT)" in done.stderr:
        # Once in CI (2 loaded cores) a worker died of SIGABRT inside gloo without a Python error; a second
        # launch tells such a transport failure from a wrong gradient, which fails every launch.
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[:3000] + "\n...\n" + done.stderr[-3000:]

    model = TwoTowers()
    loss = contrastive_loss(model, *inputs())
    loss.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        # every process computes the loss over the whole gathered batch
        torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for name, p in model.named_parameters():
            torch.testing.assert_close(result["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
