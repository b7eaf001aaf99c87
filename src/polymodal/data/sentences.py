"""A corpus of real English sentences that needs no download: the example sentences of WordNet 3.0's
glosses ("the dog barked all night"), shipped with Polymodal (`data/corpora/`, WordNet's licence beside
them), split into train / val / test manifests of `{"id", "text"}` records.

The split is a pure function of each sentence (a hash), so a sentence lands in the same split on every
machine and for every corpus size: held-out sentences are never trained on. WordNet's definitions ("a
depression in southwestern Asia and eastern Africa"), phrases rather than sentences, can be added to the
training split (`glosses`): a task that needs only inputs, such as distillation, learns from any text.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Callable

CORPUS = Path(__file__).parent / "corpora" / "wordnet-examples.txt.gz"
GLOSSES = Path(__file__).parent / "corpora" / "wordnet-glosses.txt.gz"  # definitions: extra training text
BUCKETS = 10_000  # each sentence's hash bucket; val and test are fixed ranges of buckets


def read_sentences(path: Path = CORPUS) -> list[str]:
    """The corpus, one sentence per line (gzip or plain text), blank lines dropped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def split_of(sentence: str, val_fraction: float, test_fraction: float) -> str:
    """"train", "val" or "test" for one sentence, from the hash of its text."""
    bucket = int(hashlib.sha1(sentence.encode("utf-8")).hexdigest(), 16) % BUCKETS
    if bucket < test_fraction * BUCKETS:
        return "test"
    if bucket < (test_fraction + val_fraction) * BUCKETS:
        return "val"
    return "train"


def write_sentences(out: str | Path, *, val_fraction: float = 0.03, test_fraction: float = 0.06,
                    glosses: bool = False, source: Path = CORPUS,
                    log: Callable[[str], None] = print) -> dict[str, int]:
    """Write `out/{train,val,test}.jsonl` from the corpus (`glosses`: WordNet's definitions too, in the
    training split only); returns the number of texts per split."""
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction and test_fraction must be in (0, 1) with a sum below 1, "
                         f"got {val_fraction} and {test_fraction}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for sentence in read_sentences(source):
        splits[split_of(sentence, val_fraction, test_fraction)].append(sentence)
    if glosses:
        splits["train"] += read_sentences(GLOSSES)
    for name, sentences in splits.items():
        with (out / f"{name}.jsonl").open("w") as f:
            for i, text in enumerate(sentences):
                f.write(json.dumps({"id": f"{name}-{i:06d}", "text": text}) + "\n")
    counts = {name: len(s) for name, s in splits.items()}
    log(f"wrote {out}: " + ", ".join(f"{n} {name}" for name, n in counts.items())
        + " texts (WordNet 3.0 example sentences" + (", and its definitions in train)" if glosses else ")"))
    return counts
