"""Nothing lost in a library: concurrent ``rhl library add`` processes, kills inside a commit,
readers that never delete (not even with ``library.json`` gone).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from library.catalog import CATALOG_NAME, Library
from tests.conftest import REPO, TINY, make_video

ADD = """
import os, signal, sys
from rhl_common import faults
def _hook(point):
    if point == os.environ.get("KILL_AT"):
        os.kill(os.getpid(), signal.SIGKILL)
    if point == os.environ.get("PAUSE_AT"):  # hold the commit here until the test says go
        print("paused", flush=True)
        sys.stdin.readline()
faults.hook = _hook
from retrieval_hl.cli.main import main
sys.argv = ["rhl", "-q", "library", "add", *sys.argv[1:]]
main()
"""


def add_process(
    lib: Path, clip: Path, kill_at: str = "", pause_at: str = "", json_out: bool = False
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ADD), str(clip), "--library", str(lib),
         "--encoder", TINY, *(["--json"] if json_out else [])],
        env={**os.environ, "PYTHONPATH": str(REPO), "KILL_AT": kill_at, "PAUSE_AT": pause_at},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("clips")
    return [make_video(d / f"c{i}.mp4", seconds=2.0 + i, size="64x48", fps=5,
                       source=("testsrc2", "smptebars", "rgbtestsrc")[i]) for i in range(3)]


def test_two_adds_at_once_both_land(tmp_path, clips):
    lib = tmp_path / "lib"
    procs = [add_process(lib, c) for c in clips[:2]]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with Library.open(lib, create=False) as opened:
        listed = opened.list()
        assert sorted(Path(c.source_path).name for c in listed) == ["c0.mp4", "c1.mp4"]
        assert all(opened.store.count(c.clip_id) > 0 for c in listed)


@pytest.mark.parametrize(
    "point", ["library.media-copied", "library.vectors-upserted"]
)
def test_kill_inside_an_add_leaves_a_usable_library(tmp_path, clips, point):
    lib = tmp_path / "lib"
    with Library.open(lib, encoder=TINY) as opened:
        (first,) = opened.add_clip_file(clips[0])
    proc = add_process(lib, clips[1], kill_at=point)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    with Library.open(lib, create=False) as opened:  # a reader: sees the last catalog
        assert [c.clip_id for c in opened.list()] == [first.clip_id]
        assert opened.search("anything", top_k=5)[0].clip.clip_id == first.clip_id
    with Library.open(lib) as opened:  # the next writer clears what the killed one left
        (third,) = opened.add_clip_file(clips[2])
        assert opened.store.video_ids() == sorted([first.clip_id, third.clip_id])
        assert sorted(p.name for p in (lib / "media").iterdir()) == sorted(
            [f"{first.clip_id}.mp4", f"{third.clip_id}.mp4"]
        )
        assert not opened._pending


def test_reader_with_the_catalog_gone_deletes_nothing(tmp_path, clips, caplog):
    lib = tmp_path / "lib"
    with Library.open(lib, encoder=TINY) as opened:
        (clip,) = opened.add_clip_file(clips[0])
        reader = Library.open(lib, create=False)
        (other,) = opened.add_clip_file(clips[1])
    # A reader opened before the add sees its vectors but lists only what its catalog says.
    assert reader.store.count(other.clip_id) > 0 and len(reader.list()) == 1
    reader.close()
    (lib / CATALOG_NAME).rename(tmp_path / "backup.json")
    with Library.open(lib, create=False) as opened:
        assert opened.list() == []
        assert opened.store.count(clip.clip_id) > 0 and opened.store.count(other.clip_id) > 0
    assert "library.json lost or replaced? restore it from a backup" in caplog.text
    (tmp_path / "backup.json").rename(lib / CATALOG_NAME)
    with Library.open(lib, create=False) as opened:
        assert len(opened.list()) == 2


@pytest.mark.parametrize(
    "point", ["library.pending-saved", "library.media-copied", "library.vectors-upserted"]
)
def test_list_during_an_add_removes_nothing(tmp_path, clips, point):
    """Issue 11, case 6: ``rhl library list`` while another process is inside an add (held at a
    point of its commit) lists the last catalog and leaves the new clip's vectors and media.
    """
    from click.testing import CliRunner

    from retrieval_hl.cli.main import cli

    lib = tmp_path / "lib"
    with Library.open(lib, encoder=TINY) as opened:
        (first,) = opened.add_clip_file(clips[0])
    proc = add_process(lib, clips[1], pause_at=point)
    try:
        assert proc.stdout.readline().strip() == "paused"
        res = CliRunner().invoke(cli, ["-q", "library", "list", "--library", str(lib), "--json"])
        assert res.exit_code == 0, res.output
        assert [json.loads(x)["clip_id"] for x in res.stdout.splitlines()] == [first.clip_id]
        before = {p.name for p in (lib / "media").iterdir()}
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert before <= {p.name for p in (lib / "media").iterdir()}
    with Library.open(lib, create=False) as opened:
        listed = opened.list()
        assert len(listed) == 2
        assert all(opened.store.count(c.clip_id) > 0 and not opened.media_missing(c)
                   for c in listed)


def test_soak_adds_and_lists_killed_at_random(tmp_path, clips):
    """Short ``rhl library add`` and ``rhl library list`` processes at once, some killed at
    commit points or random times, for a bounded time: every clip an add reported is listed,
    with its vectors and media, and the library stays usable.
    """
    import random
    import time

    lib = tmp_path / "lib"
    rnd = random.Random(5)
    points = ["library.pending-saved", "library.media-copied", "faiss.before-commit",
              "library.vectors-upserted"]
    reported: set[str] = set()
    rounds = kills = died = 0
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline or not reported or not died:
        rounds += 1
        procs = [
            add_process(lib, rnd.choice(clips), json_out=True,
                        kill_at=rnd.choice(points) if rnd.random() < 0.5 else "")
            for _ in range(2)
        ]
        lister = subprocess.Popen(
            [sys.executable, "-m", "retrieval_hl", "-q", "library", "list", "--library", str(lib)],
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        time.sleep(rnd.uniform(1.0, 6.0))
        for p in procs:
            if rnd.random() < 0.3 and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert "Traceback" not in err, err
            died += p.returncode == -signal.SIGKILL
            reported |= {json.loads(x)["clip_id"] for x in out.splitlines() if x.startswith("{")}
        _, err = lister.communicate(timeout=300)
        assert "Traceback" not in err, err
    with Library.open(lib) as opened:  # a writer: clears what killed ones left
        listed = {c.clip_id: c for c in opened.list()}
        assert reported <= listed.keys(), reported - listed.keys()
        assert all(opened.store.count(c) > 0 and not opened.media_missing(listed[c])
                   for c in listed)
        assert sorted(opened.store.video_ids()) == sorted(listed)
        assert sorted(p.stem for p in (lib / "media").iterdir()) == sorted(listed)
        assert opened.search("anything", top_k=1)
    print(f"library soak: {rounds} rounds, {2 * rounds} adds ({died} killed, {kills} at random "
          "times, the rest at commit points), "
          f"{len(reported)} clips reported, {len(listed)} listed")
