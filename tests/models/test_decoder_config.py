"""`model.decoder` in a config: what it builds, the memory it reads, and clear errors."""

import pytest
import torch

from conftest import TINY_ENCODERS
from polymodal.builders import build_system
from polymodal.config import from_dict
from polymodal.data.loader import TaskDataset
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.models.parts import Decoder

DECODER = {"type": "transformer", "width": 24, "depth": 1, "num_heads": 2, "max_length": 40}


def build(data, fusion="late", decoder=DECODER, task=None, encoders=TINY_ENCODERS):
    model = {"fusion": {"type": fusion}, "width": 32, "encoders": encoders, "tokenizer": {"vocab_size": 200}}
    if decoder is not None:
        model["decoder"] = decoder
    config = from_dict({"model": model, "tasks": {"cap": task or {"type": "caption"}}, "data": {}, "train": {}}, data)
    return build_system(config, read_manifest(data / "train.jsonl"))


def loss_and_memory(system, data, inputs=None):
    """The caption loss on 4 records, and the model output the decoder read."""
    task = system.model.tasks["cap"]
    if inputs:
        task.data.inputs = inputs
    records = read_manifest(data / "train.jsonl")[:4]
    dataset = TaskDataset(records, task.data, system.processors)
    batch = dataset.collate([dataset[i] for i in range(4)])
    system.model.eval()
    return system.model({"cap": batch})["cap"]["loss"], system.model.encode(batch["inputs"], fuse=task.needs_fusion)


def test_memory_of_modalities_is_every_modality_behind_its_marker(shapes_data):
    system = build(shapes_data)
    loss, out = loss_and_memory(system, shapes_data, inputs={"image": "image", "text": "question"})
    markers = system.model.backbone.memory_markers
    image, text = out.modalities["image"], out.modalities["text"]
    expected = torch.cat([markers("image", image.tokens, image.mask)[0], markers("text", text.tokens, text.mask)[0]], 1)
    torch.testing.assert_close(out.memory.tokens, expected)  # image marker + tokens, then text marker + tokens
    marker = image.mask.new_ones(image.mask.shape[0], 1)
    assert torch.equal(out.memory.mask, torch.cat([marker, image.mask, marker, text.mask], 1))
    assert torch.isfinite(loss) and system.model.tasks["cap"].needs_fusion is False and out.pooled is None
    decoder = system.model.backbone.decoder
    assert decoder.width == 24 and decoder.stack.blocks[0].cross.context_dim == 32
    assert decoder.vocab_size == system.tokenizer.vocab_size
    assert abs(decoder.embed.weight.std().item() - 0.02) < 0.002  # GPT-2's init unless init_std says


def test_init_std_reaches_the_decoder(shapes_data):
    decoder = build(shapes_data, decoder={**DECODER, "init_std": 0.2}).model.backbone.decoder
    assert abs(decoder.embed.weight.std().item() - 0.2) < 0.01
    assert abs(decoder.stack.blocks[0].cross.kv.weight.std().item() - 0.2) < 0.02


def test_memory_fused_reads_the_fusion_tokens(shapes_data):
    system = build(shapes_data, fusion="early", decoder={**DECODER, "memory": "fused"},
                   task={"type": "caption", "inputs": {"image": "image", "text": "question"}})
    loss, out = loss_and_memory(system, shapes_data)
    assert system.model.tasks["cap"].needs_fusion is True and torch.isfinite(loss)
    torch.testing.assert_close(out.memory.tokens, torch.cat([out.pooled[:, None], out.fused.tokens], 1))
    assert out.memory.mask[:, 0].all() and torch.equal(out.memory.mask[:, 1:], out.fused.mask)


@pytest.mark.parametrize("fusion", ["late", "early"])
def test_memory_pooled_is_the_fused_vector_alone(shapes_data, fusion):
    """Any fusion, one vector (late fusion has no token sequence): one memory token, always attended to."""
    system = build(shapes_data, fusion=fusion, decoder={**DECODER, "memory": "pooled"},
                   task={"type": "caption", "inputs": {"image": "image", "text": "question"}})
    loss, out = loss_and_memory(system, shapes_data)
    assert system.model.tasks["cap"].needs_fusion is True and torch.isfinite(loss)
    assert out.memory.tokens.shape == (4, 1, 32) and out.memory.mask.all()
    torch.testing.assert_close(out.memory.tokens[:, 0], out.pooled)


@pytest.mark.parametrize("decoder,task,message", [
    (None, None, "tasks.cap: task type 'caption' needs a text decoder: set model.decoder"),
    ({**DECODER, "type": "lstm"}, None, "model.decoder.type: expected one of transformer, hf, got 'lstm'"),
    ({**DECODER, "memory": "all"}, None, "model.decoder.memory: expected one of modalities, fused, pooled, got 'all'"),
    ({**DECODER, "memory": "fused"}, None, "'fused' needs a fusion that gives a token sequence; 'late'"),
    ({**DECODER, "depht": 2}, None, "model.decoder: unknown key 'depht'"),
    ({**DECODER, "num_heads": 5}, None, "model.decoder: .*not divisible"),
    ({**DECODER, "init_std": 0}, None, "model.decoder.init_std: expected a positive number, got 0"),
    (DECODER, {"type": "caption", "max_lenght": 9}, "tasks.cap: unknown key 'max_lenght'"),
    (DECODER, {"type": "caption", "max_length": 2}, "max_length: expected at least 3"),
    (DECODER, {"type": "caption", "max_length": 41}, "up to 41 positions .* model.decoder.max_length is 40"),
    (DECODER, {"type": "caption", "max_length": 8, "prompt": "{question}"}, "up to 56 positions"),
])
def test_bad_decoder_settings_are_clear_errors(shapes_data, decoder, task, message):
    with pytest.raises(ConfigError, match=message):
        build(shapes_data, decoder=decoder, task=task)


@pytest.mark.parametrize("architecture", ["encoder_decoder", "decoder_only"])
def test_every_decoder_keeps_the_decoder_protocol_and_is_lent_not_owned(shapes_data, architecture):
    """Ours in both architectures is a `Decoder`; the backbone builds a memory exactly for one that reads it;
    the generative head borrows the backbone's decoder, so its weights are in the state dict once."""
    system = build(shapes_data, decoder={**DECODER, "architecture": architecture, "max_length": 120})
    decoder, task = system.model.backbone.decoder, system.model.tasks["cap"]
    assert isinstance(decoder, Decoder) and decoder.reads_memory == (architecture == "encoder_decoder")
    assert task.decoder.module is decoder
    names = list(system.model.state_dict())
    assert not any(n.startswith("tasks.cap.") for n in names) and any(n.startswith("backbone.decoder.") for n in names)
    _, out = loss_and_memory(system, shapes_data)
    assert (out.memory is not None) == decoder.reads_memory
