"""Editor timelines: highlights.otio and edit.otio read back by OpenTimelineIO, frame for frame."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from click.testing import CliRunner

from indexer.probe import probe_video
from library.assemble import load_plan
from library.timeline import write_plan_timelines
from retrieval_hl.config import Settings
from retrieval_hl.models import Description, Highlight, Segment
from retrieval_hl.pipeline import export_highlights
from retrieval_hl.render import renderer, timeline
from retrieval_hl.render.timeline import (
    TimelineClip,
    build_timeline,
    highlight_clips,
    read_timeline,
    write_timeline,
)
from rhl_common.errors import ConfigError, RenderError
from tests.conftest import TINY, ffmpeg, make_video

ADAPTERS = {a.name for a in otio.plugins.ActiveManifest().adapters}


def make_highlight(video: Path, spans, audio=True) -> Highlight:
    info = probe_video(video)
    descs = (Description(text="the first try", priority=1),
             Description(text="进球 and the celebration", priority=3))
    segs = tuple(
        Segment(video_id=info.video_id, start_frame=a, end_frame=b, start_s=a / info.fps,
                end_s=b / info.fps, description_index=k % 2, priority=1 + 2 * (k % 2),
                score_raw=0.2 + k, score_norm=1.5 + k)
        for k, (a, b) in enumerate(spans)
    )
    return Highlight(video=info, encoder="none", descriptions=descs, segments=segs)


def clip_frames(timeline, track=0):
    tracks = list(timeline.tracks)
    return [(c.media_reference.target_url, c.source_range.start_time.to_frames(),
             c.source_range.duration.to_frames(), c.source_range.start_time.rate)
            for c in tracks[track].find_clips()]


@pytest.fixture(scope="module")
def clip25(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("t") / "match day.mp4", seconds=8, fps=25)


def test_highlights_otio_reads_back_frame_for_frame(clip25, tmp_path):
    hl = make_highlight(clip25, [(13, 61), (100, 177)])
    written = export_highlights(hl, tmp_path, settings=Settings(render=False, plots=False))
    back = read_timeline(written["otio"])
    url = clip25.resolve().as_uri()
    assert "%20" in url  # a space in the name survives as a proper file URL
    assert clip_frames(back) == [(url, 13, 48, 25.0), (url, 100, 77, 25.0)]
    assert clip_frames(back, track=1) == clip_frames(back)  # the audio track follows
    assert [t.kind for t in back.tracks] == ["Video", "Audio"]
    markers = [m for c in back.tracks[0].find_clips() for m in c.markers]
    assert [m.name for m in markers] == ["the first try", "进球 and the celebration"]
    assert [m.color for m in markers] == ["RED", "YELLOW"]
    assert markers[1].metadata["rhl"]["score_norm"] == 2.5
    assert markers[0].marked_range.start_time.to_frames() == 13
    ref = back.tracks[0].find_clips()[0].media_reference
    assert ref.available_range.duration.to_frames() == hl.video.n_frames


def transitions(track):
    return [(t.name, t.transition_type, t.in_offset.to_frames(), t.out_offset.to_frames())
            for t in track if isinstance(t, otio.schema.Transition)]


@pytest.mark.parametrize("transition", ["crossfade", "dip"])
def test_crossfade_is_a_transition_at_every_join(clip25, tmp_path, transition):
    hl = make_highlight(clip25, [(13, 61), (100, 177), (180, 200)])
    settings = Settings(render=False, plots=False, crossfade_s=0.4, transition=transition)
    back = read_timeline(export_highlights(hl, tmp_path, settings=settings)["otio"])
    video, audio = back.tracks
    # 0.4 s is 10 frames at 25 fps (no more than half the shortest cut, 20 frames), from the cut
    # on: the last 10 frames of a stretch play under the transition into the next.
    name, kind = {"crossfade": ("crossfade", otio.schema.TransitionTypes.SMPTE_Dissolve),
                  "dip": ("dip to black", otio.schema.TransitionTypes.Custom)}[transition]
    assert transitions(video) == [(name, kind, 0, 10)] * 2
    assert transitions(audio) == [("crossfade", "SMPTE_Dissolve", 0, 10)] * 2
    assert [f[1:3] for f in clip_frames(back)] == [(13, 38), (100, 67), (180, 20)]
    assert clip_frames(back, track=1) == clip_frames(back)
    # The timeline lasts as long as the render: every cut, less one transition per join.
    assert video.duration().to_frames() == audio.duration().to_frames() == 48 + 77 + 20 - 2 * 10
    # Under the transitions each clip shows the rest of its stretch, which its marker keeps.
    for clip, (a, b) in zip(video.find_clips(), [(13, 61), (100, 177), (180, 200)], strict=True):
        head, tail = video.handles_of_child(clip)
        r = clip.source_range
        start = r.start_time.to_frames() - (head.to_frames() if head else 0)
        end = r.end_time_exclusive().to_frames() + (tail.to_frames() if tail else 0)
        assert (start, end) == (a, b)
        (m,) = clip.markers
        assert (m.marked_range.start_time.to_frames(), m.marked_range.duration.to_frames()) == (
            a, b - a)


def test_short_cuts_shorten_the_transition(clip25, tmp_path):
    hl = make_highlight(clip25, [(13, 61), (100, 106)])  # 6 frames: at most 3 frames of fade
    settings = Settings(render=False, plots=False, crossfade_s=1.0)
    back = read_timeline(export_highlights(hl, tmp_path, settings=settings)["otio"])
    assert transitions(back.tracks[0]) == [("crossfade", "SMPTE_Dissolve", 0, 3)]
    assert [f[1:3] for f in clip_frames(back)] == [(13, 45), (100, 6)]


@pytest.mark.parametrize("fmt", ["fcpxml", "xml", "edl"])
def test_editor_formats_hold_the_same_cuts(clip25, tmp_path, fmt):
    adapter = {"fcpxml": "fcpx_xml", "xml": "fcp_xml", "edl": "cmx_3600"}[fmt]
    if adapter not in ADAPTERS:
        pytest.skip(f"OTIO adapter {adapter} not installed")
    hl = make_highlight(clip25, [(13, 61), (100, 177)])
    written = export_highlights(
        hl, tmp_path, settings=Settings(render=False, plots=False, timelines=("otio", fmt)))
    kwargs = {"rate": 25} if fmt == "edl" else {}
    back = otio.adapters.read_from_file(str(written[fmt]), **kwargs)
    assert [f[1:3] for f in clip_frames(back)] == [(13, 48), (100, 77)]


@pytest.mark.parametrize("fmt", ["xml", "edl"])
def test_editor_formats_hold_the_dissolves(clip25, tmp_path, fmt):
    adapter = {"xml": "fcp_xml", "edl": "cmx_3600"}[fmt]
    if adapter not in ADAPTERS:
        pytest.skip(f"OTIO adapter {adapter} not installed")
    hl = make_highlight(clip25, [(13, 61), (100, 177)])
    written = export_highlights(hl, tmp_path, settings=Settings(
        render=False, plots=False, crossfade_s=0.4, timelines=(fmt,)))
    back = otio.adapters.read_from_file(str(written[fmt]), **({"rate": 25} if fmt == "edl" else {}))
    assert [f[1:3] for f in clip_frames(back)] == [(13, 38), (100, 77)]
    assert [t[1:] for t in transitions(back.video_tracks()[0])] == [("SMPTE_Dissolve", 0, 10)]


def test_odd_frame_rates_keep_the_otio_and_skip_what_cannot_hold_them(tmp_path, caplog):
    video = make_video(tmp_path / "ten.mp4", seconds=4, fps=10, audio=False)
    hl = make_highlight(video, [(3, 17)])
    with caplog.at_level(logging.WARNING):
        written = export_highlights(hl, tmp_path / "run", settings=Settings(
            render=False, plots=False, timelines=("edl",)))
    assert "edl" not in written and "highlights.edl not written" in caplog.text
    back = read_timeline(written["otio"])
    assert clip_frames(back) == [(video.resolve().as_uri(), 3, 14, 10.0)]
    assert len(back.tracks) == 1  # no sound, no audio track


def test_bad_input(clip25, tmp_path):
    hl = make_highlight(clip25, [(0, 10)])
    with pytest.raises(ValueError, match="do not fit"):
        TimelineClip(source_path=str(clip25), start_frame=190, end_frame=260, fps=25, n_frames=200,
            name="x")
    with pytest.raises(RenderError, match="no clips"):
        build_timeline("empty", [])
    with pytest.raises(ConfigError, match="unknown transition 'wipe'; choose from crossfade, dip"):
        build_timeline("t", highlight_clips(hl), crossfade_s=0.2, transition="wipe")
    assert set(timeline.TRANSITIONS) == set(renderer.TRANSITIONS)  # every render has its OTIO
    with pytest.raises(ConfigError, match="choose from otio, fcpxml, xml, edl"):
        write_timeline(build_timeline("t", highlight_clips(hl)), tmp_path / "t.avi", "avi")
    (tmp_path / "junk.otio").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable timeline"):
        read_timeline(tmp_path / "junk.otio")
    with pytest.raises(ConfigError, match="bad setting timelines"):
        from retrieval_hl.config import load_settings

        load_settings(timelines=("avi",))


def test_no_segments_no_timeline(clip25, tmp_path):
    hl = make_highlight(clip25, [])
    written = export_highlights(hl, tmp_path, settings=Settings(render=False, plots=False))
    assert "otio" not in written and not (tmp_path / "highlights.otio").exists()


def test_assemble_writes_edit_otio(tmp_path):
    from retrieval_hl.cli.main import cli

    d = tmp_path / "clips"
    d.mkdir()
    red = d / "red.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=160x120:rate=25:duration=3", "-f", "lavfi",
           "-i", "sine=frequency=330:duration=3", "-c:a", "aac", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-shortest", str(red))
    blue = make_video(d / "blue.mp4", seconds=2, fps=10, audio=False, source="testsrc")
    lib, out = tmp_path / "lib", tmp_path / "edit.mp4"
    runner = CliRunner()
    res = runner.invoke(cli, ["-q", "library", "add", str(red), str(blue), "--library", str(lib),
                              "--encoder", TINY], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    script = tmp_path / "story.txt"
    script.write_text("a red screen\n一个测试图案\n", encoding="utf-8")
    res = runner.invoke(cli, ["-q", "assemble", str(script), "--library", str(lib), "--out",
                              str(out), "--min-z", "-100", "--no-render"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output + res.stderr
    plan = load_plan(tmp_path / "edit.plan.json")
    back = read_timeline(tmp_path / "edit.otio")
    rates = {str(red): 25.0, str(blue): 10.0}
    want = [(Path(s.source_path).resolve().as_uri(), s.start_frame, s.end_frame - s.start_frame,
             rates[s.source_path]) for s in plan.steps]
    assert clip_frames(back) == want and len(want) == 2
    markers = [m for c in back.tracks[0].find_clips() for m in c.markers]
    assert [m.name for m in markers] == [s.text for s in plan.steps]
    assert np.allclose([m.metadata["rhl"]["score_norm"] for m in markers],
                       [s.score_norm for s in plan.steps])
    # With the plan's dip: one transition from the cut on, at the first source's rate (red 25 fps,
    # blue 10 fps), whose tail plays under it; the silent blue clip's gap keeps the sound in step.
    faded = plan.model_copy(update={"crossfade_s": 0.2, "transition": "dip"})
    back = read_timeline(write_plan_timelines(faded, tmp_path / "faded")["otio"])
    first = rates[plan.steps[0].source_path]
    fade = round(0.2 * first)
    assert transitions(back.tracks[0]) == [("dip to black", "Custom_Transition", 0, fade)]
    assert back.tracks[0][1].out_offset.rate == first
    assert clip_frames(back) == [want[0][:2] + (want[0][2] - fade, first), want[1]]
    assert back.tracks[0].duration() == back.tracks[1].duration()
    assert [type(x).__name__ for x in back.tracks[1]] == (
        ["Clip", "Transition", "Gap"] if first == 25.0 else ["Gap", "Transition", "Clip"])
