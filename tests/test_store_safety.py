"""Nothing lost in a FAISS store: real processes writing at once, kills and write errors at chosen
points of the commit path (``rhl_common.faults``), readers that never delete, a randomised soak.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from indexer.stores import open_store
from indexer.stores.faiss import FaissStore
from rhl_common import faults
from rhl_common.errors import StoreError
from tests.conftest import REPO
from tests.test_stores import ENC, make_slices, unit

# Run in a child: install a hook that SIGKILLs the process at the point named by KILL_AT.
PRELUDE = """
import os, signal, sys
import numpy as np
from rhl_common import faults
def _hook(point):
    if point == os.environ.get("KILL_AT"):
        os.kill(os.getpid(), signal.SIGKILL)
faults.hook = _hook
from indexer.models import Slice
ENC = "open_clip:rhl-tiny-vit:random"
def make_slices(video, n):
    return [Slice(video_id=video, index=i, start_frame=25 * i, end_frame=25 * (i + 1),
                  start_s=float(i), end_s=float(i + 1)) for i in range(n)]
def unit(rng, n, dim=16):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
"""

WRITE_VIDEO = """
from indexer.stores import open_store
root, video, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(abs(hash(video)) % 2**32)
with open_store(root) as s:
    s.upsert(make_slices(video, n), unit(rng, n), ENC)
print("committed", video, flush=True)
"""


def child(body: str, *args: str, kill_at: str | None = None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "KILL_AT": kill_at or ""}
    cmd = [sys.executable, "-c", PRELUDE + textwrap.dedent(body), *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def restore_hook():
    yield
    faults.hook = None


def seeded(tmp_path, videos=("a", "b"), n=5) -> str:
    root = str(tmp_path / "idx")
    rng = np.random.default_rng(0)
    with open_store(root) as s:
        for v in videos:
            s.upsert(make_slices(v, n), unit(rng, n), ENC)
    return root


def test_two_writer_processes_both_land(tmp_path):
    root = seeded(tmp_path, videos=())
    procs = [child(WRITE_VIDEO, root, f"v{i}", "40", wait=False) for i in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    with open_store(root) as s:
        assert s.video_ids() == ["v0", "v1", "v2", "v3"] and s.count() == 160


@pytest.mark.parametrize(
    "point", ["faiss.before-commit", "faiss.committed", "faiss.flat-cache-written"]
)
def test_kill_in_the_commit_path_keeps_the_last_commit(tmp_path, point):
    root = seeded(tmp_path)
    # 3000 points: enough for the writer to write a cache after its commit.
    res = child(WRITE_VIDEO, root, "c", "3000", kill_at=point)
    assert res.returncode == -signal.SIGKILL
    with open_store(root) as s:
        expected = ["a", "b"] if point == "faiss.before-commit" else ["a", "b", "c"]
        assert s.video_ids() == expected
        (hits,) = s.search(unit(np.random.default_rng(1), 1), top_k=3)
        assert len(hits) == 3
        s.upsert(make_slices("d", 2), unit(np.random.default_rng(2), 2), ENC)
    with open_store(root) as s:
        assert "d" in s.video_ids()


REINDEX_VIDEO = """
from indexer.models import VideoInfo
from indexer.pipeline import IndexedVideo, store_video
from indexer.stores import open_store
uri, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
info = VideoInfo(path="a.mp4", video_id="a", width_px=64, height_px=48, fps=25.0,
                 n_frames=25 * n, duration_s=float(n))
video = IndexedVideo(info, tuple(make_slices("a", n)), unit(np.random.default_rng(seed), n), ENC)
with open_store(uri) as s:
    store_video(s, video)
print("committed a", flush=True)
"""


def reindex(uri: str, n: int, seed: int, kill_at: str | None = None):
    """Index video 'a' again (``n`` slices, vectors from ``seed``) in a child process."""
    return child(REINDEX_VIDEO, uri, str(n), str(seed), kill_at=kill_at)


@pytest.mark.parametrize("point", ["faiss.replace-deleted", "faiss.before-commit"])
def test_kill_during_a_reindex_keeps_the_old_video(tmp_path, point):
    """Re-indexing replaces a video's slices in one transaction: a kill midway keeps all of the
    old ones, a rerun lands all of the new ones.
    """
    uri = str(tmp_path / "idx")
    assert reindex(uri, 12, seed=1).returncode == 0
    with open_store(uri) as s:
        s.upsert(make_slices("b", 5), unit(np.random.default_rng(0), 5), ENC)
        old_slices, old_vecs = s.get_video("a")
    assert len(old_slices) == 12
    res = reindex(uri, 7, seed=2, kill_at=point)  # re-sliced: 7 slices, other vectors
    assert res.returncode == -signal.SIGKILL, res.stderr
    with open_store(uri, create=False) as s:
        slices, vecs = s.get_video("a")
        assert slices == old_slices
        np.testing.assert_array_equal(vecs, old_vecs)
        assert s.count("b") == 5
        (hits,) = s.search(old_vecs[9], top_k=1)  # the cache agrees with the database
        assert (hits[0].slice.video_id, hits[0].slice.index) == ("a", 9)
    assert reindex(uri, 7, seed=2).returncode == 0
    with open_store(uri, create=False) as s:
        slices, vecs = s.get_video("a")
        assert [x.index for x in slices] == list(range(7))
        np.testing.assert_allclose(vecs, unit(np.random.default_rng(2), 7), atol=1e-6)
        assert s.count() == 7 + 5
        (hits,) = s.search(old_vecs[9], top_k=20)
        assert ("a", 9) not in {(h.slice.video_id, h.slice.index) for h in hits}


def test_kill_during_a_qdrant_reindex_leaves_old_and_new_never_nothing(tmp_path):
    """Qdrant has no transaction: a kill between upserting the new points and deleting the
    stale ones leaves both; the rerun removes the stale ones.
    """
    uri = f"qdrant:{tmp_path / 'qd'}"
    assert reindex(uri, 12, seed=1).returncode == 0
    res = reindex(uri, 7, seed=2, kill_at="qdrant.replace-upserted")
    assert res.returncode == -signal.SIGKILL, res.stderr
    with open_store(uri, create=False) as s:
        slices, vecs = s.get_video("a")
        assert [x.index for x in slices] == list(range(12))  # 0..6 new, 7..11 old
        np.testing.assert_allclose(vecs[:7], unit(np.random.default_rng(2), 7), atol=1e-6)
        np.testing.assert_allclose(vecs[7:], unit(np.random.default_rng(1), 12)[7:], atol=1e-6)
    assert reindex(uri, 7, seed=2).returncode == 0
    with open_store(uri, create=False) as s:
        assert [x.index for x in s.get_video("a")[0]] == list(range(7))


def test_write_error_leaves_the_last_commit(tmp_path, restore_hook):
    root = seeded(tmp_path)

    def disk_full(point):
        if point == "faiss.before-commit":
            raise OSError(errno.ENOSPC, "No space left on device")

    faults.hook = disk_full
    with open_store(root) as s:
        with pytest.raises(StoreError, match="No space left.*keeps its last commit"):
            s.upsert(make_slices("c", 3), unit(np.random.default_rng(3), 3), ENC)
        with pytest.raises(StoreError, match="No space left"):
            s.delete_video("a")
        faults.hook = None
        assert s.video_ids() == ["a", "b"] and s.count() == 10
    with open_store(root) as s:
        assert s.video_ids() == ["a", "b"] and s.count() == 10


def test_cache_write_error_costs_nothing(tmp_path, restore_hook, caplog):
    root = seeded(tmp_path)

    def disk_full(point):
        if point == "faiss.flat-cache-written":
            raise OSError(errno.ENOSPC, "No space left on device")

    faults.hook = disk_full
    with open_store(root) as s:
        s.upsert(make_slices("c", 3000), unit(np.random.default_rng(3), 3000), ENC)
    faults.hook = None
    assert "cannot save the FAISS caches" in caplog.text
    d = tmp_path / "idx" / "slices"
    assert not list(d.glob(".*.tmp"))  # the failed temp file is gone
    with open_store(root) as s:
        assert s.count() == 3010


def test_reader_deletes_nothing_and_sees_later_commits(tmp_path):
    root = seeded(tmp_path)
    d = tmp_path / "idx" / "slices"
    stray = d / ".flat-inflight.tmp"
    stray.write_bytes(b"a writer's temp file")
    files = {p.name for p in d.iterdir()}
    with open_store(root, create=False) as reader:
        assert reader.count() == 10
        with open_store(root) as writer:
            writer.upsert(make_slices("c", 3), unit(np.random.default_rng(4), 3), ENC)
            writer.delete_video("a")
        # The reader sees the commits without reopening.
        assert reader.video_ids() == ["b", "c"]
        (hits,) = reader.search(unit(np.random.default_rng(5), 1), top_k=20)
        assert {h.slice.video_id for h in hits} == {"b", "c"}
    assert files <= {p.name for p in d.iterdir()} and stray.exists()


def test_busy_writer_times_out_with_one_line(tmp_path):
    root = seeded(tmp_path)
    holder = FaissStore(root)
    holder._db.execute("BEGIN IMMEDIATE")  # a writer in the middle of a transaction
    try:
        with FaissStore(root, busy_timeout_s=0.2) as s:
            with pytest.raises(StoreError, match="is busy: another process"):
                s.upsert(make_slices("c", 1), unit(np.random.default_rng(6), 1), ENC)
    finally:
        holder._db.execute("ROLLBACK")
        holder.close()


SOAK_WORKER = """
import random
from indexer.stores import open_store
root, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
points = ["faiss.before-commit", "faiss.replace-deleted", "faiss.committed",
          "faiss.flat-cache-written"]
os.environ["KILL_AT"] = rnd.choice(points) if rnd.random() < 0.3 else ""
for k in range(3):
    n = rnd.choice([3, 40, 2100])
    with open_store(root) as s:
        if rnd.random() < 0.2 and s.video_ids():
            victim = rnd.choice(s.video_ids())
            print("deleting", victim, flush=True)
            s.delete_video(victim)
        # Index a new video, or index one again with another slicing (a re-index).
        again = rnd.random() < 0.3 and s.video_ids()
        video = rnd.choice(s.video_ids()) if again else f"s{seed}-{k}"
        vecs = unit(np.random.default_rng(seed * 10 + k), n)
        s.replace_video(video, make_slices(video, n), vecs, ENC)
        print("committed", video, flush=True)
        s.search(unit(np.random.default_rng(seed), 1), top_k=5)
"""


def test_soak_random_kills(tmp_path):
    """Short writer/reader processes killed at random points and times, for a few seconds."""
    root = seeded(tmp_path, videos=())
    rnd = random.Random(11)
    deadline = time.monotonic() + 8.0
    committed: set[str] = set()
    deleting: set[str] = set()
    seed = kills = died = 0
    while time.monotonic() < deadline:
        procs = []
        for _ in range(3):
            seed += 1
            procs.append(child(SOAK_WORKER, root, str(seed), wait=False))
        time.sleep(rnd.uniform(0.5, 3.0))
        for p in procs:
            if rnd.random() < 0.5 and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert "Traceback" not in err, err
            died += p.returncode == -signal.SIGKILL
            committed |= {ln.split()[1] for ln in out.splitlines() if ln.startswith("committed")}
            deleting |= {ln.split()[1] for ln in out.splitlines() if ln.startswith("deleting")}
    with open_store(root, create=False) as s:
        present = set(s.video_ids())
        for v in present:
            assert s.count(v) in (3, 40, 2100)
        (hits,) = s.search(unit(np.random.default_rng(0), 1), top_k=5)
        assert len(hits) == min(5, s.count())
    # Every commit a process reported is there (re-indexed ones whole, with one of the slice
    # counts), unless a process set out to delete it.
    assert committed - deleting <= present, committed - deleting - present
    assert committed
    print(f"soak: {seed} processes, {died} killed ({kills} at random times, the rest at commit "
          f"points), {len(committed)} commits reported, {len(present)} videos present, "
          f"{len(committed - deleting - present)} lost")
    assert seed >= 6 and kills >= 1


def test_two_rhl_index_processes_both_land(tmp_path):
    from tests.conftest import TINY, make_video

    store = tmp_path / "store"
    videos = [make_video(tmp_path / f"v{i}.mp4", seconds=2.0, size="64x48", fps=5,
                         source=("testsrc2", "smptebars")[i]) for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "retrieval_hl", "-q", "index", str(v), "--store", str(store),
             "--encoder", TINY],
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for v in videos
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with open_store(str(store), create=False) as s:
        assert len(s.video_ids()) == 2


def test_qdrant_local_refuses_a_second_process_cleanly(tmp_path):
    holder = child(
        """
        from indexer.stores import open_store
        s = open_store("qdrant:" + sys.argv[1])
        print("ready", flush=True)
        sys.stdin.readline()
        """,
        str(tmp_path / "qd"), wait=False,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="Qdrant open .* failed"):
            open_store(f"qdrant:{tmp_path / 'qd'}")
    finally:
        holder.kill()
        holder.communicate()
