"""The joint transformer's positional readout: padding-blind, position-aware, and it learns where."""

import pytest
import torch
from torch import nn

from polymodal.fusion import EarlyFusion
from polymodal.fusion.early import concat_with_markers
from polymodal.modalities.base import EncoderOutput
from polymodal.models import MultimodalModel


class _Tokens(nn.Module):
    """A stand-in encoder: returns its input tokens as they are."""

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1))


def _model(pooling: str, depth: int = 1) -> MultimodalModel:
    torch.manual_seed(0)
    fusion = EarlyFusion(["grid"], 16, depth=depth, num_heads=2, max_length=24, pooling=pooling, readout_dim=4)
    return MultimodalModel({"grid": _Tokens()}, fusion, width=16)


def test_positional_pooling_ignores_appended_padding():
    model = _model("positional").eval()
    tokens, mask = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    short = model({"grid": {"data": tokens, "mask": mask}}).pooled
    longer = model({"grid": {"data": torch.cat([tokens, torch.randn(2, 3, 16)], dim=1),
                             "mask": torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)}}).pooled
    assert short.shape == (2, 16)
    torch.testing.assert_close(longer, short, atol=1e-5, rtol=0)


def test_unknown_pooling_names_the_choices():
    with pytest.raises(ValueError, match="pooling: expected 'cls' or 'positional', got 'max'"):
        _model("max")


def _where_task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight identical tokens but one 'object' token; the label is whether it sits in the left half."""
    background, thing = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    tokens = background.repeat(n, 8, 1)  # (n, 8, 16)
    where = torch.randint(0, 8, (n,), generator=generator)
    tokens[torch.arange(n), where] = thing
    return tokens, (where < 4).long()


def _train_where(pooling: str) -> float:
    model = _model(pooling, depth=0)  # no attention layer: the readout alone must find the object
    head = nn.Linear(16, 2)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        tokens, labels = _where_task(64, generator)
        logits = head(model({"grid": {"data": tokens, "mask": torch.ones(64, 8, dtype=torch.bool)}}).pooled)
        loss = nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens, labels = _where_task(512, generator)
    with torch.no_grad():
        logits = head(model({"grid": {"data": tokens, "mask": torch.ones(512, 8, dtype=torch.bool)}}).pooled)
    return (logits.argmax(-1) == labels).float().mean().item()


def test_positional_readout_learns_where_a_token_is_and_cls_cannot_without_attention():
    assert _train_where("positional") > 0.98
    assert _train_where("cls") < 0.6  # the CLS output alone never sees the other tokens at depth 0


def test_joint_sequence_is_cls_then_early_fusion_with_positions_and_the_cls_is_attended_to():
    # the composition written out: [CLS; m; X] + PE → transformer with the CLS a real key; pooled = CLS output
    model = _model("cls", depth=2).eval()
    tokens, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    out = model({"grid": {"data": tokens, "mask": mask}})
    fusion = model.fusion
    concatenated, concat_mask = concat_with_markers(fusion.markers, {"grid": EncoderOutput(tokens, mask, tokens[:, 0])})
    sequence = torch.cat([fusion.cls.expand(2, -1, -1), concatenated], dim=1)  # (2, 1 + 1 + 5, 16)
    full_mask = torch.cat([torch.ones(2, 1, dtype=torch.bool), concat_mask], dim=1)
    expected = fusion.transformer(fusion.positions(sequence), full_mask)
    # real tokens sit at their layout positions here (the padding is at the end); padded ones are never read
    torch.testing.assert_close(out.fused.tokens[full_mask], expected[full_mask])
    assert torch.equal(out.fused.mask, full_mask)
    torch.testing.assert_close(out.pooled, expected[:, 0])
