"""The clip library, scripts, assembly planning and rendering, templates, and their CLI.

The tiny encoder has random weights, so clips are made distinguishable by their image vectors:
solid colours, queried with the image embedding of a frame of that colour. Text-driven paths
only get structural assertions.
"""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
from click.testing import CliRunner

from indexer.probe import probe_video
from library.assemble import (
    assign_clips,
    best_window,
    load_plan,
    plan_assembly,
    plan_srt,
    render_plan,
    save_plan,
)
from library.catalog import CATALOG_NAME, Library, group_slices
from library.models import AssemblyPlan, Catalog, Script, ScriptStep
from library.scoring import MIN_STD_COS, default_min_z, normalise_scores
from library.script import MAX_EVENTS, load_script, parse_script
from library.templates import category_queries, list_templates, load_script_template
from retrieval_hl.config import Settings
from retrieval_hl.models import Description, Highlight, Segment
from retrieval_hl.render.export import save_highlight
from rhl_common.errors import ConfigError, RenderError, VideoOpenError
from tests.conftest import TINY, ffmpeg, make_cut_video

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0), "green": (0, 255, 0)}
# name -> (size, fps, seconds, audio): mixed sizes and rates, with and without audio
CLIP_SPECS = {
    "red": ("160x120", 10, 3, True),
    "blue": ("120x160", 15, 3, False),
    "yellow": ("128x96", 10, 2, False),
    "green": ("160x90", 12, 2, True),
}
SETTINGS = Settings(encoder=TINY, window_s=1.0, sample_fps=4.0)


def make_colour_clip(path, colour, size, fps, seconds, audio):
    args = ["-f", "lavfi", "-i", f"color=c={colour}:size={size}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}", "-c:a", "aac"]
    ffmpeg(*args, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", str(path))
    return path


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    files = {n: make_colour_clip(d / f"{n}.mp4", n, *spec) for n, spec in CLIP_SPECS.items()}
    files["cuts"] = make_cut_video(d / "cuts.mp4")
    return files


@pytest.fixture(scope="module")
def colour_vectors(tiny_encoder):
    frames = np.stack([np.full((64, 64, 3), c, np.uint8) for c in COLOURS.values()])
    return dict(zip(COLOURS, tiny_encoder.encode_images(frames), strict=True))


def build(location, clip_files, names=("red", "blue", "yellow", "green"), **kw):
    lib = Library.open(location, encoder=TINY, settings=SETTINGS, **kw)
    for n in names:
        lib.add_clip_file(clip_files[n], tags=["colour", n], category="solid")
    return lib


def ids_by_colour(lib):
    return {c.tags[1]: c.clip_id for c in lib.list(tags=["colour"])}


@pytest.fixture(params=["faiss", "qdrant"])
def lib(request, tmp_path, clip_files):
    loc = str(tmp_path / "lib") if request.param == "faiss" else f"qdrant:{tmp_path / 'lib'}"
    with build(loc, clip_files) as library:
        yield library


# -- scoring, assignment, windows (pure) ---------------------------------------------------------


def test_leave_one_out_scores():
    raw = np.array([[0.30, 0.20, 0.21, 0.19, np.nan]])
    z = normalise_scores(raw)
    others = raw[0, 1:4]
    assert z[0, 0] == pytest.approx((0.30 - others.mean()) / max(others.std(), MIN_STD_COS))
    assert np.isnan(z[0, 4])
    assert normalise_scores(np.array([[0.3]]))[0, 0] == 0.0
    flat = normalise_scores(np.full((1, 6), 0.25))
    assert np.allclose(flat, 0.0)
    assert default_min_z(4) == 2.0 and default_min_z(1000) > 3.0


def test_assign_by_priority_without_reuse():
    z = np.array([[3.0, 2.5, 0.0], [3.0, 0.0, 0.0], [0.1, 0.2, 0.3]])
    allowed = np.ones((3, 3), dtype=bool)
    got = assign_clips(z, allowed, priorities=[2, 1, 1], min_z=2.0)
    # event 1 (priority 1) takes clip 0 first; event 0 falls back to clip 1; event 2 has no match
    assert [a.clip_index for a in got] == [1, 0, None]
    assert got[2].reason == "below_threshold" and got[2].best_index == 2
    got = assign_clips(z[:2], allowed[:2], [1, 1], 2.0)
    assert [a.clip_index for a in got] == [0, None] and got[1].reason == "all_used"
    got = assign_clips(z[:2], allowed[:2], [1, 1], 2.0, allow_reuse=True)
    assert [a.clip_index for a in got] == [0, 0]
    got = assign_clips(z[:1], np.zeros((1, 3), dtype=bool), [1], 2.0)
    assert got[0].reason == "no_candidates"


def test_best_window_follows_slice_scores():
    starts, ends = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])
    assert best_window(starts, ends, np.array([0, 0, 1, 1.0]), 0, 4, 2) == (2.0, 4.0)
    assert best_window(starts, ends, np.array([1, 0, 0, 0.0]), 0, 4, 1.5) == (0.0, 1.5)
    assert best_window(starts, ends, np.ones(4), 0, 4, None) == (0, 4)
    assert best_window(starts, ends, np.ones(4), 0, 4, 9) == (0, 4)


def test_group_slices_breaks_at_cuts_and_length(clip_files):
    from indexer.slicing import make_slices

    info = probe_video(clip_files["cuts"])
    slices = make_slices(info, 1.0, cuts=[30, 60])
    groups = group_slices(slices, [30, 60], max_clip_s=2.0)
    spans = [(g[0].start_frame, g[-1].end_frame) for g in groups]
    assert spans == [(0, 20), (20, 30), (30, 50), (50, 60), (60, 80), (80, 90)]


# -- scripts ---------------------------------------------------------------------------------


def test_plain_text_script_english_and_chinese(tmp_path):
    p = tmp_path / "story.txt"
    p.write_text("# my edit\n\n1. the tip-off\n- a dunk (4s)\n观众欢呼 [3秒]\n", encoding="utf-8")
    s = load_script(p)
    assert [x.text for x in s.steps] == ["the tip-off", "a dunk", "观众欢呼"]
    assert [x.duration_s for x in s.steps] == [None, 4.0, 3.0]
    one_line = parse_script("进球，然后庆祝; the crowd")
    assert [x.text for x in one_line.steps] == ["进球", "庆祝", "the crowd"]


def test_yaml_script(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "title: game\ncategory: Basketball\ntags: [a]\nevents:\n"
        "  - text: tip-off\n    duration: 3s\n    priority: 1\n"
        "  - a dunk\n  - {text: fans, tags: [b, c], category: crowd}\n",
        encoding="utf-8",
    )
    s = load_script(p)
    assert s.title == "game" and s.category == "basketball"
    assert s.steps[0] == ScriptStep(text="tip-off", duration_s=3.0, tags=("a",),
                                    category="basketball", priority=1)
    assert s.steps[2].tags == ("b", "c") and s.steps[2].category == "crowd"
    assert Script.model_validate_json(s.model_dump_json()) == s


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"  \n# only a comment\n", "no events"),
        (b"\x00\x01\x02binary\xff", "binary"),
        (b"\xff\xfe\xfa not utf8", "UTF-8"),
        (b"x" * (1 << 20 + 1), "limit"),
        ("\n".join(f"event {i}" for i in range(MAX_EVENTS + 1)).encode(), "limit is 500"),
        (b"events:\n  - text: [unclosed\n", "not valid YAML"),
        (b"events: {a: 1}\n", "must be a list"),
        (b"events:\n  - text: ok\n    duration: soon\n", "bad duration"),
        (b"events:\n  - text: ok\n    colour: red\n", "unknown key"),
        (b"events:\n  - text: ok\n    priority: 7\n", "priority"),
        (b"events: []\n", "no events"),
        (b"just a string", "list of events"),
    ],
)
def test_bad_scripts_raise_config_error(tmp_path, content, message):
    yaml_case = content.startswith((b"events", b"just"))
    p = tmp_path / ("bad.yaml" if yaml_case else "bad.txt")
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_script(p)


def test_missing_script_file(tmp_path):
    with pytest.raises(ConfigError, match="no such script"):
        load_script(tmp_path / "nope.txt")


# -- the library -----------------------------------------------------------------------------


def test_image_query_finds_its_colour(lib, colour_vectors):
    ids = ids_by_colour(lib)
    assert len(lib) == 4 and set(ids) == set(CLIP_SPECS)
    for name in ("red", "blue", "yellow"):
        hits = lib.search_vectors(colour_vectors[name][None])[0]
        assert hits[0].clip.clip_id == ids[name]
        assert hits[0].score_norm >= default_min_z(4)
        assert hits[0].score_raw > 0.99
    only = lib.search_vectors(colour_vectors["red"][None], tags=["blue"])[0]
    assert [h.clip.clip_id for h in only] == [ids["blue"]]
    assert lib.search_vectors(colour_vectors["red"][None], category="other")[0] == []
    text_hits = lib.search("a red screen", top_k=2)
    assert len(text_hits) == 2 and text_hits[0].score_norm >= text_hits[1].score_norm


def test_add_twice_changes_nothing(lib, clip_files):
    catalog = (lib.root / CATALOG_NAME).read_bytes()
    n_points = lib.store.count()
    assert lib.add_clip_file(clip_files["red"], tags=["other"]) == []
    assert lib.add_path(clip_files["blue"]) == []
    assert (lib.root / CATALOG_NAME).read_bytes() == catalog
    assert lib.store.count() == n_points


def test_rm_removes_vectors(lib):
    ids = ids_by_colour(lib)
    n_points = lib.store.count()
    red_points = lib.store.count(ids["red"])
    assert red_points == 1 + lib.get(ids["red"]).n_slices
    with pytest.raises(ConfigError, match="no clip 'nope'"):
        lib.remove([ids["red"], "nope"])
    assert ids["red"] in lib
    assert lib.remove([ids["red"]]) == 1
    assert ids["red"] not in lib and lib.store.count(ids["red"]) == 0
    assert lib.store.count() == n_points - red_points
    saved = Catalog.model_validate_json((lib.root / CATALOG_NAME).read_bytes())
    assert ids["red"] not in {c.clip_id for c in saved.clips}


def test_reopen_and_stray_vectors(tmp_path, clip_files):
    loc = tmp_path / "lib"
    with build(str(loc), clip_files, names=("red", "blue")) as lib:
        ids = ids_by_colour(lib)
        lib._clips.pop(ids["red"])  # a writer killed between its vectors and its catalog
        lib._save(pending=[ids["red"]])
    with Library.open(loc, create=False) as lib:  # encoder and store come from the catalog
        assert lib.encoder_spec == TINY and len(lib) == 1
        # A reader deletes nothing and ignores what the catalog does not list.
        assert lib.store.count(ids["red"]) > 0 and lib.store.count(ids["blue"]) > 0
        assert [c.clip_id for c in lib.list()] == [ids["blue"]]
    with Library.open(loc) as lib:
        lib.remove([ids["blue"]])  # the next writer clears what the killed one left
        assert lib.store.video_ids() == [] and not list((loc / "media").iterdir())
    with pytest.raises(ConfigError, match="holds vectors of encoder"):
        Library.open(loc, encoder="open_clip:ViT-B-32:random")
    with pytest.raises(ConfigError, match="keeps its vectors in"):
        Library.open(loc, store=f"qdrant:{tmp_path / 'q'}")


def test_missing_and_bad_files(lib, tmp_path):
    with pytest.raises(VideoOpenError, match="no such video"):
        lib.add_path(tmp_path / "gone.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(VideoOpenError):
        lib.add_clip_file(tmp_path / "junk.mp4")
    with pytest.raises(ConfigError, match="unknown add mode"):
        lib.add_path(tmp_path / "junk.mp4", mode="shots")
    with pytest.raises(ConfigError, match="reserved"):
        lib.list(tags=["rhl:clip"])
    with Library.open("qdrant::memory:", encoder=TINY) as empty:
        assert empty.root is None and empty.search("anything") == []
        with pytest.raises(ConfigError, match="is empty"):
            plan_assembly(Script(steps=(ScriptStep(text="x"),)), empty)
    with pytest.raises(ConfigError, match="local directory"):
        Library.open("http://localhost:6333")


def test_narrow_clip_falls_back_to_pyav(tmp_path):
    narrow = make_colour_clip(tmp_path / "narrow.mp4", "white", "96x96", 10, 1, False)
    with Library.open(tmp_path / "lib", encoder=TINY, settings=SETTINGS) as lib:
        (clip,) = lib.add_clip_file(narrow)
        assert lib.store.count(clip.clip_id) == 1 + clip.n_slices


def test_add_video_makes_shot_clips(tmp_path, clip_files):
    with Library.open(tmp_path / "lib", encoder=TINY, settings=SETTINGS) as lib:
        clips = lib.add_path(clip_files["cuts"], mode="video", category="Mixed Shots")
        spans = np.array(sorted((c.start_frame, c.end_frame) for c in clips))
        assert np.abs(spans - [(0, 30), (30, 60), (60, 90)]).max() <= 3  # cuts at sampled frames
        assert {c.origin for c in clips} == {"video"} and clips[0].category == "mixed_shots"
        assert lib.add_video(clip_files["cuts"]) == []
        assert lib.store.count() == sum(1 + c.n_slices for c in clips)


def test_add_from_run(tmp_path, clip_files):
    info = probe_video(clip_files["cuts"])
    hl = Highlight(
        video=info,
        encoder=TINY,
        descriptions=(Description(text="the blue shot", domain="sports"),),
        segments=(
            Segment(video_id=info.video_id, start_frame=60, end_frame=90, start_s=6.0, end_s=9.0,
                    description_index=0, priority=1, score_raw=0.3, score_norm=2.5),
        ),
    )
    run = tmp_path / "run"
    save_highlight(hl, run / "highlights.json")
    with Library.open(tmp_path / "lib", encoder=TINY, settings=SETTINGS) as lib:
        (clip,) = lib.add_from_run(run, tags=["best"])
        assert (clip.start_frame, clip.end_frame, clip.origin) == (60, 90, "run")
        assert clip.summary == "the blue shot" and clip.score_norm == 2.5
        assert clip.category == "sports" and clip.tags == ("best",)
        assert lib.add_from_run(run / "highlights.json") == []
        shutil.rmtree(run)
        with pytest.raises(ConfigError, match="highlights file"):
            lib.add_from_run(run)


def test_faiss_and_qdrant_agree(tmp_path, clip_files, colour_vectors):
    script = Script(steps=(ScriptStep(text="blue"), ScriptStep(text="red"),
                           ScriptStep(text="red again")))
    q = np.stack([colour_vectors[c] for c in ("blue", "red", "red")])
    results = []
    for loc in (str(tmp_path / "f"), f"qdrant:{tmp_path / 'q'}"):
        with build(loc, clip_files) as lib:
            hits = lib.search_vectors(q)
            plan = plan_assembly(script, lib, query_vectors=q)
            results.append((
                [c.model_dump(exclude={"created_utc", "media_path"}) for c in lib.list()],
                [[(h.clip.clip_id, round(h.score_norm, 3)) for h in row] for row in hits],
                plan.model_dump(exclude={"library"}),
            ))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]
    for a, b in zip(results[0][2]["steps"], results[1][2]["steps"], strict=True):
        assert a["score_raw"] == pytest.approx(b["score_raw"], abs=1e-5)
        assert {k: v for k, v in a.items() if not k.startswith(("score", "media_path"))} == {
            k: v for k, v in b.items() if not k.startswith(("score", "media_path"))
        }
    for a, b in zip(results[0][2]["missed"], results[1][2]["missed"], strict=True):
        assert a["best_score_norm"] == pytest.approx(b.pop("best_score_norm"), abs=1e-4)
        assert {k: v for k, v in a.items() if k != "best_score_norm"} == b


# -- assembly --------------------------------------------------------------------------------


def test_plan_order_no_reuse_and_missed_event(lib, colour_vectors):
    ids = ids_by_colour(lib)
    clip_vecs = lib.clip_vectors(list(ids.values()))
    rng = np.random.default_rng(0)
    v = rng.normal(size=clip_vecs.shape[1])
    basis, _ = np.linalg.qr(clip_vecs.T)
    nothing = v - basis @ (basis.T @ v)  # orthogonal to every clip: matches none
    script = Script(steps=(
        ScriptStep(text="blue sky", duration_s=1.5),
        ScriptStep(text="nothing like it"),
        ScriptStep(text="red car"),
        ScriptStep(text="red again"),
    ))
    q = np.stack([colour_vectors["blue"], nothing / np.linalg.norm(nothing),
                  colour_vectors["red"], colour_vectors["red"]])
    plan = plan_assembly(script, lib, query_vectors=q)
    assert [s.clip_id for s in plan.steps] == [ids["blue"], ids["red"]]
    assert [s.event_index for s in plan.steps] == [0, 2]
    assert [m.event_index for m in plan.missed] == [1, 3]
    assert "no good match" in plan.missed[0].reason
    assert "already used" in plan.missed[1].reason
    assert plan.steps[0].duration_s == pytest.approx(1.5, abs=1 / 15)
    assert plan.steps[1].out_start_s == pytest.approx(plan.steps[0].out_end_s)
    assert plan.steps[1].duration_s == pytest.approx(3.0, abs=0.1)
    assert (plan.width_px, plan.height_px, plan.fps) == (120, 160, 15.0)

    reuse = plan_assembly(script, lib, query_vectors=q, allow_reuse=True, size=(320, 180))
    assert [s.clip_id for s in reuse.steps] == [ids["blue"], ids["red"], ids["red"]]
    assert (reuse.width_px, reuse.height_px) == (320, 180)
    with pytest.raises(ConfigError, match="query_vectors"):
        plan_assembly(script, lib, query_vectors=q[:2])


def test_plan_json_round_trip_and_srt(lib, colour_vectors, tmp_path):
    script = Script(steps=(ScriptStep(text="yellow"), ScriptStep(text="blue")))
    q = np.stack([colour_vectors["yellow"], colour_vectors["blue"]])
    plan = plan_assembly(script, lib, query_vectors=q, crossfade_s=0.4)
    path = save_plan(plan, tmp_path / "p.plan.json")
    assert load_plan(path) == plan
    assert AssemblyPlan.model_validate_json(plan.model_dump_json()) == plan
    assert plan.duration_s == pytest.approx(2.0 + 3.0 - 0.4, abs=0.15)
    srt = plan_srt(plan)
    assert srt.count(" --> ") == 2 and "yellow" in srt
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="assembly plan"):
        load_plan(tmp_path / "bad.json")


def duration_s(path):
    with av.open(str(path)) as c:
        return c.duration / 1e6


def test_render_mixed_sources(tmp_path, clip_files, colour_vectors):
    # blue: 120x160 @15 fps without audio, red: 160x120 @10 fps with audio, green: 160x90 @12
    with build(str(tmp_path / "lib"), clip_files) as lib:
        script = Script(steps=tuple(ScriptStep(text=c) for c in ("blue", "red", "green")))
        q = np.stack([colour_vectors[c] for c in ("blue", "red", "green")])
        plan = plan_assembly(script, lib, query_vectors=q, min_z=0.0)
    assert len(plan.steps) == 3
    out = render_plan(plan, tmp_path / "edit.mp4")
    assert duration_s(out) == pytest.approx(plan.duration_s, abs=0.2)
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.width, v.height) == (120, 160)
        assert a.rate == 48000 and a.channels == 2
    moved = plan.model_copy(update={"steps": (plan.steps[0].model_copy(
        update={"source_path": str(tmp_path / "gone.mp4"), "media_path": None}),)})
    with pytest.raises(VideoOpenError, match="no such video"):
        render_plan(moved, tmp_path / "x.mp4")
    with pytest.raises(RenderError, match="nothing to render"):
        render_plan(plan.model_copy(update={"steps": ()}), tmp_path / "y.mp4")


def test_library_outlives_its_sources(tmp_path, clip_files, colour_vectors):
    """Clips keep their own media: delete the sources and the library still assembles."""
    src = tmp_path / "src"
    src.mkdir()
    for c in ("red", "blue"):
        shutil.copy(clip_files[c], src / f"{c}.mp4")
    cut = src / "cut.mp4"
    shutil.copy(clip_files["cuts"], cut)
    with Library.open(tmp_path / "lib", encoder=TINY) as lib:
        lib.add_clip_file(src / "red.mp4", tags=["red"])
        lib.add_clip_file(src / "blue.mp4", tags=["blue"], link=True)
        shots = lib.add_video(cut)
    assert len(shots) >= 2 and shots[1].media_start_s <= shots[1].start_s
    shutil.rmtree(src)
    with Library.open(tmp_path / "lib", create=False) as lib:
        by_tag = {c.tags[0] if c.tags else c.clip_id: c for c in lib.list()}
        assert not lib.media_missing(by_tag["red"]) and lib.media_missing(by_tag["blue"])
        assert all(not lib.media_missing(c) for c in shots)
        steps = (ScriptStep(text="red"), ScriptStep(text="second shot"))
        q = np.stack([colour_vectors["red"], lib.clip_vectors([shots[1].clip_id])[0]])
        plan = plan_assembly(Script(steps=steps), lib, query_vectors=q, min_z=-100)
    assert [s.clip_id for s in plan.steps] == [by_tag["red"].clip_id, shots[1].clip_id]
    out = render_plan(plan, tmp_path / "edit.mp4")
    assert duration_s(out) == pytest.approx(plan.duration_s, abs=0.2)
    listed = run("library", "list", "--library", tmp_path / "lib", "--json")
    missing = {json.loads(x)["clip_id"]: json.loads(x)["media_missing"]
               for x in listed.stdout.splitlines()}
    assert missing[by_tag["blue"].clip_id] and not missing[by_tag["red"].clip_id]
    res = run("library", "list", "--library", tmp_path / "lib")
    assert res.stdout.count("MISSING MEDIA") == 1


# -- templates -------------------------------------------------------------------------------


def test_templates_load():
    names = list_templates()
    for need in ("basketball", "soccer", "wedding", "product_demo", "travel_vlog", "concert"):
        assert need in names
        s = load_script_template(need)
        assert len(s.steps) >= 6 and s.category == need
        assert {x.priority for x in s.steps} >= {1, 2}
        assert all(x.duration_s for x in s.steps)
    with pytest.raises(ConfigError, match="choose basketball"):
        load_script_template("knitting")


def test_category_queries(lib):
    descs, vecs = category_queries("basketball", lib)
    assert descs[0].source == "template" and descs[0].priority == 1
    assert all(d.domain == "basketball" for d in descs) and vecs.shape[0] == 0
    descs, vecs = category_queries("solid", lib)  # no template, but clips of that category
    assert descs == [] and vecs.shape == (4, 32) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="no script template"):
        category_queries("knitting", lib)


# -- CLI -------------------------------------------------------------------------------------


def run(*args, code=0):
    from retrieval_hl.cli.main import cli

    res = CliRunner().invoke(cli, ["-q", *map(str, args)], catch_exceptions=False)
    assert res.exit_code == code, res.output + res.stderr
    return res


def test_cli_library_and_assemble(tmp_path, clip_files):
    lib = tmp_path / "lib"
    res = run("library", "add", clip_files["red"], clip_files["blue"], clip_files["yellow"],
              "--library", lib, "--encoder", TINY, "--tags", "colour,demo", "--category", "solid",
              "--json")
    clips = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(clips) == 3 and clips[0]["tags"] == ["colour", "demo"]
    again = run("library", "add", clip_files["red"], "--library", lib)
    assert "added 0 clip(s); the library has 3" in again.stdout
    listed = run("library", "list", "--library", lib, "--tags", "demo", "--json")
    assert len(listed.stdout.splitlines()) == 3
    hits = run("library", "search", "something red", "--library", lib, "--top", "2", "--json")
    assert len(hits.stdout.splitlines()) == 2
    exported = json.loads(run("library", "export", "--library", lib).stdout)
    assert exported["encoder"] == TINY and len(exported["clips"]) == 3

    script = tmp_path / "story.txt"
    script.write_text("a red screen\n蓝色画面 (1s)\na yellow screen\n", encoding="utf-8")
    out = tmp_path / "edit.mp4"
    res = run("assemble", script, "--library", lib, "--out", out, "--min-z", "-100",
              "--size", "64x48", "--json")
    summary = json.loads(res.stdout)
    assert summary["steps"] == 3 and summary["missed"] == []
    plan = load_plan(tmp_path / "edit.plan.json")
    assert [s.text for s in plan.steps] == ["a red screen", "蓝色画面", "a yellow screen"]
    assert duration_s(out) == pytest.approx(plan.duration_s, abs=0.2)
    assert (tmp_path / "edit.srt").read_text(encoding="utf-8").count(" --> ") == 3
    run("assemble", tmp_path / "edit.plan.json", "--out", tmp_path / "again.mp4", "--no-render")

    run("library", "rm", clips[0]["clip_id"], "--library", lib)
    assert len(run("library", "list", "--library", lib).stdout.splitlines()) == 2
    res = run("library", "rm", "nope", "--library", lib, code=1)
    assert res.stderr.startswith("error: no clip 'nope'")
    (tmp_path / "empty.txt").write_text("\n")
    res = run("assemble", tmp_path / "empty.txt", "--library", lib, code=1)
    assert "is empty" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("assemble", script, "--library", lib, "--min-z", "1000", "--out", out, code=1)
    assert "no event" in res.stderr and "nothing to render" in res.stderr
