"""Graph breaks under `torch.compile`, as the trainer compiles (`train.compile`): `torch._dynamo.explain`."""

from __future__ import annotations

from typing import Any, Callable

import torch._dynamo as dynamo


def graph_breaks(fn: Callable[..., Any], *args: Any) -> list[str]:
    """Where tracing `fn(*args)` breaks the graph (file:line and the reason); [] when it is one graph."""
    dynamo.reset()
    with dynamo.config.patch(allow_rnn=True):  # as the trainer sets it (GRU text encoders)
        explained = dynamo.explain(fn)(*args)
    where = [f"{b.reason.splitlines()[0]} at {b.user_stack[-1].filename}:{b.user_stack[-1].lineno}"
             for b in explained.break_reasons if b.user_stack]
    return where or ([] if explained.graph_count == 1 else [f"{explained.graph_count} graphs"])
