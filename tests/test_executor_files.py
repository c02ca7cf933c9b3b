"""Video files on an executor (``run_files`` under ``index_videos``): a report per file in the
order given, the unreadable and the failed reported, what is stored not sent again."""

from __future__ import annotations

import pytest

from retrieval_hl.config import Settings
from retrieval_hl.executors.local import LocalExecutor
from retrieval_hl.pipeline import index_videos
from tests.conftest import TINY, make_video


@pytest.mark.logs_errors  # the missing and the broken file are logged as errors
def test_index_videos_reports_every_file_in_order_and_resumes(tmp_path):
    good = make_video(tmp_path / "good.mp4", seconds=3, size="160x120")
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    paths = [tmp_path / "missing.mp4", good, broken]
    s = Settings(encoder=TINY, store=f"faiss:{tmp_path / 'store'}")
    ticks = []

    def index():
        return index_videos(paths, LocalExecutor(isolate=False), settings=s,
                            progress=ticks.append)

    first = index()
    assert [r.path for r in first] == [str(p) for p in paths]
    assert "cannot read" in first[0].error and first[0].video_id is None
    assert first[1].error is None and first[1].slices > 0 and not first[1].reused
    assert first[2].error and first[2].slices == 0
    assert ticks == [1, 1, 1]  # every file, the unreadable one too
    again = index()
    assert again[1].reused and again[1].slices == first[1].slices
    assert again[1].video_id == first[1].video_id
    assert [bool(r.error) for r in again] == [True, False, True]
