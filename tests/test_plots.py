"""Pictures of a run: the score track reaches the artefact, timeline.png and contact_sheet.png."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval_hl.config import Settings
from retrieval_hl.models import ScoreTrack
from retrieval_hl.pipeline import export_highlights, highlight_video
from retrieval_hl.render.export import load_highlight
from retrieval_hl.render.plots import axis_label, plot_contact_sheet, plot_timeline
from retrieval_hl.select.events import NEW_LOOK_FRACTION, STAND_OUT, keep_level
from retrieval_hl.signals.meter import SliceSignals
from tests.conftest import TINY, make_video

YELLOW = np.array([255, 212, 0])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A signals-only run reframed for 9:16, written with its pictures."""
    d = tmp_path_factory.mktemp("plots")
    video = make_video(d / "clip.mp4", seconds=8, size="320x180")
    s = Settings(semantic="off", store=str(d / "store"), render=False)
    hl = highlight_video(video, settings=s, ratio_wh=(9, 16))
    written = export_highlights(hl, d / "run", settings=s)
    return hl, written, d


def yellow_pixels(path) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(rgb - YELLOW).max(axis=-1) <= 12).sum())


def test_track_holds_what_the_selection_saw(run):
    hl, _, _ = run
    t = hl.track
    assert t is not None and len(t.start_s) == len(hl.slices) > 0
    assert t.start_s == tuple(round(x.start_s, 4) for x in hl.slices)
    # Signals only: the decision is the fused score, compared with the keep level of the rule.
    assert t.decision_score == t.fused_z
    assert t.decision_threshold == pytest.approx(keep_level(np.array(t.decision_score)), abs=1e-3)
    # A new view stands out at a fraction of that contrast: its own, lower line.
    new_view = keep_level(np.array(t.decision_score), NEW_LOOK_FRACTION * STAND_OUT)
    assert t.new_view_threshold == pytest.approx(new_view, abs=1e-3)
    assert np.median(t.decision_score) <= t.new_view_threshold <= t.decision_threshold
    assert set(t.signals) >= {"motion", "audio_loudness", "sharpness"}
    assert t.semantic_z == ()
    # The track round-trips through highlights.json.
    assert load_highlight(run[1]["json"]).track == t


def test_pictures_are_written_and_readable(run):
    hl, written, _ = run
    timeline = Image.open(written["timeline"])
    sheet = Image.open(written["contact_sheet"])
    assert timeline.format == sheet.format == "PNG"
    assert timeline.size[0] == 1200 and timeline.size[1] >= 390  # 12 in wide at 100 dpi
    assert sheet.size[0] >= 300
    # The crop box is drawn in yellow on the contact sheet.
    assert yellow_pixels(written["contact_sheet"]) > 50


def test_contact_sheet_without_crops_has_no_box(run, tmp_path):
    hl, written, _ = run
    plain = hl.model_copy(update={"crops": (), "ratio_wh": None})
    out = plot_contact_sheet(plain, tmp_path / "sheet.png")
    assert yellow_pixels(out) < yellow_pixels(written["contact_sheet"]) // 5


def test_timeline_without_track_or_segments(run, tmp_path):
    hl, _, _ = run
    bare = hl.model_copy(update={"track": None, "segments": ()})
    assert Image.open(plot_timeline(bare, tmp_path / "t.png")).format == "PNG"
    with pytest.raises(ValueError, match="no segments"):
        plot_contact_sheet(bare, tmp_path / "c.png")


def test_no_plots_setting(run, tmp_path):
    hl, _, d = run
    written = export_highlights(hl, tmp_path / "quiet", settings=Settings(render=False,
                                                                          plots=False))
    assert "timeline" not in written and not (tmp_path / "quiet" / "timeline.png").exists()


def test_track_rejects_ragged_rows():
    with pytest.raises(ValueError, match="needs 2 values"):
        ScoreTrack(start_s=(0.0, 1.0), end_s=(1.0, 2.0), decision_score=(0.5,))


def test_find_highlights_carries_a_track_without_signals(tmp_path, tiny_encoder):
    from retrieval_hl.pipeline import find_highlights, index_video

    video = make_video(tmp_path / "v.mp4", seconds=6)
    s = Settings(encoder=TINY, store=str(tmp_path / "store"))
    hl = find_highlights(index_video(video, settings=s, encoder=tiny_encoder),
                         prompt="a test pattern; a red square", settings=s, encoder=tiny_encoder)
    t = hl.track
    assert t is not None and t.fused_z == () and t.signals == {}
    assert len(t.semantic_z) == len(hl.descriptions) == 2
    assert t.decision_score == tuple(round(max(col), 4) for col in zip(*t.semantic_z, strict=True))
    assert t.decision_threshold == s.threshold_z
    assert Image.open(plot_timeline(hl, tmp_path / "t.png")).size[0] == 1200


def test_every_signal_panel_names_its_unit():
    for name in SliceSignals.names:
        label = axis_label(name)
        assert label.endswith(")") and "()" not in label, name
    assert axis_label("unmeasured_thing") == "unmeasured_thing"  # no empty "()"


def test_contact_sheet_seeks_to_the_very_frames_a_full_decode_gives(run):
    """``reader="auto"`` seeks (no decord, no decoding from the start): keyframes or not, the
    thumbnails are the frames PyAV's full decode gives at those indices; past the end, none.
    """
    from retrieval_hl.render.plots import _thumbnails

    hl, _, _ = run
    frames = [0, 9, 13, 47, hl.video.n_frames - 1, hl.video.n_frames + 5]
    seeked = _thumbnails(hl, frames, "auto")
    decoded = _thumbnails(hl, frames, "pyav")
    assert sorted(seeked) == sorted(decoded) == frames[:-1]
    for f in frames[:-1]:
        assert np.array_equal(seeked[f], decoded[f]), f
    # Neighbouring frames of the test pattern differ: a frame off by one would show.
    assert not np.array_equal(seeked[9], _thumbnails(hl, [10], "pyav")[10])
