"""The step sampler's slices and the per-(epoch, index) augmentation seeds."""

from __future__ import annotations

import pytest
import torch

from polymodal.data.loader import StepSampler, TaskDataset
from polymodal.tasks.base import TaskData


def slices(n, batch, *, world_size, micro_batches, steps, seed=3, start_step=0):
    """{(rank, micro): [the items of each step]} from one sampler per rank."""
    out = {}
    for rank in range(world_size):
        sampler = StepSampler(n, batch, seed=seed, rank=rank, world_size=world_size, micro_batches=micro_batches,
                              max_steps=steps, start_step=start_step)
        stream = list(sampler)
        assert len(stream) == len(sampler) == (steps - start_step) * micro_batches
        for m in range(micro_batches):
            out[rank, m] = stream[m::micro_batches]
    return out


@pytest.mark.parametrize("world_size, micro_batches", [(1, 1), (2, 1), (1, 3), (2, 2), (3, 2)])
def test_ranks_and_micro_batches_cover_the_global_batch_exactly_once(world_size, micro_batches):
    n, batch, steps = 50, 12, 9  # 4 steps per epoch: steps 4..7 are epoch 1, step 8 starts epoch 2
    whole = list(StepSampler(n, batch, seed=3, max_steps=steps))
    parts = slices(n, batch, world_size=world_size, micro_batches=micro_batches, steps=steps)
    micro = batch // (world_size * micro_batches)
    for step in range(steps):
        # global batch = [micro-batch 0 of every rank, micro-batch 1 of every rank, ...]
        joined = [item for m in range(micro_batches) for rank in range(world_size) for item in parts[rank, m][step]]
        assert all(len(parts[key][step]) == micro for key in parts)
        assert joined == whole[step]
        assert len(set(joined)) == batch


def test_every_epoch_is_a_new_permutation_without_repeats_and_drops_its_tail():
    n, batch = 50, 8
    steps = list(StepSampler(n, batch, seed=5, max_steps=18))  # 6 full batches per epoch of 50
    assert all(len(b) == batch for b in steps)
    epochs = [[item for b in steps[e * 6:(e + 1) * 6] for item in b] for e in range(3)]
    for e, items in enumerate(epochs):
        assert {epoch for epoch, _ in items} == {e}
        assert len({index for _, index in items}) == 48  # no example twice; 2 of the 50 left out
    assert [i for _, i in epochs[0]] != [i for _, i in epochs[1]]
    assert StepSampler(n, batch, seed=5).steps_per_epoch == 6


def test_resuming_at_a_step_continues_the_same_stream():
    whole = slices(40, 8, world_size=2, micro_batches=2, steps=12)
    resumed = slices(40, 8, world_size=2, micro_batches=2, steps=12, start_step=7)
    assert all(resumed[key] == whole[key][7:] for key in whole)


def test_the_seed_changes_the_order():
    assert list(StepSampler(40, 8, seed=0, max_steps=3)) != list(StepSampler(40, 8, seed=1, max_steps=3))


def test_bad_batch_sizes_are_named():
    with pytest.raises(ValueError, match="not divisible by processes × accumulation \\(2 × 3\\)"):
        StepSampler(50, 8, seed=0, world_size=2, micro_batches=3)
    with pytest.raises(ValueError, match="6 examples are fewer than one batch of 8"):
        StepSampler(6, 8, seed=0)


class _Draw:
    """A processor whose output is a draw from the generator it is given (None: no augmentation)."""

    def prepare(self, value, generator):
        return torch.rand(3, generator=generator) if generator is not None else torch.full((3,), -1.0)

    def collate(self, items):
        return {"data": torch.stack(items)}


def test_augmentation_is_seeded_by_epoch_and_index():
    task = TaskData(inputs={"image": "image"})
    data = TaskDataset([{"image": f"{i}.png"} for i in range(4)], task, {"image": _Draw()}, seed=7)
    draw = {(e, i): data[e, i]["inputs"]["image"] for e in range(3) for i in range(4)}
    assert torch.equal(data[1, 2]["inputs"]["image"], draw[1, 2])  # the same example again: the same draw
    assert len({tuple(v.tolist()) for v in draw.values()}) == 12  # every (epoch, index) its own
    assert torch.equal(data[2]["inputs"]["image"], torch.full((3,), -1.0))  # evaluation: no generator
    other = TaskDataset(data.records, task, {"image": _Draw()}, seed=8)
    assert not torch.equal(other[1, 2]["inputs"]["image"], draw[1, 2])
    batch = data.collate([data[0, 1], data[0, 3]])
    assert torch.equal(batch["inputs"]["image"]["data"], torch.stack([draw[0, 1], draw[0, 3]]))
    assert batch["index"].tolist() == [1, 3]
