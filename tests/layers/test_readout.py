"""`place_by_position`: each real token in the slot of its count of real tokens before it."""

import pytest
import torch

from polymodal.layers.readout import place_by_position


def test_tokens_go_to_their_position_among_the_real_tokens():
    values = torch.tensor([[[1.0], [2.0], [3.0], [4.0]],
                           [[5.0], [6.0], [7.0], [8.0]]])
    mask = torch.tensor([[True, False, True, True],  # padding inside the row moves nothing after it
                         [True, True, False, False]])
    placed = place_by_position(values, mask, max_length=5)
    assert placed[..., 0].tolist() == [[1.0, 3.0, 4.0, 0.0, 0.0], [5.0, 6.0, 0.0, 0.0, 0.0]]


def test_more_real_tokens_than_slots_is_an_error():
    with pytest.raises(ValueError, match="a sequence of 3 tokens is longer than max_length=2"):
        place_by_position(torch.ones(1, 3, 2), torch.ones(1, 3, dtype=torch.bool), max_length=2)
    # padding beyond max_length is fine
    mask = torch.tensor([[True, True, False]])
    assert place_by_position(torch.ones(1, 3, 2), mask, max_length=2).sum() == 4
