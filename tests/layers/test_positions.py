"""Position encodings: the docs/concepts.md#math-positions formula by hand, and how the modules add them."""

import math

import pytest
import torch

from polymodal.layers import LearnedPositions, SinusoidalPositions, sinusoidal_table


@pytest.mark.parametrize("i, j", [(0, 0), (1, 0), (3, 1), (7, 2), (50, 3), (99, 7)])
def test_table_matches_formula(i, j):
    d = 16
    table = sinusoidal_table(100, d)
    angle = i / 10000 ** (2 * j / d)
    assert table[i, 2 * j].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert table[i, 2 * j + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_position_zero_is_sin0_cos0():
    assert torch.equal(sinusoidal_table(3, 8)[0], torch.tensor([0.0, 1.0] * 4))


def test_table_shape_and_dtype():
    table = sinusoidal_table(5, 6)
    assert table.shape == (5, 6) and table.dtype == torch.float32


def test_odd_dim_raises():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(4, 7)


def test_sinusoidal_adds_table_and_is_not_saved():
    pos = SinusoidalPositions(8, max_len=10)
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(pos(x), x + sinusoidal_table(6, 8))
    assert "table" not in pos.state_dict()


def test_learned_adds_its_first_rows():
    torch.manual_seed(0)
    pos = LearnedPositions(8, max_len=10)
    assert 0.01 < pos.weight.std().item() < 0.03
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(pos(x), x + pos.weight[:4])
    pos(x).sum().backward()
    assert pos.weight.grad[:4].abs().sum() > 0 and pos.weight.grad[4:].abs().sum() == 0


@pytest.mark.parametrize("cls", [SinusoidalPositions, LearnedPositions])
def test_too_long_raises_naming_max_len(cls):
    pos = cls(8, max_len=5)
    pos(torch.zeros(1, 5, 8))  # exactly max_len is fine
    with pytest.raises(ValueError, match="max_len=5"):
        pos(torch.zeros(1, 6, 8))


def test_sinusoidal_table_2d_encodes_row_then_column():
    from polymodal.layers.positions import sinusoidal_table, sinusoidal_table_2d

    table = sinusoidal_table_2d(3, 4, 8)  # (12, 8), row-major
    rows, cols = sinusoidal_table(3, 4), sinusoidal_table(4, 4)
    for r in range(3):
        for c in range(4):
            torch.testing.assert_close(table[r * 4 + c, :4], rows[r])
            torch.testing.assert_close(table[r * 4 + c, 4:], cols[c])
    with pytest.raises(ValueError, match="divisible by 4"):
        sinusoidal_table_2d(2, 2, 6)


def test_time_code_matches_its_formula():
    from polymodal.layers.positions import time_code_table
    dim, top = 8, 27.0
    code = time_code_table(torch.tensor([0.3]), dim, max_frequency=top)[0]
    for k in range(dim // 2):
        frequency = top ** (k / (dim // 2 - 1))
        assert code[2 * k].item() == pytest.approx(math.sin(2 * math.pi * frequency * 0.3), abs=1e-5)
        assert code[2 * k + 1].item() == pytest.approx(math.cos(2 * math.pi * frequency * 0.3), abs=1e-5)


def test_time_code_is_most_alike_at_the_same_time_and_zero_without_time():
    from polymodal.layers.positions import interval_centres, time_code_table
    frames, steps = time_code_table(interval_centres(16), 32), time_code_table(interval_centres(48), 32)
    # every audio step (48 per clip) is closest to the code of the video frame (16 per clip) it falls in
    assert torch.equal((steps @ frames.T).argmax(dim=1), torch.arange(48) // 3)
    assert torch.equal(time_code_table(torch.tensor([float("nan")]), 32), torch.zeros(1, 32))
    with pytest.raises(ValueError, match="even"):
        time_code_table(torch.tensor([0.5]), 7)


def test_interval_centres_are_the_middles_of_equal_intervals():
    from polymodal.layers.positions import interval_centres
    torch.testing.assert_close(interval_centres(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    torch.testing.assert_close(interval_centres(1), torch.tensor([0.5]))
