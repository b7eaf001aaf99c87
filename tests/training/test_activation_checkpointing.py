"""`train.activation_checkpointing`: the same gradients, far fewer activations kept for the backward pass."""

import copy
import json

import pytest
import torch
from torch import nn

from conftest import tiny_config, write_config
from polymodal.layers.transformer import TransformerEncoder
from polymodal.models.tiny_lm import save_tiny_lm
from polymodal.training.sharding import checkpoint_activations
from polymodal.training.trainer import train
from polymodal.config import load_config


def saved_bytes_and_grads(model: nn.Module, run) -> tuple[int, list[torch.Tensor]]:
    """Bytes autograd keeps for the backward pass of `run(model)`'s scalar, and the gradients it gives."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = run(model)
    loss.backward()
    return sum(saved), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def compare(model: nn.Module, run, expected_blocks: int) -> float:
    """Gradients equal with and without checkpointing; returns the share of saved bytes that remains."""
    plain = copy.deepcopy(model)
    assert checkpoint_activations(model) == expected_blocks
    before, grads = saved_bytes_and_grads(plain, run)
    after, checkpointed = saved_bytes_and_grads(model, run)
    assert len(grads) == len(checkpointed) > 0
    for g, h in zip(grads, checkpointed):
        torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-6)
    return after / before


def test_our_blocks_recompute_and_give_the_same_gradients():
    torch.manual_seed(0)
    stack = TransformerEncoder(32, depth=4, num_heads=2, dropout=0.1).train()  # dropout: the same masks again
    x, mask = torch.randn(3, 16, 32), torch.arange(16) < torch.tensor([[16], [9], [4]])

    def run(model):
        torch.manual_seed(1)
        return model(x, mask).square().mean()

    assert compare(stack, run, 4) < 0.2  # the blocks' inputs and the final norm's, of all activations


def test_a_hugging_face_model_is_checkpointed_through_its_own_switch(tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = save_tiny_lm(tmp_path / "lm", "gpt2", ["a red circle", "two blue squares"], width=32, layers=3)
    lm = transformers.AutoModelForCausalLM.from_pretrained(folder).train()
    holder = nn.ModuleDict({"lm": lm})
    ids = torch.randint(0, lm.config.vocab_size, (2, 12))

    def run(model):
        torch.manual_seed(1)  # GPT-2's dropout
        return model["lm"](input_ids=ids, labels=ids).loss

    share = compare(holder, run, 3)
    assert lm.is_gradient_checkpointing and share < 0.5


def test_training_with_it_logs_the_same_losses(shapes_data, tmp_path):
    config = tiny_config(shapes_data, "vqa", max_steps=3)
    runs = {}
    for checkpointed in (False, True):
        run = tmp_path / str(checkpointed)
        lines = []
        train(load_config(write_config(tmp_path, config),
                          [f"train.activation_checkpointing={str(checkpointed).lower()}"]), run, log=lines.append)
        assert any("activation checkpointing on 2 transformer blocks" in l for l in lines) == checkpointed
        runs[checkpointed] = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                              if "loss" in r]
    assert runs[True] == pytest.approx(runs[False], rel=1e-6)
