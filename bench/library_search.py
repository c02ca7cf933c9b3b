"""Library search: per-query latency and recall@10 of the vector stores at library scale.

    .venv/bin/python bench/library_search.py [--sizes 100000,1000000]
        [--qdrant-sizes 10000,50000] [--queries 100] [--datasets uniform,clustered] [--quick]

For each dataset (512-d unit vectors) and size, slices are inserted through the real store classes
(``upsert`` of ``Slice`` payloads, one 1000-slice video per 1000 vectors, every 10th slice tagged
``goal``) and queried one query at a time through ``search(top_k=10)``, which returns
``SearchHit``s. Recall@10 is measured against brute-force numpy top-10 on the same vectors.

Rows:

- ``faiss exact``: a FaissStore whose approximate threshold is out of reach (IndexFlatIP only);
- ``faiss auto``: the same directory reopened with the default threshold (50 000), i.e. what users
  get: above the threshold the first search builds the IVF index (``build s``), later opens load
  it (``reopen s`` = open + first search); filtered rows show the path the filter took;
- ``qdrant local``: QdrantStore on ``:memory:`` (qdrant-client's embedded mode, a Python scan),
  only at ``--qdrant-sizes`` (see the note printed at the end for where and why it stops).

Datasets: ``uniform`` (random unit vectors: no neighbourhood structure, so recall there says little
about real embeddings; it is the worst case for any approximate index) and ``clustered`` (1000
gaussian clusters around random unit centres, queries drawn near cluster centres).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from indexer.models import Slice
from indexer.stores import SearchHit
from indexer.stores.faiss import DEFAULT_APPROX_THRESHOLD, FaissStore
from indexer.stores.qdrant import QdrantStore

ENC = "bench:synthetic"
DIM = 512
PER_VIDEO = 1000
TAG_EVERY = 10
K = 10
N_CLUSTERS = 1000
SIGMA = 0.05  # per-dimension noise around a unit centre: |noise| ~ 1.1, cos(point, centre) ~ 0.66
CHUNK = 100_000
WARMUP = 2


@dataclass
class Row:
    """One line of the result table."""

    dataset: str
    store: str
    n: int
    query: str
    path: str
    insert_s: float | None
    add_s: float | None
    build_s: float | None
    reopen_s: float | None
    p50_ms: float
    p95_ms: float
    recall: float
    reindex_s: float | None = None


def make_data(kind: str, n: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors of one dataset kind and ``n_queries`` unit queries (float32)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, DIM), dtype=np.float32)
    if kind == "uniform":
        for s in range(0, n, CHUNK):
            x[s : s + CHUNK] = rng.standard_normal((min(CHUNK, n - s), DIM), dtype=np.float32)
        q = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    elif kind == "clustered":
        centres = rng.standard_normal((N_CLUSTERS, DIM), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            x[s : s + m] = rng.standard_normal((m, DIM), dtype=np.float32)
            x[s : s + m] *= SIGMA
            x[s : s + m] += centres[rng.integers(0, N_CLUSTERS, m)]
        noise = rng.standard_normal((n_queries, DIM), dtype=np.float32)
        q = centres[rng.integers(0, N_CLUSTERS, n_queries)] + 0.5 * SIGMA * noise
    else:
        raise SystemExit(f"unknown dataset {kind!r}; use uniform or clustered")
    faiss.normalize_L2(x)
    q = np.ascontiguousarray(q, dtype=np.float32)
    faiss.normalize_L2(q)
    return x, q


def make_slices(n: int) -> list[Slice]:
    """Slice payloads for rows 0..n-1: row r is slice r % 1000 of video r // 1000."""
    out = []
    for r in range(n):
        i = r % PER_VIDEO
        out.append(
            Slice(
                video_id=f"v{r // PER_VIDEO:05d}",
                index=i,
                start_frame=25 * i,
                end_frame=25 * (i + 1),
                start_s=float(i),
                end_s=float(i + 1),
                tags=("goal",) if i % TAG_EVERY == 0 else (),
            )
        )
    return out


def row_of(hit: SearchHit) -> int:
    """The data row a hit's slice was built from."""
    return int(hit.slice.video_id[1:]) * PER_VIDEO + hit.slice.index


def true_top(x: np.ndarray, rows: np.ndarray | None, q: np.ndarray) -> list[set[int]]:
    """Brute-force top-K rows per query (numpy BLAS), among ``rows`` or all rows."""
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    ids = np.arange(len(x)) if rows is None else rows
    for s in range(0, len(ids), CHUNK):
        chunk = ids[s : s + CHUNK]
        sims = q @ (x[s : s + CHUNK] if rows is None else x[chunk]).T
        part = np.argpartition(-sims, min(K, sims.shape[1] - 1), axis=1)[:, :K]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        best_i = np.concatenate([best_i, chunk[part]], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :K]
        best_s = np.take_along_axis(best_s, keep, axis=1)
        best_i = np.take_along_axis(best_i, keep, axis=1)
    return [set(r.tolist()) for r in best_i]


def timed_queries(
    search: Callable[[np.ndarray], list[list[SearchHit]]], q: np.ndarray, truth: list[set[int]]
) -> tuple[float, float, float]:
    """p50 and p95 ms of single-query searches (after a warm-up) and mean recall@K."""
    for row in q[:WARMUP]:
        search(row)
    times, rec = [], []
    for row, t in zip(q, truth, strict=True):
        t0 = time.perf_counter()
        (hits,) = search(row)
        times.append(time.perf_counter() - t0)
        rec.append(len({row_of(h) for h in hits} & t) / len(t))
    p50, p95 = np.percentile(times, [50, 95]) * 1e3
    return float(p50), float(p95), float(np.mean(rec))


def faiss_path(store: FaissStore, **filters: object) -> str:
    """The path ``store.search(top_k=K, **filters)`` takes, with the IVF parameters if any."""
    path = store.search_path(K, **filters)
    if path.startswith("approx") and store.approx_spec:
        return store.approx_spec + (" postfilter" if path.endswith("postfilter") else "")
    return path


def bench_faiss(
    kind: str,
    x: np.ndarray,
    q: np.ndarray,
    slices: list[Slice],
    n: int,
    workdir: Path,
    threshold: int,
    log: Callable[[str], None],
    commit_only: bool = False,
) -> list[Row]:
    """Exact FAISS, then the same index reopened with the size threshold (the default setup).

    ``commit_only``: the exact row only (insert, one more video, exact queries).
    """
    rows: list[Row] = []
    d = workdir / f"faiss-{kind}-{n}"
    xs = x[:n]
    log(f"  ground truth for n={n}")
    truth = true_top(xs, None, q)
    tagged = np.arange(0, n, TAG_EVERY)
    truth_tag = true_top(xs, tagged, q)
    video = f"v{min(7, (n - 1) // PER_VIDEO):05d}"
    vrows = np.arange(int(video[1:]) * PER_VIDEO, min(n, (int(video[1:]) + 1) * PER_VIDEO))
    truth_video = true_top(xs, vrows, q)

    log(f"  faiss exact n={n}: upsert")
    store = FaissStore(d, approx_threshold=2**62)
    t0 = time.perf_counter()
    store.upsert(slices[:n], xs, ENC)
    insert_s = time.perf_counter() - t0
    log(f"  faiss exact n={n}: {len(q)} queries (upsert {insert_s:.1f} s)")
    p50, p95, rec = timed_queries(lambda r: store.search(r, top_k=K), q, truth)
    # One more video into the full store, then out again: the cost of an `rhl index` commit.
    extra = make_slices(PER_VIDEO)
    extra = [s.model_copy(update={"video_id": "extra"}) for s in extra]
    t0 = time.perf_counter()
    store.upsert(extra, xs[:PER_VIDEO], ENC)
    add_s = time.perf_counter() - t0
    log(f"  faiss exact n={n}: one more 1000-slice video upserted in {add_s:.2f} s")
    t0 = time.perf_counter()
    reindex(store, "extra", extra[: PER_VIDEO // 2], xs[PER_VIDEO : PER_VIDEO + PER_VIDEO // 2])
    reindex_s = time.perf_counter() - t0
    log(f"  faiss exact n={n}: that video re-indexed (500 other slices) in {reindex_s:.2f} s")
    store.delete_video("extra")
    rows.append(
        Row(kind, "faiss exact", n, "all", "exact", insert_s, add_s, None, None, p50, p95, rec,
            reindex_s)
    )
    log("  " + row_text(rows[-1]))  # each row as soon as it is measured: a long run may not end
    store.close()
    del store
    gc.collect()
    if commit_only:
        shutil.rmtree(d, ignore_errors=True)
        return rows

    log(f"  faiss auto n={n}: open + first search")
    t0 = time.perf_counter()
    store = FaissStore(d, approx_threshold=threshold)
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.search(q[0], top_k=K)
    build_s = time.perf_counter() - t0 if n > threshold else None
    path = faiss_path(store)
    log(f"  faiss auto n={n}: open {open_s:.1f} s, first search {time.perf_counter() - t0:.1f} s")
    p50, p95, rec = timed_queries(lambda r: store.search(r, top_k=K), q, truth)
    rows.append(Row(kind, "faiss auto", n, "all", path, None, None, build_s, None, p50, p95, rec))
    for label, kw, tr in (
        (f"tag 1/{TAG_EVERY}", {"tags": ["goal"]}, truth_tag),
        ("one video", {"video_id": video}, truth_video),
    ):
        p50, p95, rec = timed_queries(lambda r, kw=kw: store.search(r, top_k=K, **kw), q, tr)
        path = faiss_path(store, **kw)
        rows.append(
            Row(kind, "faiss auto", n, label, path, None, None, None, None, p50, p95, rec)
        )
    store.close()
    del store
    gc.collect()

    if n > threshold:
        log(f"  faiss auto n={n}: reopen (approximate index loaded from disk, not rebuilt)")
        t0 = time.perf_counter()
        with FaissStore(d, approx_threshold=threshold) as store:
            store.search(q[0], top_k=K)
            rows[1].reopen_s = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
    return rows


def bench_qdrant(
    kind: str,
    x: np.ndarray,
    q: np.ndarray,
    slices: list[Slice],
    n: int,
    log: Callable[[str], None],
) -> list[Row]:
    """Qdrant local mode (``:memory:``), and FAISS at the same size for comparison."""
    xs = x[:n]
    truth = true_top(xs, None, q)
    log(f"  qdrant local n={n}: upsert")
    store = QdrantStore.from_location(":memory:")
    t0 = time.perf_counter()
    store.upsert(slices[:n], xs, ENC)
    insert_s = time.perf_counter() - t0
    log(f"  qdrant local n={n}: {len(q)} queries (upsert {insert_s:.1f} s)")
    p50, p95, rec = timed_queries(lambda r: store.search(r, top_k=K), q, truth)
    store.close()
    rows = [
        Row(kind, "qdrant local", n, "all", "python scan", insert_s, None, None, None, p50, p95,
            rec)
    ]
    with tempfile.TemporaryDirectory(prefix="rhl-bench-") as tmp:
        fs = FaissStore(tmp)
        t0 = time.perf_counter()
        fs.upsert(slices[:n], xs, ENC)
        insert_s = time.perf_counter() - t0
        p50, p95, rec = timed_queries(lambda r: fs.search(r, top_k=K), q, truth)
        rows.append(
            Row(kind, "faiss auto", n, "all", faiss_path(fs), insert_s, None, None, None, p50, p95,
                rec)
        )
        fs.close()
    return rows


def qdrant_note(rows: list[Row]) -> str:
    """Where the Qdrant local rows stopped and why, extrapolated from the largest one."""
    q = [r for r in rows if r.store == "qdrant local"]
    if not q:
        return "qdrant local: not run (--qdrant-sizes '')."
    last = max(q, key=lambda r: (r.n, r.p50_ms))
    per_point = np.mean([r.p50_ms / r.n for r in q if r.n == last.n])
    return (
        f"qdrant local: stopped at {last.n} points. Its embedded mode scans in Python, so a query\n"
        f"  costs ~linearly in n: from the {last.n}-point rows, ~{per_point * 1e5:.0f} ms at 1e5"
        f" and ~{per_point * 1e6 / 1e3:.1f} s at 1e6 per query,\n"
        "  and qdrant-client itself warns above 20 000 points. Past that use FAISS or a Qdrant\n"
        "  server (HNSW)."
    )


def reindex(store: FaissStore, video: str, slices: list[Slice], x: np.ndarray) -> None:
    """Index ``video`` again with other slices: ``replace_video``, one transaction; a store
    from before it (run from an old checkout for a before/after table) deletes, then upserts.
    """
    if hasattr(store, "replace_video"):
        store.replace_video(video, slices, x, ENC)
    else:
        store.delete_video(video)
        store.upsert(slices, x, ENC)


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def row_text(r: Row) -> str:
    """One line of the result table."""
    return (
        f"{r.dataset:<10} {r.store:<13} {r.n:>9} {r.query:<10} {r.path:<31} "
        f"{fmt(r.insert_s, '.1f'):>8} {fmt(r.add_s, '.2f'):>7} {fmt(r.reindex_s, '.2f'):>9} "
        f"{fmt(r.build_s, '.1f'):>7} {fmt(r.reopen_s, '.1f'):>8} "
        f"{r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.recall:>5.3f}"
    )


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'dataset':<10} {'store':<13} {'n':>9} {'query':<10} {'path':<31} "
        f"{'insert s':>8} {'add1k s':>7} {'reidx1k s':>9} {'build s':>7} {'reopen s':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'R@10':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(row_text(r))


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(float(s)) for s in text.split(",") if s.strip()})
    except ValueError:
        raise SystemExit(f"bad size list {text!r}; use e.g. 100000,1000000 or 1e5,1e6") from None
    if any(s < 1 for s in sizes):
        raise SystemExit(f"sizes must be positive, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", help="FAISS library sizes (default 100000,1000000)")
    ap.add_argument("--qdrant-sizes", help="Qdrant local sizes, '' for none (default 10000,50000)")
    ap.add_argument("--queries", type=int, help="queries per measurement (default 100)")
    ap.add_argument("--datasets", default="uniform,clustered")
    ap.add_argument(
        "--threshold",
        type=int,
        default=DEFAULT_APPROX_THRESHOLD,
        help=f"FAISS approx_threshold of the 'auto' rows (default {DEFAULT_APPROX_THRESHOLD})",
    )
    ap.add_argument("--workdir", type=Path, help="where index directories go (default: a temp dir)")
    ap.add_argument("--threads", type=int, help="FAISS OpenMP threads (default: all CPUs)")
    ap.add_argument("--quick", action="store_true", help="small sizes, 30 queries: a smoke run")
    ap.add_argument("--commit-only", action="store_true",
                    help="FAISS exact rows only: the cost of writing (insert, add1k), no IVF")
    a = ap.parse_args(argv)
    sizes = parse_sizes(a.sizes or ("20000,100000" if a.quick else "100000,1000000"))
    qsizes = parse_sizes(
        a.qdrant_sizes if a.qdrant_sizes is not None else ("10000" if a.quick else "10000,50000")
    )
    n_queries = a.queries or (30 if a.quick else 100)
    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]

    if a.threads:
        faiss.omp_set_num_threads(a.threads)
    start = time.perf_counter()
    cmd = shlex.join([Path(sys.executable).as_posix(), *sys.argv])

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    print(f"command: {cmd}")
    print(
        f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    n_max = max(sizes + qsizes)
    log(f"building {n_max} Slice payloads")
    slices = make_slices(n_max)
    rows: list[Row] = []
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="rhl-library-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for seed, kind in enumerate(datasets):
            log(f"dataset {kind}: generating {n_max} x {DIM}")
            x, q = make_data(kind, n_max, n_queries, seed)
            for n in qsizes:
                rows += bench_qdrant(kind, x, q, slices, n, log)
            for n in sizes:
                rows += bench_faiss(kind, x, q, slices, n, workdir, a.threshold, log,
                                    a.commit_only)
            del x
            gc.collect()
    finally:
        if a.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print_table(rows)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"""
{n_queries} queries per row, one at a time, top_k={K}, {DIM}-d; p50/p95 per query; R@10 =
recall@10 vs brute-force numpy top-10 on the same vectors (ties aside, exact paths give 1.000).
All rows go through the store classes: upsert() of Slice payloads, search() returning SearchHits.
insert s = one upsert() of all n slices (ids, payload JSON, index files written);
add1k s = one more upsert() of a 1000-slice video into the full store (one `rhl index` commit);
reidx1k s = that video indexed again with 500 other slices (replace_video: `rhl index --reindex`);
build s = first search after opening, which trains + fills + saves the IVF index;
reopen s = open again + first search, with the saved IVF index loaded instead of rebuilt.
faiss auto = FaissStore with approx_threshold={a.threshold}: exact up to it, IVF above it;
  filters post-filter the IVF ranking, or run exactly on the passing points when they are too
  few for a ranking (exact-subset); path = FaissStore.search_path().
uniform: random unit vectors have no neighbourhood structure (in {DIM}-d every point is nearly
  equidistant), so their recall says little about real embeddings; it is the worst case.
clustered: {N_CLUSTERS} gaussian clusters (sigma {SIGMA}/dim), queries near cluster centres.
{qdrant_note(rows)}
peak RSS {rss_gb:.1f} GiB; wall {time.perf_counter() - start:.0f} s; load avg now \
{os.getloadavg()[0]:.2f} (other processes on these CPUs inflate p95 most)
command: {cmd}"""
    )


if __name__ == "__main__":
    main()
