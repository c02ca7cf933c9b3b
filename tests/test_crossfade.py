"""The crossfade render through the public API, with and without an audio track."""

from __future__ import annotations

import av
import numpy as np
import pytest

from indexer.probe import probe_video
from retrieval_hl.config import Settings
from retrieval_hl.models import Description, Highlight, Segment
from retrieval_hl.pipeline import export_highlights
from tests.conftest import ffmpeg


def segment(info, a_s: float, b_s: float) -> Segment:
    return Segment(video_id=info.video_id, start_frame=round(a_s * info.fps),
                   end_frame=round(b_s * info.fps), start_s=a_s, end_s=b_s, description_index=0,
                   priority=1, score_raw=0.0, score_norm=1.0)


def frame_at(path, t_s: float) -> np.ndarray:
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if f.time >= t_s - 1e-6:
                return f.to_ndarray(format="rgb24").astype(float)
    raise AssertionError(f"no frame at {t_s} s in {path}")


@pytest.mark.parametrize("audio", [True, False])
def test_crossfade_blends_red_into_blue(videos, tmp_path, audio):
    src = videos["cuts"]  # red 0-3 s, test pattern 3-6 s, blue 6-9 s
    if not audio:
        src = tmp_path / "silent cuts.mp4"
        ffmpeg("-i", str(videos["cuts"]), "-an", "-c", "copy", str(src))
    info = probe_video(src)
    assert info.has_audio is audio
    hl = Highlight(video=info, encoder="none", descriptions=(Description(text="x", priority=1),),
                   segments=(segment(info, 0.5, 2.5), segment(info, 6.5, 8.5)))
    out = export_highlights(hl, tmp_path / "run", settings=Settings(crossfade_s=0.5))["mp4"]
    with av.open(str(out)) as c:
        assert c.duration / 1e6 == pytest.approx(4.0 - 0.5, abs=0.15)  # the fade overlaps
        assert bool(c.streams.audio) is audio
    red, mid, blue = (frame_at(out, t).mean(axis=(0, 1)) for t in (1.0, 1.75, 3.0))
    assert red[0] > 200 and red[2] < 40 and blue[2] > 200 and blue[0] < 40
    assert 60 < mid[0] < 200 and 60 < mid[2] < 200  # half red, half blue: a real crossfade
