"""Position encodings added to token sequences (docs/concepts.md#math-positions): fixed sinusoidal and learned."""

from __future__ import annotations

import torch
from torch import nn


def positions_from_mask(mask: torch.Tensor | None, length: int | None = None,
                        device: torch.device | None = None) -> torch.Tensor:
    """(B, N) position ids counting only real tokens: a token's position is the number of real tokens
    before it, so padding anywhere in a row (left-padded prompts, a short text before video) moves
    nothing and an example gets the same positions in any batch. Padding gets its neighbour's (never
    attended to). Without a mask: 0 .. length-1, (1, length)."""
    if mask is None:
        return torch.arange(length, device=device)[None]
    return (mask.long().cumsum(1) - 1).clamp(min=0)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The docs/concepts.md#math-positions table: PE(i, 2j) = sin(i / 10000^(2j/d)), PE(i, 2j+1) = cos(i /
    10000^(2j/d)).

    Args:
        length: number of positions i = 0 .. length-1.
        dim: model width d; must be even.

    Returns:
        (length, dim) float32 table.
    """
    if dim % 2 != 0:
        raise ValueError(f"sinusoidal positions need an even dim, got dim={dim}")
    # float64 so large positions keep their precision before the final cast.
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)  # (length, 1)
    two_j = torch.arange(0, dim, 2, dtype=torch.float64)  # (dim/2,)
    angles = position / torch.pow(10000.0, two_j / dim)  # (length, dim/2)
    table = torch.empty(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.float()


def _check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ValueError(f"sequence length {length} exceeds max_len={max_len} of the position encoding")


def check_position_ids(position_ids: torch.Tensor, below: int | None, max_len: int) -> None:
    """Every id must be < max_len. `below` is a bound on the ids the caller knows from shapes (N for ids
    counted over a mask of N tokens): when it is within max_len nothing else is checked, so nothing waits
    for the device and torch.compile keeps one graph. Otherwise the ids are read (skipped under compile
    when no bound is given; indexing then fails on its own)."""
    if below is not None and below <= max_len:
        return
    if below is not None or not torch.compiler.is_compiling():
        _check_length(int(position_ids.max()) + 1, max_len)


class SinusoidalPositions(nn.Module):
    """Adds the fixed sinusoidal table (docs/concepts.md#math-positions) to a sequence.

    The table is a non-persistent buffer: it is rebuilt from (dim, max_len), never stored in checkpoints.

    Args:
        dim: token width; must be even.
        max_len: longest sequence accepted.
    """

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add PE(0 .. N-1).

        Args:
            x: (B, N, dim) with N <= max_len.

        Returns:
            (B, N, dim) x + PE.
        """
        _check_length(x.shape[1], self.max_len)
        return x + self.table[: x.shape[1]].to(x.dtype)

    def at(self, position_ids: torch.Tensor, *, below: int | None = None) -> torch.Tensor:
        """PE at given positions: (B, N) long ids → (B, N, dim); `below` as in `check_position_ids`."""
        check_position_ids(position_ids, below, self.max_len)
        return self.table[position_ids]


class LearnedPositions(nn.Module):
    """Adds one learned vector per position, initialised N(0, 0.02).

    Args:
        dim: token width.
        max_len: longest sequence accepted.
    """

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the first N learned vectors.

        Args:
            x: (B, N, dim) with N <= max_len.

        Returns:
            (B, N, dim).
        """
        _check_length(x.shape[1], self.max_len)
        return x + self.weight[: x.shape[1]]

    def at(self, position_ids: torch.Tensor, *, below: int | None = None) -> torch.Tensor:
        """The learned vectors at given positions: (B, N) long ids → (B, N, dim); `below` as in
        `check_position_ids`."""
        check_position_ids(position_ids, below, self.max_len)
        return self.weight[position_ids]


def sinusoidal_table_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """2-D sinusoidal positions for a height × width grid, row-major: (height * width, dim).

    The first dim/2 channels encode the row with the sinusoidal formula, the last dim/2 the column, so a
    token's x and y are each linearly readable (what "left of" questions need).
    """
    if dim % 4:
        raise ValueError(f"2-D sinusoidal positions need dim divisible by 4, got {dim}")
    rows = sinusoidal_table(height, dim // 2)  # (H, dim/2)
    cols = sinusoidal_table(width, dim // 2)  # (W, dim/2)
    return torch.cat([rows[:, None, :].expand(height, width, -1),
                      cols[None, :, :].expand(height, width, -1)], dim=-1).reshape(height * width, dim)


class Sinusoidal2DPositions(nn.Module):
    """Adds fixed 2-D sinusoidal positions to a row-major grid of tokens (B, height * width, dim)."""

    def __init__(self, dim: int, height: int, width: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table_2d(height, width, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.table.shape[0]:
            raise ValueError(f"expected {self.table.shape[0]} grid tokens, got {x.shape[1]}")
        return x + self.table.to(x.dtype)


def interval_centres(count: int, device: torch.device | None = None) -> torch.Tensor:
    """(count,) the centres of `count` equal intervals of [0, 1): where, in a clip, each of `count`
    consecutive frames (or time steps) lies, as a fraction of the clip."""
    return (torch.arange(count, dtype=torch.float32, device=device) + 0.5) / count


def time_code_table(times: torch.Tensor, dim: int, max_frequency: float = 32.0) -> torch.Tensor:
    """A code for continuous times, so that two tokens at the same moment get the same vector.

    Channel pairs (2k, 2k+1) are sin/cos(2π f_k t) with f_k from 1 to `max_frequency` cycles per clip,
    geometrically spaced: the slowest pair tells every t in [0, 1) apart, the fastest resolves about
    1 / max_frequency of the clip, and the dot product of two codes is largest where the times are equal.

    Args:
        times: (N,) fractions of the clip in [0, 1); NaN for tokens with no time (they get zeros).
        dim: code width; must be even.
        max_frequency: the fastest pair's cycles per clip.

    Returns:
        (N, dim) float32.
    """
    if dim % 2:
        raise ValueError(f"a time code needs an even dim, got dim={dim}")
    pairs = dim // 2
    # float32 throughout (angles stay below 2π · max_frequency): every accelerator backend has it
    exponents = torch.arange(pairs, dtype=torch.float32, device=times.device) / max(pairs - 1, 1)
    frequencies = max_frequency ** exponents  # (dim/2,) 1 .. max_frequency
    timed = ~torch.isnan(times)
    angles = 2 * torch.pi * torch.where(timed, times, 0.0).float()[:, None] * frequencies  # (N, dim/2)
    table = torch.empty(times.shape[0], dim, dtype=torch.float32, device=times.device)
    table[:, 0::2], table[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return table * timed[:, None]
