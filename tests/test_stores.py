from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.errors import StoreError
from indexer.models import Slice
from indexer.stores import (
    STORES,
    FaissStore,
    QdrantStore,
    SearchHit,
    VectorStore,
    faiss_id,
    open_store,
    point_id,
)

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


def test_faiss_persistence(tmp_path):
    rng = np.random.default_rng(8)
    va, vb, q = unit(rng, 30), unit(rng, 20), unit(rng, 5)
    with open_store(str(tmp_path)) as s:
        s.upsert(make_slices("a", 30, {5: ("goal",)}), va, ENC)
        s.upsert(make_slices("b", 20), vb, ENC)
        s.delete_video("b")
        s.upsert(make_slices("b", 20), vb, ENC)
        before = s.search(q, top_k=7)
        before_f = s.search(q, top_k=7, video_id="a", tags=["goal"])
    files = sorted(p.name for p in (tmp_path / "slices").iterdir())
    assert files == ["index.faiss", "meta.json", "payloads.json"]
    meta = json.loads((tmp_path / "slices" / "meta.json").read_text())
    assert meta == {"encoder_spec": ENC, "dim": DIM, "collection": "slices", "version": 1}
    with open_store(f"faiss:{tmp_path}") as s:
        assert s.encoder_spec == ENC and s.dim == DIM and s.count() == 50
        assert s.video_ids() == ["a", "b"]
        assert s.search(q, top_k=7) == before
        assert s.search(q, top_k=7, video_id="a", tags=["goal"]) == before_f
        assert s.upsert(make_slices("a", 30), va, ENC) == 0
        with pytest.raises(StoreError, match="other"):
            s.upsert(make_slices("c", 1), va[:1], "other")
    # Collections are separate subfolders.
    with open_store(str(tmp_path), collection="clips") as s:
        assert s.count() == 0 and s.encoder_spec is None


def test_faiss_corrupt_dirs(tmp_path):
    with open_store(str(tmp_path)) as s:
        s.upsert(make_slices("a", 3), unit(np.random.default_rng(9), 3), ENC)
    d = tmp_path / "slices"
    payloads = (d / "payloads.json").read_text()
    (d / "payloads.json").write_text("{}")
    with pytest.raises(StoreError, match="disagree"):
        open_store(str(tmp_path))
    (d / "payloads.json").write_text("{not json")
    with pytest.raises(StoreError, match="payload"):
        open_store(str(tmp_path))
    (d / "payloads.json").write_text(payloads)
    (d / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="corrupt FAISS index"):
        open_store(str(tmp_path))
    (d / "meta.json").write_text("[]")
    with pytest.raises(StoreError, match="meta"):
        open_store(str(tmp_path))
    (d / "meta.json").unlink()
    with pytest.raises(StoreError, match="meta.json missing"):
        open_store(str(tmp_path))
    with pytest.raises(StoreError, match="collection name"):
        open_store(str(tmp_path), collection="../x")


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
