"""Exact against HNSW search, the choice `polymodal index` makes by size (`--exact-up-to`, default 50 000).

For each index size n: n random unit vectors of the shared space's width (`--dim`, 64 as the shipped recipes)
and `--queries` queries near them; the time of one query against `faiss.IndexFlatIP` (exact) and
`faiss.IndexHNSWFlat` (32 links, efSearch 128: what search.py builds), HNSW's build time, and its recall@10
(the share of the exact top 10 HNSW finds). One query at a time, as the server answers them. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from polymodal.serving.search import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_LINKS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,50000,200000,500000")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="faiss threads (the server answers one query each)")
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        # clustered data, as embeddings are: 1 000 centres, each vector near one
        centres = rng.standard_normal((1000, args.dim)).astype(np.float32)
        vectors = centres[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, args.dim)).astype(np.float32)
        queries = vectors[rng.integers(0, n, args.queries)] + 0.3 * rng.standard_normal(
            (args.queries, args.dim)).astype(np.float32)
        faiss.normalize_L2(vectors)
        faiss.normalize_L2(queries)
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(vectors)
        started = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(args.dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction, hnsw.hnsw.efSearch = HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH
        hnsw.add(vectors)
        build = time.perf_counter() - started
        times, found = {}, []
        for name, index in (("exact", flat), ("hnsw", hnsw)):
            started = time.perf_counter()
            results = [index.search(q[None], 10)[1][0] for q in queries]
            times[name] = 1000 * (time.perf_counter() - started) / len(queries)
            found.append(results)
        recall = float(np.mean([len(set(e) & set(h)) / 10 for e, h in zip(*found)]))
        row = {"n": n, "exact_ms": round(times["exact"], 3), "hnsw_ms": round(times["hnsw"], 3),
               "hnsw_recall_at_10": round(recall, 4), "hnsw_build_s": round(build, 1)}
        rows.append(row)
        print(row, flush=True)
    print(json.dumps({"dim": args.dim, "threads": args.threads, "sizes": rows}))


if __name__ == "__main__":
    main()
