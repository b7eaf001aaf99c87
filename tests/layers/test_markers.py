"""Modality markers (docs/concepts.md#math-input): a marker token first, a type embedding on every token."""

import pytest
import torch

from polymodal.layers import ModalityMarkers


def test_prepends_marker_and_adds_type_embedding():
    torch.manual_seed(0)
    markers = ModalityMarkers(["image", "text"], dim=8)
    tokens = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out, out_mask = markers("text", tokens, mask)

    marker, type_emb = markers.marker.weight[1], markers.type_embedding.weight[1]
    assert out.shape == (2, 4, 8)
    torch.testing.assert_close(out[:, 0], (marker + type_emb).expand(2, 8))
    torch.testing.assert_close(out[:, 1:], tokens + type_emb)
    assert torch.equal(out_mask, torch.tensor([[True, True, True, False], [True, True, False, False]]))


def test_modalities_get_different_markers():
    markers = ModalityMarkers(["image", "text"], dim=8)
    tokens, mask = torch.zeros(1, 2, 8), torch.ones(1, 2, dtype=torch.bool)
    assert not torch.allclose(markers("image", tokens, mask)[0], markers("text", tokens, mask)[0])


def test_gradients_reach_only_the_used_modality():
    markers = ModalityMarkers(["image", "text"], dim=4)
    out, _ = markers("image", torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    out.sum().backward()
    for p in (markers.marker.weight, markers.type_embedding.weight):
        assert p.grad[0].abs().sum() > 0 and p.grad[1].abs().sum() == 0


def test_unknown_modality_names_it_and_the_known_ones():
    markers = ModalityMarkers(["image", "text"], dim=4)
    with pytest.raises(ValueError, match=r"'audio'.*\['image', 'text'\]"):
        markers("audio", torch.zeros(1, 1, 4), torch.ones(1, 1, dtype=torch.bool))


def test_duplicate_names_raise():
    with pytest.raises(ValueError, match="unique"):
        ModalityMarkers(["text", "text"], dim=4)
