"""The Ray back-end: batch and index on Ray match the local back-end; a worker killed mid-task is
retried; the time limit and resume hold; without ray, --ray is a one-line error.

Ray runs on this machine with 2 CPUs and no dashboard, started once for the module (its start
takes most of these tests' time). A Qdrant server cannot run here: the worker-side writer is run
against Qdrant's local mode, through the same client calls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.stores import open_store
from retrieval_hl.cli.main import cli
from retrieval_hl.competition.batch import run_batch
from retrieval_hl.competition.format import VideoPrediction, load_predictions
from retrieval_hl.config import Settings
from retrieval_hl.pipeline import IndexWork
from tests.conftest import REPO, ffmpeg

TINY = "open_clip:rhl-tiny-vit:random"


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'retrieval-hl[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Three clips: an event (still 12 s, a box moving and noise playing at 5-8 s), a 4 s test
    pattern, 4 s of noise.
    """
    d = tmp_path_factory.mktemp("ray_videos")
    ffmpeg(
        "-f", "lavfi", "-i",
        "color=c=0x202020:s=320x180:r=10:d=12[bg];color=c=white:s=30x30:r=10:d=12[box];"
        "[bg][box]overlay=x='40+(t-5)*70':y=75:enable='between(t,5,8)'",
        "-f", "lavfi", "-i",
        "anoisesrc=d=12:c=white:a=0.5:r=44100,volume=volume=0:enable='not(between(t,5,8))'",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(d / "box.mp4"),
    )  # fmt: skip
    sources = {
        "pattern": "testsrc2=size=160x120:rate=10:duration=4",
        "noise": "nullsrc=s=160x120:r=10:d=4,geq=random(1)*255:128:128",
    }
    for name, src in sources.items():
        ffmpeg("-f", "lavfi", "-i", src, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10",
               str(d / f"{name}.mp4"))
    return d


def run(*args: str, code: int = 0):
    res = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    assert res.exit_code == code, res.output + res.stderr
    return res


def test_batch_on_ray_matches_local(ray_session, videos, tmp_path):
    index = tmp_path / "index.json"
    index.write_text(json.dumps([{"video_id": v, "targetRatioWH": r} for v, r in
                                 (("box", [9, 16]), ("pattern", [16, 9]), ("noise", [9, 16]))]))
    common = ["--videos", str(videos), "--encoder", TINY, "--semantic", "on"]
    # The local back-end as a user runs it: its own process, no Ray in it.
    subprocess.run([sys.executable, "-m", "retrieval_hl", "-q", "batch", str(index), *common,
                    "--out", str(tmp_path / "local.jsonl"), "--store", str(tmp_path / "store")],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    res = run("batch", str(index), *common, "--out", str(tmp_path / "ray.jsonl"),
              "--ray", "--workers", "2", "--json")
    assert json.loads(res.stdout)["written"] == 3
    local = (tmp_path / "local.jsonl").read_text()
    assert (tmp_path / "ray.jsonl").read_text() == local
    assert [json.loads(x)["video_id"] for x in local.splitlines()] == ["box", "pattern", "noise"]
    assert any(json.loads(x)["predictions"] for x in local.splitlines())


def test_local_isolation_spawns_where_ray_runs(ray_session):
    """Forking a process with Ray's threads in it can hang the child: spawn there instead."""
    from retrieval_hl.executors.local import _start_method, run_isolated

    assert _start_method() == "spawn"
    assert run_isolated(str.upper, "abc", 120.0) == "ABC"


def _flaky_predict(path, video_id, ratio_wh):
    """'kill' dies (SIGKILL) on its first attempt; 'slow' outlasts any limit; others answer."""
    marker = Path(path).with_suffix(".started")
    first = not marker.exists()
    marker.write_text(str(os.getpid()))
    if video_id == "kill" and first:
        os.kill(os.getpid(), signal.SIGKILL)
    if video_id == "slow":
        time.sleep(600)
    return VideoPrediction.from_json_line(json.dumps(
        {"video_id": video_id, "targetRatioWH": list(ratio_wh),
         "predictions": [{"frame": 0, "bboxes": [0, 0, 9]}]}))


@pytest.mark.logs_errors  # the video over its time limit is logged as an error
def test_ray_retries_a_killed_worker_stops_a_slow_one_and_resumes(ray_session, tmp_path):
    from retrieval_hl.executors.ray_actors import RayExecutor

    vids = tmp_path / "v"
    vids.mkdir()
    ids = ("done", "kill", "slow", "b")
    for name in ids:
        (vids / f"{name}.mp4").write_bytes(b"x")
    (tmp_path / "i.json").write_text(json.dumps(
        [{"video_id": v, "targetRatioWH": [9, 16]} for v in ids]))
    out = tmp_path / "p.jsonl"
    kept = VideoPrediction.from_json_line(json.dumps(
        {"video_id": "done", "targetRatioWH": [9, 16], "predictions": []})).to_json_line()
    out.write_text(kept + "\n")
    ticks = []
    res = run_batch(tmp_path / "i.json", vids, out, _flaky_predict, resume=True,
                    # The killed item's limit includes its actor's restart (a fresh Python
                    # importing the package): 15 s was too short on a loaded machine.
                    time_limit_s=40.0, progress=ticks.append,
                    executor=RayExecutor(workers=2, max_retries=1))
    assert res.skipped == 1 and res.written == 3 and len(ticks) == 4
    assert [f[0] for f in res.failed] == ["slow"] and "time limit" in res.failed[0][1]
    preds = load_predictions(out)
    assert list(preds) == list(ids)
    assert preds["done"].rows == () and preds["slow"].rows == ()
    assert len(preds["kill"].rows) == 1 and len(preds["b"].rows) == 1  # killed, then retried
    assert not (vids / "done.started").exists()  # resumed: not predicted again
    # The retry ran in a restarted actor: another process than the one that was killed.
    assert (vids / "kill.started").read_text() != ""


def test_index_on_ray_matches_local(ray_session, videos, tmp_path):
    local, remote = f"faiss:{tmp_path / 'local'}", f"faiss:{tmp_path / 'ray'}"
    run("index", str(videos / "box.mp4"), str(videos / "noise.mp4"), "--encoder", TINY,
        "--store", local)
    res = run("index", str(videos), "--encoder", TINY, "--store", remote, "--ray", "--json")
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [Path(r["path"]).stem for r in rows] == ["box", "noise", "pattern"]
    a, b = open_store(local), open_store(remote)
    try:
        assert a.video_ids() == [v for v in b.video_ids() if not v.startswith("pattern")]
        for vid in a.video_ids():
            (sa, va), (sb, vb) = a.get_video(vid), b.get_video(vid)
            assert sa == sb and np.allclose(va, vb, atol=1e-5)
    finally:
        a.close()
        b.close()
    # Run again: every video is already in the store, nothing is sent to the workers.
    res = run("index", str(videos), "--encoder", TINY, "--store", remote, "--ray")
    assert res.stdout.count("(already indexed)") == 3


def test_worker_side_writer_is_idempotent_on_qdrant_local_mode(videos, tmp_path):
    """What a worker does with a Qdrant server store, run against local mode (no server here):
    a retried video writes the same points again, so the count does not change.
    """
    s = Settings(encoder=TINY, store=f"qdrant:{tmp_path / 'q'}")
    work = IndexWork(s, write=True, reindex=True)
    try:
        first = work(str(videos / "box.mp4"))
        n = work.store.count()
        again = work(str(videos / "box.mp4"))
        assert n == len(first.slices) > 0 and work.store.count() == n
        assert again.slices == first.slices and len(first.vectors) == 0  # written, not returned
    finally:
        work.store.close()


def _slices(video_id: str, n: int):
    from indexer.models import Slice

    return [Slice(video_id=video_id, index=i, start_frame=10 * i, end_frame=10 * i + 10,
                  start_s=float(i), end_s=float(i + 1)) for i in range(n)]


def test_two_workers_creating_one_qdrant_collection_both_land(monkeypatch):
    """Workers on many machines open the same new collection: the one that loses the race to
    create it adopts it (and its encoder check) instead of failing its video. Local mode, same
    client calls as a server.
    """
    from qdrant_client import QdrantClient

    from indexer.stores.qdrant import QdrantStore
    from rhl_common.errors import StoreError

    client = QdrantClient(location=":memory:")
    a, b, c = (QdrantStore(client, "race") for _ in range(3))
    real_load = QdrantStore._load
    looked = set()

    def load_late(self):  # b and c looked before a created the collection
        if id(self) in looked or self is a:
            return real_load(self)
        looked.add(id(self))

    monkeypatch.setattr(QdrantStore, "_load", load_late)
    rng = np.random.default_rng(0)
    assert a.upsert(_slices("va", 300), rng.normal(size=(300, 8)), "enc") == 300  # 2 batches
    assert b.upsert(_slices("vb", 5), rng.normal(size=(5, 8)), "enc") == 5
    assert b.upsert(_slices("vb", 5), rng.normal(size=(5, 8)), "enc") == 0  # a retry: same ids
    assert a.count() == 305 and a.video_ids() == ["va", "vb"]
    with pytest.raises(StoreError, match="refusing vectors from 'other'"):
        c.upsert(_slices("vc", 2), rng.normal(size=(2, 8)), "other")


def test_ray_flag_without_ray_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    (tmp_path / "i.json").write_text(json.dumps([{"video_id": "a", "targetRatioWH": [9, 16]}]))
    res = run("batch", str(tmp_path / "i.json"), "--videos", str(tmp_path), "--out",
              str(tmp_path / "p.jsonl"), "--ray", code=1)
    assert res.stderr.strip() == ("error: --ray needs the ray package, which is not installed: "
                                  "pip install 'retrieval-hl[ray]'")
    res = run("index", "--ray", str(tmp_path), code=2)
    assert "put the videos before --ray" in res.stderr


def test_library_add_on_ray_matches_local(ray_session, videos, tmp_path):
    from library.catalog import Library

    common = ["--encoder", TINY, "--json"]
    run("library", "add", str(videos), "--library", str(tmp_path / "local"), *common)
    res = run("library", "add", str(videos), "--library", str(tmp_path / "ray"), *common,
              "--ray", "--workers", "2")
    # one JSON report per file (Ray may add a line of its own when it retries a task)
    assert sum(line.startswith("{") for line in res.stdout.splitlines()) == 3
    with Library.open(tmp_path / "local") as a, Library.open(tmp_path / "ray") as b:
        ids = [c.clip_id for c in a.list()]
        assert sorted(ids) == sorted(c.clip_id for c in b.list()) and len(ids) == 3
        assert np.allclose(a.clip_vectors(ids), b.clip_vectors(ids), atol=1e-5)
    # Again: every file is in the library already; nothing is sent to the workers.
    res = run("library", "add", str(videos), "--library", str(tmp_path / "ray"), "--ray")
    assert "added 0 clip(s); the library has 3" in res.stdout
