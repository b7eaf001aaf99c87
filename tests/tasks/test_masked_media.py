"""Masked image / video / audio modelling: the mask, the targets, the loss on masked patches only, the
encoders' token masking, and a short run on the shapes images that beats predicting the mean."""

from __future__ import annotations

import math

import pytest
import torch

from polymodal.builders import build_system
from polymodal.config import from_dict
from polymodal.data.loader import TaskDataset
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.evaluation.harness import evaluate
from polymodal.modalities.audio.encoders import SpectrogramTransformer
from polymodal.modalities.base import EncoderOutput
from polymodal.modalities.image.encoders import CNNImageEncoder, ViTImageEncoder
from polymodal.modalities.video.encoders import TubeletViT
from polymodal.models.output import ModelOutput
from polymodal.tasks.masked_media import (MaskedMediaData, MaskedMediaTask, masked_mse, normalise_patches,
                                          random_token_mask)

ENCODERS = {
    "vit": lambda: ViTImageEncoder(out_dim=16, image_size=16, patch_size=4, width=16, depth=1, num_heads=2),
    "cnn": lambda: CNNImageEncoder(out_dim=16, image_size=16, channels=(8, 16)),
    "tubelet_vit": lambda: TubeletViT(out_dim=16, image_size=16, num_frames=4, patch_size=8, tubelet=2, width=16,
                                      depth=1, num_heads=2),
    "spectrogram": lambda: SpectrogramTransformer(out_dim=16, sample_rate=8000, duration=0.5, n_mels=16,
                                                  hop_length=160, patch_freq=8, patch_time=5, width=16, depth=1,
                                                  num_heads=2),
}


def example_input(name: str, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if name == "tubelet_vit":
        return torch.randn(batch, 4, 3, 16, 16, generator=g)
    if name == "spectrogram":
        return torch.randn(batch, 4000, generator=g)
    return torch.randn(batch, 3, 16, 16, generator=g)


def test_the_mask_ratio_is_exact_in_every_example():
    mask = random_token_mask(500, 64, 0.6, torch.Generator().manual_seed(1))
    assert mask.dtype == torch.bool and (mask.sum(1) == 38).all()  # round(0.6 · 64) = round(38.4)
    assert (random_token_mask(3, 16, 0.75).sum(1) == 12).all()
    assert (random_token_mask(3, 4, 0.01).sum(1) == 1).all() and (random_token_mask(3, 4, 0.99).sum(1) == 3).all()
    # uniformly placed: every position masked about 60% of the time
    torch.testing.assert_close(mask.float().mean(0), torch.full((64,), 0.6), atol=0.09, rtol=0)


def test_per_patch_normalisation_by_hand():
    patch = torch.tensor([[[1.0, 2.0, 3.0, 6.0]]])  # mean 3, unbiased variance (4 + 1 + 0 + 9) / 3 = 14/3
    expected = [(v - 3.0) / math.sqrt(14 / 3 + 1e-6) for v in (1.0, 2.0, 3.0, 6.0)]
    torch.testing.assert_close(normalise_patches(patch), torch.tensor([[expected]]))


def tokens_output(tokens: torch.Tensor) -> ModelOutput:
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    return ModelOutput(modalities={"image": EncoderOutput(tokens=tokens, mask=mask, pooled=tokens[:, 0])}, pooled=None)


def test_the_loss_is_the_mse_of_masked_patches_only_by_hand():
    torch.manual_seed(2)
    prediction, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    by_hand = sum(((prediction[b, n] - target[b, n]) ** 2).mean().item() for b, n in [(0, 0), (0, 2), (1, 2)]) / 3
    assert masked_mse(prediction, target, mask).item() == pytest.approx(by_hand, abs=1e-6)
    moved = prediction.clone()
    moved[0, 1] += 10.0  # unmasked
    moved[1, 0] -= 7.0
    assert masked_mse(moved, target, mask).item() == pytest.approx(by_hand, abs=1e-6)
    moved[1, 2] += 1.0  # masked
    assert abs(masked_mse(moved, target, mask).item() - by_hand) > 1e-2


def vit_task(norm_targets: bool) -> tuple[MaskedMediaTask, torch.nn.Module]:
    encoder = ENCODERS["vit"]()
    task = MaskedMediaTask(MaskedMediaData(), encoder=encoder, width=16, norm_targets=norm_targets)
    return task, encoder


def test_the_head_reads_patch_tokens_and_is_scored_against_the_encoders_targets():
    torch.manual_seed(3)
    for norm in (True, False):
        task, encoder = vit_task(norm)
        assert task.head.out_features == 3 * 4 * 4 and task.num_patches == 16 and task.patch_start == 1
        images = torch.randn(2, 3, 16, 16)
        inputs = {"image": {"data": images}}
        masked, target = task.corrupt(inputs, torch.zeros(2))
        assert inputs == {"image": {"data": images}}  # not changed in place
        assert masked["image"]["token_mask"] is target["token_mask"] and target["data"] is images
        tokens = torch.randn(2, 17, 16)
        out = tokens_output(tokens)
        loss = task(out, target)["loss"].item()
        goal = encoder.patch_targets(images)
        goal = normalise_patches(goal) if norm else goal
        by_hand = masked_mse(task.head(tokens[:, 1:]), goal, target["token_mask"]).item()  # the CLS is not a patch
        assert loss == pytest.approx(by_hand, abs=1e-6)
        cls_moved = tokens.clone()
        cls_moved[:, 0] += 5.0
        unmasked = (~target["token_mask"][0]).nonzero()[0, 0] + 1
        cls_moved[0, unmasked] += 5.0
        out.modalities["image"] = EncoderOutput(tokens=cls_moved, mask=out.modalities["image"].mask,
                                                pooled=tokens[:, 0])
        assert task(out, target)["loss"].item() == pytest.approx(loss, abs=1e-6)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_patch_targets_reassemble_the_input(name):
    encoder = ENCODERS[name]()
    data = example_input(name)
    targets = encoder.patch_targets(data)
    assert targets.shape == (2, encoder.num_patches, encoder.patch_dim)
    if name in ("vit", "cnn"):
        side, cell = (4, 4) if name == "vit" else (math.isqrt(encoder.num_tokens), 16 // math.isqrt(encoder.num_tokens))
        for r in range(side):
            for c in range(side):
                block = data[:, :, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
                torch.testing.assert_close(targets[:, r * side + c], block.reshape(2, -1))
    elif name == "tubelet_vit":  # 2 steps of 2 frames, 2 x 2 patches of 8 px; time-major
        for t in range(2):
            for r in range(2):
                for c in range(2):
                    block = data[:, 2 * t:2 * t + 2, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8].transpose(1, 2)
                    torch.testing.assert_close(targets[:, t * 4 + r * 2 + c], block.reshape(2, -1))
    else:  # 16 mel bands in 2 of 8, time in patches of 5 frames; frequency-major like the tokens
        mel = encoder.front(data)
        steps = encoder.grid[1]
        for f in range(2):
            for t in range(steps):
                block = mel[:, 8 * f:8 * f + 8, 5 * t:5 * t + 5]
                torch.testing.assert_close(targets[:, f * steps + t], block.reshape(2, -1))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_masked_token_does_not_depend_on_what_it_hides(name):
    torch.manual_seed(4)
    encoder = ENCODERS[name]()
    encoder.enable_token_masking()
    data = example_input(name)
    mask = random_token_mask(2, encoder.num_patches, 0.5, torch.Generator().manual_seed(5))
    if name == "spectrogram":  # the front end standardises the whole spectrogram: check the patch embeddings
        seen = []
        encoder.positions.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        encoder(data, token_mask=mask)
        patches = seen[0][:, 1:]  # (B, patches, width) after the CLS
        torch.testing.assert_close(patches[mask], encoder.mask_token[0].expand(int(mask.sum()), -1))
        assert not torch.allclose(patches[~mask], encoder.mask_token[0].expand(int((~mask).sum()), -1))
        return
    # change only the values under masked patches: the output does not move; under an unmasked one it does
    hidden = encoder.patch_targets(data).clone()
    noise = torch.randn_like(hidden)
    changed = hidden + noise * mask[..., None]
    other = unpatch(name, changed, data)
    torch.testing.assert_close(encoder.patch_targets(other), changed)
    before, after = encoder(data, token_mask=mask).tokens, encoder(other, token_mask=mask).tokens
    torch.testing.assert_close(before, after)
    assert not torch.allclose(encoder(data).tokens, encoder(other).tokens)  # unmasked, the change shows
    visible = unpatch(name, hidden + noise * ~mask[..., None], data)
    assert not torch.allclose(before, encoder(visible, token_mask=mask).tokens)


def unpatch(name: str, targets: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The input whose patch targets are `targets` (by loops, as the reassembly test reads them)."""
    out = like.clone()
    if name == "tubelet_vit":
        for t in range(2):
            for r in range(2):
                for c in range(2):
                    block = targets[:, t * 4 + r * 2 + c].reshape(2, 3, 2, 8, 8).transpose(1, 2)
                    out[:, 2 * t:2 * t + 2, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = block
        return out
    side = 4 if name == "vit" else math.isqrt(targets.shape[1])
    cell = 16 // side
    for r in range(side):
        for c in range(side):
            block = targets[:, r * side + c].reshape(2, 3, cell, cell)
            out[:, :, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = block
    return out


def test_the_mask_token_learns_and_an_encoder_without_masking_is_named(shapes_data):
    torch.manual_seed(6)
    vit = {"type": "vit", "image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "num_heads": 2}
    system = build(shapes_data, {"image": vit})
    encoder = system.model.backbone.encoders["image"]
    assert encoder.mask_token.shape == (1, 1, 32)
    task = system.model.tasks["m"]
    dataset = TaskDataset(read_manifest(shapes_data / "train.jsonl")[:4], task.data, system.processors)
    system.model({"m": dataset.collate([dataset[i] for i in range(4)])})["m"]["loss"].backward()
    assert encoder.mask_token.grad.abs().sum() > 0
    plain = build_system(from_dict({"model": {"type": "joint_transformer", "width": 32, "depth": 1, "num_heads": 2,
                                              "encoders": {"image": vit}}, "tasks": {"c": {"type": "classification"}},
                                    "data": {}, "train": {}}, shapes_data), read_manifest(shapes_data / "train.jsonl"))
    assert "mask_token" not in dict(plain.model.backbone.encoders["image"].named_parameters())  # state dict as before
    video = {"type": "conv3d", "image_size": 32, "num_frames": 4, "channels": [8],
             "temporal_strides": [1]}
    with pytest.raises(ConfigError, match=r"tasks.m.inputs: masked modelling needs a video encoder that masks its "
                                          r"tokens; this model's is 'conv3d', the ones that do: tubelet_vit"):
        build(shapes_data, {"video": video}, inputs={"video": "image"})
    with pytest.raises(ConfigError, match=r"tasks.m.mask_ratio: expected a share between 0 and 1, got 0"):
        build(shapes_data, {"image": vit}, mask_ratio=0)


def build(data, encoders, records=None, **task):
    config = from_dict({"model": {"fusion": {"type": "late"}, "width": 32, "encoders": encoders},
                        "tasks": {"m": {"type": "masked_modelling", **task}}, "data": {}, "train": {}}, data)
    return build_system(config, records or read_manifest(data / "train.jsonl"))


def test_a_short_run_beats_predicting_the_mean_patch(shapes_data):
    # 8 x 8 cells of 4 px, 60% of them hidden: what is there is guessed from the visible neighbours (a tiny
    # ViT on these 32 px images needs far more steps to learn that; its masking is checked above)
    torch.manual_seed(7)
    cnn = {"type": "cnn", "image_size": 32, "channels": [16, 32]}
    train, val = read_manifest(shapes_data / "train.jsonl"), read_manifest(shapes_data / "val.jsonl")
    system = build(shapes_data, {"image": cnn}, norm_targets=False)
    model, task = system.model, system.model.tasks["m"]
    dataset = TaskDataset(train, task.data, system.processors)
    batch = dataset.collate([dataset[i] for i in range(len(train))])
    encoder = model.backbone.encoders["image"]
    mean_patch = encoder.patch_targets(batch["inputs"]["image"]["data"]).mean(0)  # (N, P) over the training images
    val_data = TaskDataset(val, task.data, system.processors)
    val_images = val_data.collate([val_data[i] for i in range(len(val))])["inputs"]["image"]["data"]
    mask = random_token_mask(len(val), task.num_patches, task.mask_ratio, torch.Generator().manual_seed(0))
    baseline = masked_mse(mean_patch.expand(len(val), -1, -1), encoder.patch_targets(val_images), mask).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(100):
        rows = torch.randint(0, len(train), (32,))
        inputs = {"image": {"data": batch["inputs"]["image"]["data"][rows]}}
        loss = model({"m": {"inputs": inputs, "target": batch["target"][rows]}})["m"]["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    first = evaluate(system, val, tasks=("m",))["m"]["masked_mse"]
    assert evaluate(system, val, tasks=("m",))["m"]["masked_mse"] == first  # a fixed masking in evaluation
    assert first < 0.7 * baseline  # about half of it after 100 steps
