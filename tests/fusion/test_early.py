"""Early fusion's layout (docs/concepts.md#math-input): [m_1; X^(1); m_2; X^(2)] in sorted modality order, masks
alongside."""

import torch

from polymodal.fusion.early import concat_with_markers
from polymodal.layers.markers import ModalityMarkers
from polymodal.modalities.base import EncoderOutput


def test_layout_is_marker_then_tokens_per_modality_in_sorted_order():
    torch.manual_seed(0)
    markers = ModalityMarkers(["image", "text"], 4)
    image = EncoderOutput(tokens=torch.randn(2, 3, 4), mask=torch.ones(2, 3, dtype=torch.bool), pooled=torch.zeros(2, 4))
    text_mask = torch.tensor([[True, True], [True, False]])
    text = EncoderOutput(tokens=torch.randn(2, 2, 4), mask=text_mask, pooled=torch.zeros(2, 4))
    tokens, mask = concat_with_markers(markers, {"text": text, "image": image})
    marker, types = markers.marker.weight, markers.type_embedding.weight  # rows: image, text
    assert tokens.shape == (2, 1 + 3 + 1 + 2, 4)
    torch.testing.assert_close(tokens[:, 0], (marker[0] + types[0]).expand(2, 4))
    torch.testing.assert_close(tokens[:, 1:4], image.tokens + types[0])
    torch.testing.assert_close(tokens[:, 4], (marker[1] + types[1]).expand(2, 4))
    torch.testing.assert_close(tokens[:, 5:], text.tokens + types[1])
    assert mask.tolist() == [[True] * 7, [True] * 6 + [False]]
