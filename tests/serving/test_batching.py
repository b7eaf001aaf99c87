"""The batcher gathers concurrent items into one pass (up to the size, within the wait), keeps different keys
apart, and fails only the bad item of a failed batch; through the server, concurrent embedding requests
share passes and get the vectors they would alone."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from polymodal.serving.batching import Batcher
from serving.conftest import make_app, running


def _gather(batcher: Batcher, items: list, key=lambda i: "k", run=None):
    calls = []

    def default(batch):
        calls.append(list(batch))
        time.sleep(0.01)
        return [x * 10 for x in batch]

    async def go():
        return await asyncio.gather(*(batcher.submit(key(i), run or default, i) for i in items))
    return asyncio.run(go()), calls


def test_concurrent_items_share_a_pass_up_to_the_batch_size():
    batcher = Batcher(max_batch_size=4, timeout_ms=200)
    results, calls = _gather(batcher, list(range(10)))
    batcher.close()
    assert results == [i * 10 for i in range(10)]
    assert [len(c) for c in calls] == [4, 4, 2]
    assert sorted(x for c in calls for x in c) == list(range(10))


def test_batch_size_one_runs_every_item_alone():
    batcher = Batcher(max_batch_size=1, timeout_ms=200)
    _, calls = _gather(batcher, list(range(5)))
    batcher.close()
    assert [len(c) for c in calls] == [1] * 5


def test_keys_never_share_a_pass():
    batcher = Batcher(max_batch_size=8, timeout_ms=100)
    results, calls = _gather(batcher, list(range(6)), key=lambda i: i % 2)
    batcher.close()
    assert results == [i * 10 for i in range(6)]
    assert sorted(sorted(c) for c in calls) == [[0, 2, 4], [1, 3, 5]]


def test_the_wait_is_bounded_by_the_timeout():
    batcher = Batcher(max_batch_size=64, timeout_ms=50)
    started = time.monotonic()
    results, calls = _gather(batcher, [1])
    batcher.close()
    assert results == [10] and len(calls) == 1
    assert time.monotonic() - started < 5  # a lone item runs after its wait, not when the batch fills


def test_a_failing_item_fails_alone():
    batcher = Batcher(max_batch_size=8, timeout_ms=100)

    def run(batch):
        if 3 in batch:
            raise ValueError("three is bad")
        return [x + 1 for x in batch]

    async def go():
        return await asyncio.gather(*(batcher.submit("k", run, i) for i in range(6)), return_exceptions=True)
    results = asyncio.run(go())
    batcher.close()
    assert [r for i, r in enumerate(results) if i != 3] == [1, 2, 3, 5, 6]
    assert isinstance(results[3], ValueError) and "three" in str(results[3])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(max_batch_size=0)
    with pytest.raises(ValueError, match="timeout_ms"):
        Batcher(timeout_ms=-1)


def test_concurrent_embedding_requests_share_passes_and_get_their_own_vectors(served):
    texts = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "triangle", "star")]
    alone = served["clip"].model.embed(texts=texts)["text"].numpy()
    with running(make_app(served, ("clip",), max_batch_size=16, batch_timeout_ms=100)) as url:
        async def go():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                return await asyncio.gather(*(client.post("/v1/embeddings", json={"input": t}) for t in texts))
        responses = asyncio.run(go())
        metrics = httpx.get(url + "/metrics").text
    got = np.array([r.json()["data"][0]["embedding"] for r in responses])
    np.testing.assert_allclose(got, alone, atol=1e-5)
    count = [l for l in metrics.splitlines() if l.startswith('polymodal_batch_size_count{kind="embed"}')]
    passes = float(count[0].split()[-1])
    assert passes < len(texts)  # 16 requests in fewer passes: they were batched
