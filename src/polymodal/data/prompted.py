"""Writing a prompted generation set (the prompted sounds and clips of `synth --generation`): per split, specs
drawn from a seeded generator, each rendered to a media file and recorded with its prompt, a manifest per
split and the set's statistics."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .manifest import write_manifest

SPLITS = ("train", "val", "test", "heldout")


def write_prompted_splits(out: Path, counts: dict[str, int], *, name: str, seed: int, salt: int, field: str,
                          suffix: str, category: str, draw: Callable[[np.random.Generator, bool], dict[str, Any]],
                          prompt: Callable[[dict[str, Any]], str],
                          write: Callable[[Path, dict[str, Any], np.random.Generator], Any], tally: str,
                          stats: dict[str, Any], log: Callable[[str], Any]) -> dict[str, Any]:
    """Write `{name}-{split}.jsonl` and `{name}s/{split}/NNNNNN{suffix}` under `out` for each split (held-out
    specs drawn with `draw(rng, True)`), each record {id, `field`: path, text, category, spec}; the split's
    count, its `tally` spec values and its distinct prompts go into `stats`, written as `{name}-stats.json`."""
    for split, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"n_{split}: expected a whole number of at least 0, got {n!r}")
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng((seed, salt, split_index))
        records = []
        for index in range(counts[split]):
            spec = draw(rng, split == "heldout")
            path = f"{name}s/{split}/{index:06d}{suffix}"
            write(out / path, spec, rng)
            records.append({"id": f"{name}-{split}-{index:06d}", field: path, "text": prompt(spec),
                            "category": category, "spec": spec})
        write_manifest(out / f"{name}-{split}.jsonl", records)
        log(f"{stats['benchmark']}: wrote {len(records)} {split} records to {out / f'{name}-{split}.jsonl'}")
        stats[split] = {"count": len(records), f"{tally}s": dict(Counter(r["spec"][tally] for r in records)),
                        "distinct_prompts": len({r["text"] for r in records})}
    (out / f"{name}-stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return stats
