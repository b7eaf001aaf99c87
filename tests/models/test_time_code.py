"""The joint transformer's time code: laid out like the fused tokens, inert without timed tokens, and it
lets a small model tell whether a sound happens with a picture event, which it cannot learn without."""

import torch
from torch import nn

from polymodal.fusion.early import EarlyFusion, concat_times, concat_with_markers
from polymodal.layers.markers import ModalityMarkers
from polymodal.layers.positions import interval_centres
from polymodal.modalities.base import EncoderOutput
from polymodal.models import MultimodalModel

WIDTH = 16


class _Timed(nn.Module):
    """A stand-in for a video or audio encoder: its input tokens, one per equal step of the clip."""

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1), times=interval_centres(tokens.shape[1]))


class _Untimed(nn.Module):
    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1))


def _joint(encoders: dict[str, nn.Module], **fusion) -> MultimodalModel:
    """A single-stream joint model (early fusion) over stand-in encoders."""
    return MultimodalModel(encoders, EarlyFusion(sorted(encoders), WIDTH, **fusion), width=WIDTH)


def _inputs(**tokens: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {"data": x, "mask": torch.ones(x.shape[:2], dtype=torch.bool)} for name, x in tokens.items()}


def test_fused_times_follow_the_token_layout():
    outputs = {"video": _Timed()(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool)),
               "text": _Untimed()(torch.randn(1, 2, 8), torch.ones(1, 2, dtype=torch.bool))}
    nan = float("nan")
    # sorted: text (marker, 2 tokens), video (marker, 4 frames)
    expected = torch.tensor([nan, nan, nan, nan, 0.125, 0.375, 0.625, 0.875])
    torch.testing.assert_close(concat_times(outputs), expected, equal_nan=True)
    tokens, _ = concat_with_markers(ModalityMarkers(["text", "video"], 8), outputs)
    assert tokens.shape[1] == len(expected)


def test_time_code_leaves_untimed_inputs_alone():
    torch.manual_seed(0)
    plain = _joint({"text": _Untimed()}, depth=1, num_heads=2, max_length=16)
    coded = _joint({"text": _Untimed()}, depth=1, num_heads=2, max_length=16, time_code=True)
    coded.load_state_dict(plain.state_dict())  # the code has no weights of its own
    x = _inputs(text=torch.randn(2, 5, WIDTH))
    torch.testing.assert_close(coded(x).pooled, plain(x).pooled)


def _sync_batch(n: int, generator: torch.Generator) -> tuple[dict, torch.Tensor]:
    """8 picture frames with one event frame, 12 sound steps with one beep; label: the beep falls in the
    event's frame (a third of the examples)."""
    background, event, hum, beep = torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(1))
    frame = torch.randint(0, 8, (n,), generator=generator)
    near = (1.5 * frame + 1.5 * torch.rand(n, generator=generator) - 0.5).ceil().clamp(0, 11).long()
    step = torch.where(torch.rand(n, generator=generator) < 0.5, near, torch.randint(0, 12, (n,), generator=generator))
    when = (step + 0.5) / 12
    label = ((when >= frame / 8) & (when < (frame + 1) / 8)).long()
    picture, sound = background.repeat(n, 8, 1), hum.repeat(n, 12, 1)
    picture[torch.arange(n), frame] = event
    sound[torch.arange(n), step] = beep
    return _inputs(picture=picture, sound=sound), label


def _sync_accuracy(time_code: bool) -> tuple[float, float]:
    """(accuracy, majority-answer accuracy) on held-out examples after training."""
    torch.manual_seed(0)
    model = _joint({"picture": _Timed(), "sound": _Timed()}, depth=2, num_heads=4, max_length=32,
                   time_code=time_code)
    head = nn.Linear(WIDTH, 2)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(800):
        inputs, label = _sync_batch(64, generator)
        loss = nn.functional.cross_entropy(head(model(inputs).pooled), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    inputs, label = _sync_batch(1000, torch.Generator().manual_seed(99))
    with torch.no_grad():
        accuracy = (head(model(inputs).pooled).argmax(dim=1) == label).float().mean().item()
    return accuracy, 1 - label.float().mean().item()


def test_time_code_lets_the_model_line_up_sound_and_picture():
    (with_code, majority), (without, _) = _sync_accuracy(True), _sync_accuracy(False)
    assert with_code > 0.9, with_code
    # 8 frames ↔ 12 steps: the joint positions line up poorly (0.75–0.80 against a majority of 0.65,
    # depending on the CPU's kernels), and the time code is worth a tenth or more
    assert without < majority + 0.2, (without, majority)
    assert with_code > without + 0.1, (with_code, without)
