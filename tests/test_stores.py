from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.models import Slice
from indexer.stores import STORES, SearchHit, VectorStore, open_store, point_id
from indexer.stores.faiss import FaissStore, faiss_id
from indexer.stores.qdrant import QdrantStore
from rhl_common.errors import ConfigError, StoreError

ENC = "open_clip:rhl-tiny-vit:random"
DIM = 16


def make_slices(
    video_id: str, n: int, tags: dict[int, tuple[str, ...]] | None = None, start: int = 0
) -> list[Slice]:
    """``n`` consecutive 1 s slices at 25 fps; ``tags`` maps slice index -> tags."""
    tags = tags or {}
    return [
        Slice(
            video_id=video_id,
            index=i,
            start_frame=25 * i,
            end_frame=25 * (i + 1),
            start_s=float(i),
            end_s=float(i + 1),
            tags=tags.get(i, ()),
        )
        for i in range(start, start + n)
    ]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def key(hit: SearchHit) -> tuple[str, int]:
    return hit.slice.video_id, hit.slice.index


@pytest.fixture(params=["faiss", "qdrant-memory", "qdrant-path"])
def store(request, tmp_path):
    uri = {
        "faiss": f"faiss:{tmp_path / 'idx'}",
        "qdrant-memory": "qdrant::memory:",
        "qdrant-path": f"qdrant:{tmp_path / 'qd'}",
    }[request.param]
    s = open_store(uri)
    yield s
    s.close()


@pytest.fixture
def filled(store):
    """Two videos: 'a' (10 slices, some tagged) and 'b' (6 slices)."""
    rng = np.random.default_rng(0)
    va, vb = unit(rng, 10), unit(rng, 6)
    tags = {2: ("goal",), 3: ("goal", "crowd"), 7: ("crowd",)}
    store.upsert(make_slices("a", 10, tags), va, ENC)
    store.upsert(make_slices("b", 6, {1: ("goal", "crowd")}), vb, ENC)
    return store, va, vb


def test_open_store_backends(tmp_path):
    s = open_store(str(tmp_path / "plain"))
    assert isinstance(s, FaissStore) and isinstance(s, VectorStore) and s.name == "faiss"
    assert (tmp_path / "plain" / "slices").is_dir()
    q = open_store("qdrant::memory:", collection="clips")
    assert isinstance(q, QdrantStore) and isinstance(q, VectorStore) and q.name == "qdrant"
    assert q.collection == "clips" and q.encoder_spec is None and q.dim is None
    assert set(STORES) == {"faiss", "qdrant"}
    s.close()
    q.close()


@pytest.mark.parametrize(
    "uri", ["", "   ", "redis://localhost:6379", "milvus:foo", "faiss:", "qdrant:"]
)
def test_bad_uri(uri):
    with pytest.raises(StoreError, match="faiss:DIR"):
        open_store(uri)


def test_faiss_uri_on_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="cannot create"):
        open_store(f"faiss:{f}")


def test_point_ids_deterministic():
    a = point_id(ENC, "v", 3)
    assert a == point_id(ENC, "v", 3)
    assert a != point_id(ENC, "v", 4) != point_id("other", "v", 3)
    assert point_id(ENC, "a|1", 2) != point_id(ENC, "a", 12)
    assert 0 <= faiss_id(a) < 2**63


def test_empty_store(store):
    assert store.count() == 0 and store.video_ids() == []
    assert store.search(np.ones((2, DIM), np.float32)) == [[], []]
    slices, vecs = store.get_video("nope")
    assert slices == [] and vecs.shape[0] == 0
    assert store.delete_video("nope") == 0
    assert store.upsert([], np.zeros((0, DIM), np.float32), ENC) == 0


def test_upsert_twice_adds_nothing(store):
    rng = np.random.default_rng(1)
    sl, v = make_slices("a", 8), unit(rng, 8)
    assert store.upsert(sl, v, ENC) == 8
    assert store.upsert(sl, v, ENC) == 0
    assert store.count() == 8 and store.count("a") == 8
    assert store.encoder_spec == ENC and store.dim == DIM
    # Partly overlapping batch: only the new ones count.
    assert store.upsert(make_slices("a", 4, start=6), unit(rng, 4), ENC) == 2
    assert store.count() == 10


def test_reupsert_replaces_vector_and_payload(store):
    rng = np.random.default_rng(2)
    v = unit(rng, 5)
    store.upsert(make_slices("a", 5), v, ENC)
    new_v = unit(rng, 1)
    store.upsert(make_slices("a", 1, {3: ("new",)}, start=3), new_v, ENC)
    assert store.count() == 5
    slices, vecs = store.get_video("a")
    assert slices[3].tags == ("new",)
    np.testing.assert_allclose(vecs[3], new_v[0], atol=1e-6)
    hit = store.search(new_v[0], top_k=1)[0][0]
    assert key(hit) == ("a", 3) and hit.score_raw == pytest.approx(1.0, abs=1e-5)


def test_duplicate_ids_in_one_batch_last_wins(store):
    rng = np.random.default_rng(3)
    sl = make_slices("a", 2) + make_slices("a", 1, {0: ("dup",)})
    assert store.upsert(sl, unit(rng, 3), ENC) == 2
    assert store.count() == 2
    assert store.get_video("a")[0][0].tags == ("dup",)


def test_search_finds_planted_vector(filled):
    store, va, vb = filled
    rng = np.random.default_rng(4)
    noisy = va[4] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
    res = store.search(np.stack([noisy, vb[2]]), top_k=5)
    assert len(res) == 2 and all(len(r) == 5 for r in res)
    assert key(res[0][0]) == ("a", 4)
    assert key(res[1][0]) == ("b", 2) and res[1][0].score_raw == pytest.approx(1.0, abs=1e-5)
    scores = [h.score_raw for h in res[0]]
    assert scores == sorted(scores, reverse=True)
    # A single (dim,) query still gives one list; unnormalised queries score as cosine.
    (one,) = store.search(3.0 * vb[2], top_k=1)
    assert key(one[0]) == ("b", 2) and one[0].score_raw == pytest.approx(1.0, abs=1e-5)
    assert len(store.search(va[0], top_k=100)[0]) == 16


def test_video_and_tag_filters(filled):
    store, va, vb = filled
    (hits,) = store.search(vb[2], top_k=20, video_id="a")
    assert len(hits) == 10 and {h.slice.video_id for h in hits} == {"a"}
    (hits,) = store.search(va[0], top_k=20, tags=["goal"])
    assert sorted(key(h) for h in hits) == [("a", 2), ("a", 3), ("b", 1)]
    (hits,) = store.search(va[0], top_k=20, tags=["goal", "crowd"])
    assert sorted(key(h) for h in hits) == [("a", 3), ("b", 1)]
    (hits,) = store.search(va[0], top_k=20, video_id="a", tags=("crowd",))
    assert sorted(key(h) for h in hits) == [("a", 3), ("a", 7)]
    assert store.search(va[0], video_id="a", tags=["nope"]) == [[]]
    assert store.search(va[0], video_id="zzz") == [[]]


def test_get_video_order(store):
    rng = np.random.default_rng(5)
    sl, v = make_slices("a", 12), unit(rng, 12)
    order = rng.permutation(12)
    store.upsert([sl[i] for i in order], v[order], ENC)
    slices, vecs = store.get_video("a")
    assert [s.index for s in slices] == list(range(12))
    assert slices == sl
    assert vecs.dtype == np.float32 and vecs.shape == (12, DIM)
    np.testing.assert_allclose(vecs, v, atol=1e-6)
    slices, vecs = store.get_video("unknown")
    assert slices == [] and vecs.shape == (0, DIM)


def test_delete_video(filled):
    store, va, _ = filled
    assert store.video_ids() == ["a", "b"]
    assert store.delete_video("a") == 10
    assert store.delete_video("a") == 0
    assert store.count() == 6 and store.count("a") == 0 and store.video_ids() == ["b"]
    (hits,) = store.search(va[0], top_k=20)
    assert {h.slice.video_id for h in hits} == {"b"}


def test_replace_video(filled):
    store, va, vb = filled
    rng = np.random.default_rng(9)
    # Re-sliced: 4 slices where there were 10, one of them with a new index.
    new = make_slices("a", 3) + make_slices("a", 1, start=20)
    vn = unit(rng, 4)
    assert store.replace_video("a", new, vn, ENC) == 1  # index 20 is new; 0..2 are replaced
    slices, vecs = store.get_video("a")
    assert [s.index for s in slices] == [0, 1, 2, 20]
    np.testing.assert_allclose(vecs, vn, atol=1e-6)
    assert store.count() == 4 + 6 and store.count("b") == 6
    (hits,) = store.search(va[5], top_k=20)  # a's dropped slices are not found any more
    assert {key(h) for h in hits if h.slice.video_id == "a"} == {("a", 0), ("a", 1), ("a", 2),
                                                                 ("a", 20)}
    assert store.replace_video("a", [], np.zeros((0, DIM), np.float32), ENC) == 0
    assert store.video_ids() == ["b"]
    with pytest.raises(StoreError, match="slice of video 'b'"):
        store.replace_video("a", make_slices("b", 1), unit(rng, 1), ENC)
    assert store.count() == 6


def test_speech_of_a_resliced_video_is_replaced(tmp_path):
    from indexer.speech.store import SpeechVectors, open_speech_store, store_speech

    rng = np.random.default_rng(10)
    first = make_slices("a", 6)
    with open_speech_store(str(tmp_path / "idx")) as db:
        spoken = SpeechVectors(tuple(first), ("hi",) * 6, unit(rng, 6), ENC)
        assert store_speech(db, spoken, "a") == 6
        # Re-sliced, and speech now on slices 1 and 8 only: slices 0, 2..5 are gone.
        again = (make_slices("a", 1, start=1)[0], make_slices("a", 1, start=8)[0])
        assert store_speech(db, SpeechVectors(again, ("x", "y"), unit(rng, 2), ENC), "a") == 1
        assert [x.index for x in db.get_video("a")[0]] == [1, 8]
        nobody = SpeechVectors((), (), np.zeros((0, DIM), np.float32), ENC)
        assert store_speech(db, nobody, "a") == 0 and db.count() == 0


def test_encoder_mismatch(filled):
    store, _, _ = filled
    with pytest.raises(StoreError, match=r"open_clip:rhl-tiny-vit:random.*other:enc"):
        store.upsert(make_slices("c", 2), unit(np.random.default_rng(6), 2), "other:enc")
    assert store.count() == 16


def test_dim_mismatch(filled):
    store, _, _ = filled
    with pytest.raises(StoreError, match=r"16-d.*8-d"):
        store.upsert(make_slices("c", 2), unit(np.random.default_rng(7), 2, dim=8), ENC)
    with pytest.raises(StoreError, match=r"8-d.*16-d"):
        store.search(np.ones(8, np.float32))


@pytest.mark.parametrize("bad", [np.ones((3, DIM)), np.ones((2, DIM, 1)), np.ones(DIM)])
def test_bad_vectors(store, bad):
    with pytest.raises(StoreError, match="shape"):
        store.upsert(make_slices("a", 2), bad, ENC)


def test_nan_vectors_and_bad_top_k(store):
    v = np.ones((2, DIM), np.float32)
    v[1, 3] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        store.upsert(make_slices("a", 2), v, ENC)
    with pytest.raises(StoreError, match="top_k"):
        store.search(np.ones(DIM, np.float32), top_k=0)
    with pytest.raises(StoreError, match="encoder_spec"):
        store.upsert(make_slices("a", 1), np.ones((1, DIM), np.float32), "")


def cache_files(d, kind: str) -> list:
    return sorted(d.glob(f"{kind}-*.faiss"))


def test_faiss_persistence(tmp_path):
    rng = np.random.default_rng(8)
    va, vb, q = unit(rng, 30), unit(rng, 20), unit(rng, 5)
    with open_store(str(tmp_path)) as s:
        s.upsert(make_slices("a", 30, {5: ("goal",)}), va, ENC)
        s.upsert(make_slices("b", 20), vb, ENC)
        s.delete_video("b")
        s.upsert(make_slices("b", 20), vb, ENC)
        assert s.generation == 4  # one per commit
        before = s.search(q, top_k=7)
        before_f = s.search(q, top_k=7, video_id="a", tags=["goal"])
    d = tmp_path / "slices"
    # A small store keeps no cache: opening rebuilds the index from the database.
    assert sorted(p.name for p in d.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "store.sqlite"
    ]
    for cached in (False, True):
        with open_store(f"faiss:{tmp_path}") as s:
            assert s.encoder_spec == ENC and s.dim == DIM and s.count() == 50
            assert s.video_ids() == ["a", "b"]
            assert s.search(q, top_k=7) == before
            assert s.search(q, top_k=7, video_id="a", tags=["goal"]) == before_f
            if not cached:
                s.save_cache()
                assert len(cache_files(d, "flat")) == 1
    with open_store(f"faiss:{tmp_path}") as s:
        assert s.upsert(make_slices("a", 30), va, ENC) == 0
        with pytest.raises(StoreError, match="other"):
            s.upsert(make_slices("c", 1), va[:1], "other")
    # Collections are separate subfolders.
    with open_store(str(tmp_path), collection="clips") as s:
        assert s.count() == 0 and s.encoder_spec is None


def test_faiss_read_never_creates(tmp_path):
    with pytest.raises(StoreError, match="no FAISS store at .*a read never creates"):
        open_store(str(tmp_path / "typo"), create=False)
    with pytest.raises(StoreError, match="no Qdrant store"):
        open_store(f"qdrant:{tmp_path / 'typo2'}", create=False)
    assert not (tmp_path / "typo").exists() and not (tmp_path / "typo2").exists()


def test_faiss_corrupt_cache_detected_and_rebuilt(tmp_path, caplog):
    rng = np.random.default_rng(9)
    vecs = unit(rng, 40)
    with open_store(str(tmp_path)) as s:
        s.upsert(make_slices("a", 40), vecs, ENC)
        s.save_cache()
        before = s.search(vecs[:3], top_k=5)
    d = tmp_path / "slices"
    (cache,) = cache_files(d, "flat")
    raw = bytearray(cache.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # one flipped bit inside a vector
    cache.write_bytes(bytes(raw))
    with open_store(str(tmp_path)) as s:
        assert s.search(vecs[:3], top_k=5) == before  # rebuilt from the database
    assert "is corrupt (checksum" in caplog.text and "store itself is intact" in caplog.text


def test_faiss_corrupt_database_is_one_error(tmp_path):
    with open_store(str(tmp_path)) as s:
        s.upsert(make_slices("a", 3), unit(np.random.default_rng(9), 3), ENC)
    db = tmp_path / "slices" / "store.sqlite"
    db.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="corrupt FAISS store database .*backup"):
        open_store(str(tmp_path))
    with pytest.raises(StoreError, match="collection name"):
        open_store(str(tmp_path), collection="../x")


def test_faiss_legacy_store_is_imported(tmp_path):
    """A format-1 directory (index.faiss + payloads.json + meta.json) opens with its points."""
    import faiss

    rng = np.random.default_rng(10)
    vecs = unit(rng, 4)
    slices = make_slices("old", 4, {1: ("goal",)})
    d = tmp_path / "slices"
    d.mkdir()
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    ids = np.array([faiss_id(point_id(ENC, s.video_id, s.index)) for s in slices])
    index.add_with_ids(vecs, ids)
    faiss.write_index(index, str(d / "index.faiss"))
    (d / "payloads.json").write_text(
        json.dumps({str(i): s.model_dump(mode="json") for i, s in zip(ids, slices, strict=True)})
    )
    (d / "meta.json").write_text(
        json.dumps({"encoder_spec": ENC, "dim": DIM, "collection": "slices", "version": 1})
    )
    with open_store(str(tmp_path), create=False) as s:
        assert s.count() == 4 and s.encoder_spec == ENC
        (hits,) = s.search(vecs[1], top_k=1, tags=["goal"])
        assert key(hits[0]) == ("old", 1)


def test_qdrant_metadata_persists(tmp_path):
    uri = f"qdrant:{tmp_path / 'qd'}"
    with open_store(uri) as s:
        s.upsert(make_slices("a", 4), unit(np.random.default_rng(10), 4), ENC)
        meta = s.client.get_collection("slices").config.metadata
        assert meta == {"encoder_spec": ENC, "dim": DIM}
    with open_store(uri) as s:
        assert s.encoder_spec == ENC and s.dim == DIM and s.count() == 4
        with pytest.raises(StoreError, match="other"):
            s.upsert(make_slices("c", 1), np.ones((1, DIM), np.float32), "other")


def test_qdrant_rejects_foreign_collection():
    from qdrant_client import QdrantClient, models

    client = QdrantClient(location=":memory:")
    client.create_collection(
        "slices", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
    )
    with pytest.raises(StoreError, match="cosine"):
        QdrantStore(client)
    client.close()


def test_congruence_faiss_qdrant(tmp_path):
    rng = np.random.default_rng(11)
    vecs = unit(rng, 200)
    slices = [s for v in ("v0", "v1", "v2", "v3") for s in make_slices(v, 50)]
    queries = unit(rng, 20)
    with open_store(str(tmp_path)) as f, open_store("qdrant::memory:") as q:
        assert f.upsert(slices, vecs, ENC) == q.upsert(slices, vecs, ENC) == 200
        for video in (None, "v2"):
            rf = f.search(queries, top_k=10, video_id=video)
            rq = q.search(queries, top_k=10, video_id=video)
            assert len(rf) == len(rq) == 20
            for hf, hq in zip(rf, rq, strict=True):
                assert [key(h) for h in hf] == [key(h) for h in hq]
                assert len(hf) == 10
                np.testing.assert_allclose(
                    [h.score_raw for h in hf], [h.score_raw for h in hq], atol=1e-5
                )
                assert [h.slice for h in hf] == [h.slice for h in hq]
        sf, vf = f.get_video("v1")
        sq, vq = q.get_video("v1")
        assert sf == sq
        np.testing.assert_allclose(vf, vq, atol=1e-6)
        assert f.video_ids() == q.video_ids() == ["v0", "v1", "v2", "v3"]


# -- FAISS: approximate search above a size threshold ------------------------------------------

ADIM = 32
N_VIDEOS, PER_VIDEO = 20, 100  # 2000 points, four times the threshold below
THRESHOLD = 500


def clustered(rng: np.random.Generator, n: int, n_clusters: int = 40) -> np.ndarray:
    """``n`` unit vectors in gaussian clusters around random unit centres (ADIM-d)."""
    centres = unit(rng, n_clusters, ADIM)
    pts = centres[rng.integers(0, n_clusters, n)] + 0.12 * rng.standard_normal((n, ADIM))
    return (pts / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)


def near_centres(rng: np.random.Generator, vecs: np.ndarray, n: int) -> np.ndarray:
    """Queries close to stored points, so each has a dense neighbourhood like a real query."""
    q = vecs[rng.integers(0, len(vecs), n)] + 0.05 * rng.standard_normal((n, ADIM))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def library_slices() -> list[Slice]:
    """N_VIDEOS videos of PER_VIDEO slices; every other slice tagged 'even', every 10th 'ten'."""
    tags = {i: ("even",) + (("ten",) if i % 10 == 0 else ()) for i in range(0, PER_VIDEO, 2)}
    return [s for v in range(N_VIDEOS) for s in make_slices(f"v{v:02d}", PER_VIDEO, tags)]


def row(hit: SearchHit) -> int:
    """Position of a hit's vector in the arrays built by ``library_slices`` order."""
    return int(hit.slice.video_id[1:]) * PER_VIDEO + hit.slice.index


def exact_top(vecs: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None):
    """Brute-force top-k rows per query, optionally among the rows where ``mask`` is true."""
    sims = q @ vecs.T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    return np.argsort(-sims, axis=1)[:, :k]


def recall(results: list[list[SearchHit]], truth: np.ndarray) -> float:
    pairs = zip(results, truth, strict=True)
    return float(np.mean([len({row(h) for h in hits} & set(t)) / len(t) for hits, t in pairs]))


@pytest.fixture
def approx_store(tmp_path):
    """A FAISS store of 2000 clustered points with the approximate threshold at 500."""
    rng = np.random.default_rng(20)
    vecs = clustered(rng, N_VIDEOS * PER_VIDEO)
    store = FaissStore(tmp_path, approx_threshold=THRESHOLD)
    store.upsert(library_slices(), vecs, ENC)
    yield store, vecs, near_centres(rng, vecs, 50)
    store.close()


def spy(monkeypatch, store: FaissStore, method: str) -> list[int]:
    """Count calls of one of the store's search paths (queries per call)."""
    calls: list[int] = []
    real = getattr(store, method)

    def wrapped(q, *args):
        calls.append(len(q))
        return real(q, *args)

    monkeypatch.setattr(store, method, wrapped)
    return calls


def test_approx_recall_vs_exact(approx_store, monkeypatch):
    store, vecs, q = approx_store
    assert store.approx_spec is None  # nothing built until a search needs it
    exact_calls = spy(monkeypatch, store, "_search_exact")
    res = store.search(q, top_k=10)
    assert exact_calls == [] and store.approx_spec.startswith("IVF50,Flat nprobe=16")
    assert all(len(hits) == 10 for hits in res)
    assert recall(res, exact_top(vecs, q, 10)) >= 0.9
    store.approx_nprobe = 4  # 8 % of the lists: still near-exact on clustered data
    assert recall(store.search(q, top_k=10), exact_top(vecs, q, 10)) >= 0.9
    store.approx_nprobe = None
    for qi, hits in zip(q, res, strict=True):
        scores = [h.score_raw for h in hits]
        assert scores == sorted(scores, reverse=True)
        # IVF-Flat ranks by the true inner product: scores are exact cosines.
        np.testing.assert_allclose(scores, vecs[[row(h) for h in hits]] @ qi, atol=1e-5)
    # Same hit format as the exact path: an exact store over the same points agrees on the top.
    exact = FaissStore(store.path.parent / "exact", approx_threshold=10**9)
    exact.upsert(library_slices(), vecs, ENC)
    ref = exact.search(q, top_k=10)
    assert sum(a[0] == b[0] for a, b in zip(res, ref, strict=True)) >= 45
    exact.close()


def test_approx_filters(approx_store, monkeypatch):
    store, vecs, q = approx_store
    sl = library_slices()
    even = np.array(["even" in s.tags for s in sl])
    ten = np.array(["ten" in s.tags for s in sl])
    in_v03 = np.array([s.video_id == "v03" for s in sl])
    exact_calls = spy(monkeypatch, store, "_search_exact")
    # 1000, 200 and 100 passing points: the IVF ranking, post-filtered (depth 2*k*n/m <= 1024).
    for kw, mask in (
        ({"tags": ["even"]}, even),
        ({"tags": ("ten", "even")}, ten),
        ({"video_id": "v03"}, in_v03),
    ):
        assert store.search_path(10, **kw) == "approx-postfilter"
        res = store.search(q, top_k=10, **kw)
        assert all(len(h) == 10 and all(mask[row(x)] for x in h) for h in res)
        assert recall(res, exact_top(vecs, q, 10, mask)) >= 0.9
    assert exact_calls == []
    # 10 passing points: too selective for a ranking, exact on them, identical to brute force.
    kw = {"video_id": "v03", "tags": ["ten"]}
    assert store.search_path(10, **kw) == "exact-subset"
    res = store.search(q, top_k=10, **kw)
    assert [[row(h) for h in hits] for hits in res] == exact_top(vecs, q, 10, in_v03 & ten).tolist()
    assert exact_calls == [50]
    assert store.search(q[0], tags=["nope"]) == [[]] and store.search_path(tags=["nope"]) == "empty"


def test_search_path(tmp_path):
    with FaissStore(tmp_path, approx_threshold=10) as s:
        assert s.search_path() == "empty"
        s.upsert(make_slices("a", 10, {0: ("x",)}), unit(np.random.default_rng(26), 10), ENC)
        assert (s.search_path(), s.search_path(video_id="a")) == ("exact", "exact-subset")
        s.upsert(make_slices("b", 10), unit(np.random.default_rng(27), 10), ENC)
        assert s.search_path(video_id="b") == "approx-postfilter"
        assert s.search_path() == "approx" and s.approx_spec is None  # not built by asking


def test_approx_filter_far_from_the_query_falls_back_to_exact(tmp_path, monkeypatch):
    rng = np.random.default_rng(25)
    vecs = clustered(rng, 2000)
    q = near_centres(rng, vecs, 1)
    far = np.argsort(vecs @ q[0])[:600]  # > threshold, and all far from the query
    far_rows = set(far.tolist())
    sl = [
        s.model_copy(update={"tags": ("far",)}) if r in far_rows else s
        for r, s in enumerate(library_slices())
    ]
    with FaissStore(tmp_path, approx_threshold=THRESHOLD) as store:
        store.upsert(sl, vecs, ENC)
        exact_calls = spy(monkeypatch, store, "_search_exact")
        approx_calls = spy(monkeypatch, store, "_search_approx")
        (hits,) = store.search(q, top_k=10, tags=["far"])
        assert approx_calls == [1] and exact_calls == [1]
        mask = np.isin(np.arange(2000), far)
        assert [row(h) for h in hits] == exact_top(vecs, q, 10, mask)[0].tolist()


def test_approx_too_few_hits_rerun_exactly(approx_store, monkeypatch):
    store, vecs, q = approx_store
    store.approx_nprobe = 1  # one list of ~40 points cannot give 300 hits
    exact_calls = spy(monkeypatch, store, "_search_exact")
    res = store.search(q[:5], top_k=300)
    assert exact_calls == [5]
    assert [[row(h) for h in hits] for hits in res] == exact_top(vecs, q[:5], 300).tolist()


def test_approx_index_persisted(approx_store, monkeypatch, caplog):
    store, _, q = approx_store
    before = store.search(q, top_k=10)
    spec = store.approx_spec
    d = store.path
    (ivf,) = cache_files(d, "ivf")
    assert f"-g{store.generation}-t2000-" in ivf.name
    store.close()

    def no_build(self):
        raise AssertionError("the saved approximate index should have been loaded")

    monkeypatch.setattr(FaissStore, "_build_approx", no_build)
    with FaissStore(d.parent, approx_threshold=THRESHOLD) as s:
        assert s.search(q, top_k=10) == before and s.approx_spec == spec
    monkeypatch.undo()
    # A cache whose bytes fail the checksum is reported, skipped and rebuilt.
    raw = bytearray(ivf.read_bytes())
    raw[-100] ^= 1
    ivf.write_bytes(bytes(raw))
    with FaissStore(d.parent, approx_threshold=THRESHOLD) as s:
        assert s.search(q, top_k=10) == before
    assert "is corrupt (checksum" in caplog.text


def test_approx_delete_and_upsert_patch_the_index(approx_store, monkeypatch):
    store, vecs, _ = approx_store
    planted = vecs[3 * PER_VIDEO : 4 * PER_VIDEO : 10]  # ten vectors of video v03
    res = store.search(planted, top_k=10)
    assert all(h[0].slice.video_id == "v03" for h in res)
    built = store._approx
    assert store.delete_video("v03") == PER_VIDEO
    assert store._approx is built  # patched in place, not dropped
    res = store.search(planted, top_k=10)
    assert all(len(h) == 10 and all(x.slice.video_id != "v03" for x in h) for h in res)
    # Re-upserting moves a point: the approximate index finds it at its new place only.
    new = unit(np.random.default_rng(21), 1, ADIM)
    store.upsert(make_slices("v05", 1, start=7), new, ENC)
    (hits,) = store.search(new, top_k=1)
    assert key(hits[0]) == ("v05", 7) and hits[0].score_raw == pytest.approx(1.0, abs=1e-5)
    (hits,) = store.search(vecs[5 * PER_VIDEO + 7], top_k=10)
    assert ("v05", 7) not in [key(h) for h in hits]
    # Re-indexing v06 with half its slices drops the other half from the approximate index.
    v06 = vecs[6 * PER_VIDEO : 7 * PER_VIDEO]
    store.replace_video("v06", make_slices("v06", PER_VIDEO // 2), v06[: PER_VIDEO // 2], ENC)
    assert store._approx is built and store.count("v06") == PER_VIDEO // 2
    res = store.search(v06[PER_VIDEO // 2 :: 10], top_k=10)
    dropped = {("v06", i) for i in range(PER_VIDEO // 2, PER_VIDEO)}
    assert not {key(x) for h in res for x in h} & dropped
    store.replace_video("v06", make_slices("v06", PER_VIDEO), v06, ENC)
    d = store.path.parent
    store.close()
    # The patched index was saved with the data: reopening loads it, and a change made before
    # any search (the index not yet in memory) is applied to the saved copy, not rebuilt.
    monkeypatch.setattr(FaissStore, "_build_approx", lambda self: pytest.fail("rebuilt"))
    with FaissStore(d, approx_threshold=THRESHOLD) as s:
        s.upsert(make_slices("v03", PER_VIDEO), vecs[3 * PER_VIDEO : 4 * PER_VIDEO], ENC)
        assert s.count() == 2000
        res = s.search(planted, top_k=10)
        assert all(h[0].slice.video_id == "v03" for h in res)
    with FaissStore(d, approx_threshold=THRESHOLD) as s:
        assert s.search(planted, top_k=10) == res and s.count() == 2000


def test_approx_dropped_below_threshold_and_retrained_when_outgrown(tmp_path):
    rng = np.random.default_rng(22)
    vecs = clustered(rng, 2000)
    with FaissStore(tmp_path, approx_threshold=150) as s:
        s.upsert(make_slices("a", 200), vecs[:200], ENC)
        s.search(vecs[0])
        assert s.approx_spec.startswith("IVF5,") and cache_files(s.path, "ivf")
        s.delete_video("a")
        s.upsert(make_slices("a", 100), vecs[:100], ENC)
        # 100 points <= 150: exact again.
        assert s.approx_spec is None
        s.upsert(make_slices("b", 200), vecs[200:400], ENC)
        s.search(vecs[0])
        # The IVF cache trained at 200 points still fits 300: loaded and patched, not retrained.
        assert s.approx_spec.startswith("IVF5,")
        # Growing past 4x the training size drops the index; the next search retrains it.
        s.upsert(make_slices("c", 1600), vecs[400:], ENC)
        assert s.approx_spec is None
        (hits,) = s.search(vecs[1999], top_k=1)
        assert key(hits[0]) == ("c", 1599) and s.approx_spec.startswith("IVF47,")  # 1900 points


def test_approx_threshold_settings(tmp_path, monkeypatch):
    from retrieval_hl.config import load_settings

    assert FaissStore(tmp_path / "a").approx_threshold == 50_000
    monkeypatch.setenv("RHL_FAISS_APPROX_THRESHOLD", "1000")
    opts = load_settings().store_options()
    assert open_store(str(tmp_path / "b"), **opts).approx_threshold == 1000
    assert open_store(str(tmp_path / "c"), approx_threshold=7).approx_threshold == 7
    # Qdrant has no such switch; the argument is accepted and ignored.
    open_store("qdrant::memory:", **opts).close()
    monkeypatch.setenv("RHL_FAISS_APPROX_THRESHOLD", "lots")
    with pytest.raises(ConfigError, match="faiss_approx_threshold"):
        load_settings()
    with pytest.raises(StoreError, match="approx_threshold must be an integer >= 0"):
        FaissStore(tmp_path / "e", approx_threshold=-1)
    with pytest.raises(StoreError, match="approx_nprobe"):
        FaissStore(tmp_path / "f", approx_threshold=10, approx_nprobe=0)


def test_approx_threshold_zero_still_answers_small_stores(tmp_path):
    rng = np.random.default_rng(23)
    vecs = unit(rng, 30, ADIM)
    with FaissStore(tmp_path, approx_threshold=0) as s:
        s.upsert(make_slices("a", 30), vecs, ENC)
        res = s.search(vecs[:3], top_k=30)
        assert s.approx_spec == "IVF1,Flat nprobe=1"
        assert [len(h) for h in res] == [30, 30, 30]
        assert [key(h[0]) for h in res] == [("a", 0), ("a", 1), ("a", 2)]


def test_search_leaves_queries_untouched(store):
    store.upsert(make_slices("a", 3), unit(np.random.default_rng(24), 3), ENC)
    q = np.full((2, DIM), 3.0, np.float32)
    store.search(q)
    assert (q == 3.0).all()


def test_qdrant_cluster_layout_from_env(monkeypatch):
    from indexer.stores.qdrant import qdrant_cluster_layout
    from retrieval_hl.config import load_settings

    monkeypatch.delenv("RHL_QDRANT_SHARDS", raising=False)
    monkeypatch.delenv("RHL_QDRANT_REPLICAS", raising=False)
    assert qdrant_cluster_layout() == {}
    monkeypatch.setenv("RHL_QDRANT_SHARDS", "3")
    monkeypatch.setenv("RHL_QDRANT_REPLICAS", "2")
    opts = load_settings().store_options()
    assert qdrant_cluster_layout(opts["shards"], opts["replicas"]) == {
        "shard_number": 3, "replication_factor": 2}
    with pytest.raises(StoreError, match="replication_factor must be a positive integer"):
        qdrant_cluster_layout(3, 0)
    monkeypatch.setenv("RHL_QDRANT_REPLICAS", "two")
    with pytest.raises(ConfigError, match="qdrant_replicas"):
        load_settings()
