"""A search index over a manifest's records, built by `polymodal index RUN --data MANIFEST --out DIR` and
queried by the server's `/v1/search`: each record's embedding in the model's shared space, in a `faiss`
index (inner product of L2-normalised vectors: cosine similarity).

Exact search (`IndexFlatIP`) up to `exact_up_to` records; past it an HNSW graph (`IndexHNSWFlat`, 32
links, efSearch 128), whose search time grows with log n instead of n (docs/tutorials/serving.md#search says where
the two cross on this CPU, and what HNSW's recall is there).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..api import LoadedModel
from ..errors import PolymodalError

INDEX_FILE, RECORDS_FILE, META_FILE = "index.faiss", "records.jsonl", "index.json"
EXACT_UP_TO = 50_000
HNSW_LINKS, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
MEDIA = ("image", "video", "audio", "text")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise PolymodalError("polymodal index needs faiss: pip install faiss-cpu") from None
    return faiss


def build_index(model: LoadedModel, records: Sequence[dict[str, Any]], out: str | Path, *,
                modality: str | None = None, exact_up_to: int = EXACT_UP_TO, batch_size: int = 64,
                log: Callable[[str], Any] = print) -> Path:
    """Embed each record's `modality` (default: the first of image, video, audio, text the records and the
    model both have) and write the index, the records and what built them to `out`."""
    faiss = _faiss()
    if model.system.model.backbone.embed_dim is None:
        raise PolymodalError(f"this model has no shared embedding space (model.embed_dim): nothing to index; "
                             f"its tasks: {model.tasks}")
    have = [m for m in MEDIA if m in model.system.processors and all(r.get(m) for r in records)]
    if modality is None:
        if not have:
            raise PolymodalError(f"the records share none of the modalities this model embeds "
                                 f"({', '.join(sorted(model.system.processors))})")
        modality = have[0]
    elif modality not in have:
        raise PolymodalError(f"--modality {modality}: every record needs it and the model must embed it; "
                             f"usable: {', '.join(have) or 'none'}")
    key = {"image": "images", "text": "texts", "video": "videos", "audio": "audios"}[modality]
    chunks = []
    for start in range(0, len(records), batch_size):
        values = [r[modality] for r in records[start: start + batch_size]]
        chunks.append(model.embed(**{key: values})[modality].float().numpy())
        log(f"embedded {min(start + batch_size, len(records))} / {len(records)}")
    vectors = np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
    exact = len(records) <= exact_up_to
    if exact:
        index = faiss.IndexFlatIP(vectors.shape[1])
    else:
        index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(vectors)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / INDEX_FILE))
    with open(out / RECORDS_FILE, "w") as f:
        for record in records:
            f.write(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in record.items()}) + "\n")
    meta = {"model": str(model.folder.resolve()), "modality": modality, "count": len(records),
            "dim": int(vectors.shape[1]), "kind": "exact" if exact else "hnsw"}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


class SearchIndex:
    """An index folder, loaded: `search(vectors, k)` → per query [(record, score)], best first."""

    def __init__(self, folder: str | Path):
        faiss = _faiss()
        folder = Path(folder)
        for name in (INDEX_FILE, RECORDS_FILE, META_FILE):
            if not (folder / name).is_file():
                raise PolymodalError(f"{folder}: not an index folder (no {name}; build one with polymodal index)")
        self.folder = folder
        self.meta = json.loads((folder / META_FILE).read_text())
        self.index = faiss.read_index(str(folder / INDEX_FILE))
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = HNSW_EF_SEARCH
        self.records = [json.loads(line) for line in (folder / RECORDS_FILE).read_text().splitlines() if line]
        if len(self.records) != self.index.ntotal:
            raise PolymodalError(f"{folder}: {len(self.records)} records for {self.index.ntotal} vectors")

    @property
    def model(self) -> Path:
        return Path(self.meta["model"])

    def search(self, vectors: np.ndarray, k: int) -> list[list[tuple[dict[str, Any], float]]]:
        scores, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, len(self.records)))
        return [[(self.records[r], float(s)) for r, s in zip(row, score) if r >= 0] for row, score in zip(rows, scores)]
