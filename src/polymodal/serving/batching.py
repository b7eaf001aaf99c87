"""Dynamic batching: concurrent requests gathered into one forward pass.

Requests wait in a queue per *key* (what can share a pass: the same model, task and settings). One worker
thread runs the models: it takes the queue whose oldest request waited longest, waits up to
`timeout_ms` from that request's arrival for more (up to `max_batch_size`), and runs them as one batch.
The wait ends early once the batch holds as many items as the server has requests in flight: no other could
join, so a lone request is not kept waiting. A batch that fails is run again one request at a time, so one
bad request fails alone. With
`max_batch_size=1` every request runs alone (batching off), as a plain server would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

Run = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass
class _Pending:
    item: Any
    run: Run
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Runs `submit`ted items in batches on one worker thread.

    Args:
        max_batch_size: the most items in one pass (1: no batching).
        timeout_ms: how long the oldest item waits for others before its batch runs.
        on_batch: called with (key, batch size) before each pass (metrics).
        in_flight: how many requests the server is answering; a batch stops waiting once it holds that many
            items (no other request could join it), so a lone request runs at once. None: always wait.
    """

    def __init__(self, max_batch_size: int = 32, timeout_ms: float = 10.0,
                 on_batch: Callable[[Hashable, int], None] | None = None, in_flight: Callable[[], int] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: expected at least 1, got {max_batch_size}")
        if timeout_ms < 0:
            raise ValueError(f"timeout_ms: expected at least 0, got {timeout_ms}")
        self.max_batch_size, self.timeout = max_batch_size, timeout_ms / 1000.0
        self.on_batch, self.in_flight = on_batch, in_flight
        self._queues: OrderedDict[Hashable, deque[_Pending]] = OrderedDict()
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="polymodal-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Items waiting (not yet in a running pass)."""
        with self._condition:
            return sum(len(q) for q in self._queues.values())

    async def submit(self, key: Hashable, run: Run, item: Any) -> Any:
        """`run([item, ...])[i]` for this item, run in a batch with others of the same `key` (`run` must be
        the same function for one key: the first item's is used for the batch)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(item, run, loop.create_future(), loop)
        with self._condition:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queues.setdefault(key, deque()).append(pending)
            self._condition.notify()
        return await pending.future

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout=5)

    def _next_batch(self) -> tuple[Hashable, list[_Pending]] | None:
        with self._condition:
            while not self._closed:
                live = {k: q for k, q in self._queues.items() if q}
                if not live:
                    self._condition.wait()
                    continue
                key = min(live, key=lambda k: live[k][0].arrived)
                queue = live[key]
                deadline = queue[0].arrived + self.timeout
                while len(queue) < self.max_batch_size and not self._closed and \
                        (self.in_flight is None or len(queue) < self.in_flight()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._condition.wait(left)
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch_size))]
                if not queue:
                    del self._queues[key]
                batch = [p for p in batch if not p.future.cancelled()]
                if batch:
                    return key, batch
            return None

    def _work(self) -> None:
        while (taken := self._next_batch()) is not None:
            key, batch = taken
            if self.on_batch is not None:
                self.on_batch(key, len(batch))
            self._run(batch)

    @staticmethod
    def _settle(pending: _Pending, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if pending.future.done():
                return
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(result)
        try:
            pending.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the request's event loop is gone
            pass

    def _run(self, batch: list[_Pending]) -> None:
        try:
            results = batch[0].run([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except BaseException as error:  # noqa: BLE001 — every failure goes back to its request
            if len(batch) == 1:
                self._settle(batch[0], error=error)
                return
            for pending in batch:  # one at a time, so only the bad request fails
                self._run([pending])
            return
        for pending, result in zip(batch, results):
            self._settle(pending, result)
