import json
import math

import numpy as np
import pytest

from indexer.models import VideoInfo
from retrieval_hl.competition.format import (
    FramePrediction,
    IndexEntry,
    PredictionRow,
    VideoPrediction,
    frame_sizes_from_infos,
    load_ground_truth,
    load_index,
    load_predictions,
)
from retrieval_hl.competition.metric import EvalReport, evaluate_files, iou_xyw, score, score_video
from retrieval_hl.competition.validate import Issue, validate_predictions
from retrieval_hl.models import CropBox
from retrieval_hl.reframe.window import fixed_window_size
from rhl_common.errors import ConfigError
from tests.conftest import shared_data

R169 = (16, 9)
A = [0, 0, 160]  # 160 x 90 at 16:9
A_HALF = [80, 0, 160]  # shifted by half its width: IoU 1/3


def rows(*frames_boxes):
    return [{"frame": f, "bboxes": list(b)} for f, b in frames_boxes]


def line(video_id, preds, ratio=R169):
    return {"video_id": video_id, "targetRatioWH": list(ratio), "predictions": preds}


def write_jsonl(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


# ---------------------------------------------------------------- geometry


def test_fixed_window_size_floors():
    assert fixed_window_size(1080, 1920, (16, 9)) == (1080, 607)  # 607.5 floored
    assert fixed_window_size(1920, 1080, (16, 9)) == (1920, 1080)
    assert fixed_window_size(1920, 1080, (9, 16)) == (607, 1079)  # 607.5 -> 607, 1079.1 -> 1079
    assert fixed_window_size(720, 1280, (16, 9)) == (720, 405)
    assert fixed_window_size(854, 480, (9, 16)) == (270, 480)


@pytest.mark.parametrize("w,h", [(1080, 1920), (1920, 1080), (854, 480), (541, 961), (7, 3)])
@pytest.mark.parametrize("ratio", [(16, 9), (9, 16), (1, 1), (4, 3)])
def test_fixed_window_size_fits_and_is_largest(w, h, ratio):
    cw, ch = fixed_window_size(w, h, ratio)
    tw, th = ratio
    assert cw <= w and ch <= h
    assert cw * th / tw <= h  # the scored box fits
    assert ch == math.floor(cw * th / tw)
    assert cw == w or (cw + 1) * th / tw > h  # one pixel wider would not fit


@pytest.mark.parametrize(
    "args", [(0, 10, (16, 9)), (10, 10, (16, 0)), (10, 10, (16,)), (1, 1, (16, 9))]
)
def test_fixed_window_size_rejects(args):
    with pytest.raises(ConfigError):
        fixed_window_size(*args)


def test_iou_half_overlap_is_one_third():
    assert iou_xyw(A, A_HALF, R169) == pytest.approx(1 / 3)


def test_iou_vectorised_and_pairwise():
    a = np.array([A, A, [0, 0, 80], [500, 500, 10]])
    b = np.array([A, A_HALF, A, A])
    # [0,0,80] is 80x45 inside 160x90: IoU = 3600 / 14400
    np.testing.assert_allclose(iou_xyw(a, b, R169), [1, 1 / 3, 0.25, 0])
    m = iou_xyw(a[:, None], b[None], R169)
    assert m.shape == (4, 4)
    np.testing.assert_allclose(np.diag(m), [1, 1 / 3, 0.25, 0])


def test_iou_uses_the_ratio_for_height():
    # 9:16: [0,0,90] is 90x160; shifted down by 80 -> half overlap
    assert iou_xyw([0, 0, 90], [0, 80, 90], (9, 16)) == pytest.approx(1 / 3)


# ---------------------------------------------------------------- scoring


def test_identical_scores_100():
    gt = {"a": rows((0, A), (1, A_HALF)), "b": rows((5, A))}
    path_rows = {k: v for k, v in gt.items()}
    report = score(_as_video_rows(gt), _as_video_rows(path_rows))
    assert report.mean_f_x100 == pytest.approx(100)
    assert [v.f for v in report.videos] == [1, 1]


def test_half_overlap_gives_one_third():
    s = score_video(rows((0, A), (1, A)), rows((0, A_HALF), (1, A_HALF)), R169, video_id="v")
    assert s.video_id == "v"
    assert (s.precision, s.recall, s.f) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert (s.n_pred, s.n_gt, s.n_matched) == (2, 2, 2)


def test_duplicates_count_in_n_pred_first_scores():
    gt = rows((0, A), (1, A))
    pred = rows((0, A), (0, [300, 300, 160]), (1, A))  # the second frame-0 box never scores
    s = score_video(gt, pred, R169)
    # sum IoU = 2, N_pred = 3, N_gt = 2: P = 2/3, R = 1, F = 0.8
    assert (s.precision, s.recall, s.f) == pytest.approx((2 / 3, 1, 0.8))
    assert s.n_pred == 3

    # the first box of frame 0 is a poor one: it is the one that scores
    s = score_video(gt, rows((0, A_HALF), (0, A), (1, A)), R169)
    assert s.precision == pytest.approx((1 / 3 + 1) / 3)


def test_out_of_range_frame_counted_not_scored():
    gt = rows((0, A), (1, A), (2, A))
    pred = rows((0, A), (1, A), (2, A))
    s = score_video(gt, pred, R169, frame_size=(320, 180, 2))  # video has 2 frames: frame 2 invalid
    # sum IoU = 2, N_pred = 3, N_gt = 3
    assert (s.precision, s.recall, s.n_matched, s.n_pred) == pytest.approx((2 / 3, 2 / 3, 2, 3))
    # unknown length: frame 2 scores
    assert score_video(gt, pred, R169).f == pytest.approx(1)


def test_box_outside_frame_invalid_then_first_valid_scores():
    gt = rows((0, A), (1, A))
    pred = rows((0, A), (1, [200, 0, 160]), (1, A))  # 200 + 160 > 320: leaves the frame
    size = (320, 180, None)
    s = score_video(gt, pred, R169, frame_size=size)
    # frame 1: the invalid box is skipped, the next one scores: sum IoU = 2, N_pred = 3
    assert (s.precision, s.recall) == pytest.approx((2 / 3, 1))
    # the same box on a frame of its own never scores
    s = score_video(gt, rows((0, A), (1, [200, 0, 160])), R169, frame_size=size)
    assert (s.precision, s.recall, s.n_matched) == pytest.approx((0.5, 0.5, 1))


def test_fractional_height_overhang_tolerated():
    # 1080x1920, 16:9: h = 607.5; y = 1920 - 607 is the last y the floored size allows
    s = score_video(rows((0, [0, 1313, 1080])), rows((0, [0, 1313, 1080])), R169, (1080, 1920, 1))
    assert s.f == 1
    s = score_video(rows((0, [0, 1313, 1080])), rows((0, [0, 1314, 1080])), R169, (1080, 1920, 1))
    assert s.f == 0


def test_nan_and_junk_rows_count_in_n_pred():
    gt = rows((0, A), (1, A))
    pred = [
        {"frame": 0, "bboxes": A},
        {"frame": 1, "bboxes": [float("nan"), 0, 160]},
        {"frame": 1},
        {"bboxes": A},
        {"frame": "1", "bboxes": A},
        {"frame": 1, "bboxes": [0, 0]},
        {"frame": 1, "bboxes": [0, 0, "160"]},
        {"frame": 1, "bboxes": [-1, 0, 160]},
        "junk",
    ]
    s = score_video(gt, pred, R169)
    assert s.n_pred == 9
    assert s.n_matched == 1
    assert s.precision == pytest.approx(1 / 9)
    assert s.recall == pytest.approx(0.5)


def test_nan_row_through_a_file(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(
        '{"video_id": "v", "targetRatioWH": [16, 9], "predictions": '
        '[{"frame": 0, "bboxes": [0, 0, 160]}, {"frame": 1, "bboxes": [NaN, 0, 160]}]}\n'
    )
    pred = load_predictions(p)
    assert pred["v"].rows[1].problem == "bboxes has NaN or infinity"
    gt = _as_video_rows({"v": rows((0, A), (1, A))})
    v = score(gt, pred).videos[0]
    assert (v.n_pred, v.n_matched, v.f) == pytest.approx((2, 1, 0.5))


def test_empty_both_sides_is_one_one_side_is_zero():
    assert score_video([], [], R169).f == 1
    assert score_video(rows((0, A)), [], R169).f == 0
    assert score_video([], rows((0, A)), R169).f == 0
    # predictions that are all invalid still make the prediction side non-empty
    assert score_video([], [{"frame": 0}], R169).f == 0


def test_no_overlap_in_frames_is_zero():
    s = score_video(rows((0, A)), rows((1, A)), R169)
    assert (s.precision, s.recall, s.f, s.n_matched) == (0, 0, 0, 0)


def test_missing_video_counts_as_empty_and_extra_is_listed():
    gt = _as_video_rows({"a": rows((0, A)), "b": rows((0, A)), "c": []})
    pred = _as_video_rows({"a": rows((0, A)), "zzz": rows((0, A))})
    report = score(gt, pred)
    by_id = {v.video_id: v for v in report.videos}
    assert by_id["b"].f == 0 and by_id["b"].n_pred == 0
    assert by_id["c"].f == 1  # empty ground truth, no line: empty / empty
    assert report.mean_f_x100 == pytest.approx(200 / 3)
    assert report.extra_video_ids == ("zzz",)


def test_score_uses_ground_truth_ratio():
    gt = _as_video_rows({"v": rows((0, [0, 0, 90]))}, ratio=(9, 16))
    pred = _as_video_rows({"v": rows((0, [0, 80, 90]))}, ratio=(16, 9))
    assert score(gt, pred).videos[0].f == pytest.approx(1 / 3)


def test_score_with_frame_sizes_and_video_info():
    info = VideoInfo(
        path="/x.mp4",
        video_id="v",
        width_px=320,
        height_px=180,
        fps=25,
        n_frames=1,
        duration_s=0.04,
    )
    gt = _as_video_rows({"v": rows((0, A), (1, A))})
    sizes = frame_sizes_from_infos([info])
    assert sizes == {"v": (320, 180, 1)}
    assert score(gt, gt, sizes).videos[0].n_matched == 1
    assert score(gt, gt, {"v": info}).videos[0].n_matched == 1


def test_score_rejects_empty_ground_truth():
    with pytest.raises(ConfigError, match="nothing to score"):
        score({}, {})


def test_report_table_and_json():
    gt = _as_video_rows({"a": rows((0, A), (1, A)), "b": rows((0, A))})
    pred = _as_video_rows({"a": rows((0, A_HALF), (1, A_HALF)), "x": []})
    report = score(gt, pred)
    table = report.to_table()
    lines = table.splitlines()
    assert lines[0].split() == ["video_id", "n_gt", "n_pred", "matched", "precision", "recall", "f"]
    assert lines[2].split() == ["a", "2", "2", "2", "0.3333", "0.3333", "0.3333"]
    assert lines[3].split() == ["b", "1", "0", "0", "0.0000", "0.0000", "0.0000"]
    assert "score (mean F x 100): 16.67" in table
    assert "not in ground truth, not scored (1): x" in table
    back = EvalReport.model_validate_json(report.model_dump_json())
    assert back == report
    assert json.loads(report.model_dump_json())["mean_f_x100"] == pytest.approx(50 / 3)


def test_evaluate_files(tmp_path):
    gt = write_jsonl(tmp_path / "gt.jsonl", [line("a", rows((0, A), (1, A)))])
    pred = write_jsonl(tmp_path / "p.jsonl", [line("a", rows((0, A), (1, A_HALF)))])
    report = evaluate_files(gt, pred)
    assert report.mean_f_x100 == pytest.approx(100 * (1 + 1 / 3) / 2)


# ---------------------------------------------------------------- models and formats


def test_video_prediction_json_line_is_the_kit_format():
    vp = VideoPrediction(
        video_id="6",
        ratio_wh=(16, 9),
        predictions=(
            FramePrediction(frame=1, x_px=0, y_px=424, w_px=540),
            FramePrediction(frame=0, x_px=0, y_px=420, w_px=540),
        ),
    )
    assert vp.to_json_line() == (
        '{"video_id": "6", "targetRatioWH": [16, 9], "predictions": '
        '[{"frame": 0, "bboxes": [0, 420, 540]}, {"frame": 1, "bboxes": [0, 424, 540]}]}'
    )


def test_video_prediction_rejects_repeated_frames():
    p = FramePrediction(frame=0, x_px=0, y_px=0, w_px=10)
    with pytest.raises(ValueError, match="more than one box"):
        VideoPrediction(video_id="v", ratio_wh=(16, 9), predictions=(p, p))


def test_video_prediction_from_crop_boxes():
    boxes = [CropBox(frame=3, x_px=1, y_px=2, w_px=160, h_px=90)]
    vp = VideoPrediction.from_crop_boxes("v", (16, 9), boxes)
    assert vp.predictions == (FramePrediction(frame=3, x_px=1, y_px=2, w_px=160),)


def test_video_prediction_from_json_line_rejects_invalid():
    with pytest.raises(ConfigError, match="NaN"):
        VideoPrediction.from_json_line(
            json.dumps(line("v", [{"frame": 0, "bboxes": [0, 0, math.nan]}]))
        )
    with pytest.raises(ConfigError, match="more than one box"):
        VideoPrediction.from_json_line(json.dumps(line("v", rows((0, A), (0, A)))))
    with pytest.raises(ConfigError, match="not valid JSON"):
        VideoPrediction.from_json_line("{")


def test_index_entry_from_json_keys():
    e = IndexEntry.from_json({"video_id": "0", "targetRatioWH": [16, 9]})
    assert e == IndexEntry(video_id="0", ratio_wh=(16, 9), file_name=None)
    for key in ("video_path", "file", "file_name", "video"):
        e = IndexEntry.from_json({"video_id": 7, "targetRatioWH": [9.0, 16], key: "a/b.mp4"})
        assert e == IndexEntry(video_id="7", ratio_wh=(9, 16), file_name="a/b.mp4")
    assert e.to_json() == {"video_id": "7", "targetRatioWH": [9, 16], "file_name": "a/b.mp4"}


@pytest.mark.parametrize(
    "obj,match",
    [
        ([1, 2], "expected an object"),
        ({"targetRatioWH": [16, 9]}, "missing 'video_id'"),
        ({"video_id": "0"}, "missing 'targetRatioWH'"),
        ({"video_id": "0", "targetRatioWH": "16:9"}, "targetRatioWH must be"),
        ({"video_id": "0", "targetRatioWH": [16, 0]}, "positive integers"),
        ({"video_id": "0", "targetRatioWH": [16.5, 9]}, "positive integers"),
        ({"video_id": ["0"], "targetRatioWH": [16, 9]}, "video_id must be"),
        ({"video_id": "0", "targetRatioWH": [16, 9], "file": 3}, "'file' must be"),
    ],
)
def test_index_entry_from_json_rejects(obj, match):
    with pytest.raises(ConfigError, match=match):
        IndexEntry.from_json(obj)


def test_prediction_row_from_raw():
    assert PredictionRow.from_raw({"frame": 3.0, "bboxes": [1, 2, 3]}) == PredictionRow(
        frame=3, box=(1.0, 2.0, 3.0)
    )
    assert PredictionRow.from_raw({"frame": 3, "bboxes": [1, 2, 0]}).problem == (
        "box width is not positive"
    )
    assert PredictionRow.from_raw({"frame": True, "bboxes": A}).problem == "frame is not a number"
    assert PredictionRow.from_raw({"frame": -1, "bboxes": A}).problem == "frame is negative"
    assert PredictionRow.from_raw({"frame": 1.5, "bboxes": A}).problem == "frame is not an integer"


# ---------------------------------------------------------------- loading


def test_real_index_and_predictions_load():
    index = load_index(shared_data("aic_format") / "test_index.json")
    assert index == (
        IndexEntry(video_id="0", ratio_wh=(16, 9)),
        IndexEntry(video_id="1", ratio_wh=(9, 16)),
    )
    pred = load_predictions(shared_data("aic_format") / "predictions_excerpt.jsonl")
    assert list(pred) == ["6", "9", "1"]
    assert pred["6"].ratio_wh == (16, 9)
    assert [r.frame for r in pred["9"].rows] == list(range(9, 16))
    assert pred["9"].rows[0].box == (0, 435, 720)
    assert pred["1"].rows == ()
    assert pred["9"].line_nos == (2,)
    # the real lines round-trip byte for byte through the strict model
    for text in (shared_data("aic_format") / "predictions_excerpt.jsonl").read_text().splitlines():
        assert VideoPrediction.from_json_line(text).to_json_line() == text
    # the excerpt scored against itself
    assert score(pred, pred).mean_f_x100 == pytest.approx(100)
    # and as ground truth
    gt = load_ground_truth(shared_data("aic_format") / "predictions_excerpt.jsonl")
    assert gt.keys() == pred.keys()


def test_real_excerpt_fits_portrait_sources():
    # portrait 16:9 sources: w is the full source width, y stays within H - floor(h)
    pred = load_predictions(shared_data("aic_format") / "predictions_excerpt.jsonl")
    index = [IndexEntry(video_id=v, ratio_wh=(16, 9)) for v in pred]
    sizes = {"6": (540, 960, 4), "9": (720, 1280, 16), "1": (1080, 1920, 10)}
    assert validate_predictions(pred, index, sizes) == []


def test_index_json_array_and_jsonl_both_load(tmp_path):
    entries = [
        {"video_id": "a", "targetRatioWH": [16, 9], "video_path": "a.mp4"},
        {"video_id": "b", "targetRatioWH": [9, 16]},
    ]
    arr = tmp_path / "index.json"
    arr.write_text(json.dumps(entries, indent=2))
    jsonl = write_jsonl(tmp_path / "index.jsonl", entries)
    expected = (
        IndexEntry(video_id="a", ratio_wh=(16, 9), file_name="a.mp4"),
        IndexEntry(video_id="b", ratio_wh=(9, 16)),
    )
    assert load_index(arr) == expected
    assert load_index(jsonl) == expected


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"[]", "no entries"),
        (b"\x00\x01binary", "binary"),
        (b"\xff\xfe\xfa", "not UTF-8"),
        (b'[{"video_id": "a", "targetRatioWH": [16, 9]}', "not valid JSON"),
        (b'{"video_id": "a", "targetRatioWH": [16, 9]}\nnope\n', "line 2: not valid JSON"),
        (b'[{"video_id": "a"}]', "entry 1: video 'a': missing 'targetRatioWH'"),
        (b'["a"]', "entry 1: expected an object"),
        (b'[{"video_id": 1.5, "targetRatioWH": [16, 9]}]', "video_id must be"),
        (
            b'[{"video_id": "a", "targetRatioWH": [16, 9]},\n'
            b' {"video_id": "a", "targetRatioWH": [1, 1]}]',
            "duplicate video_id 'a' \\(entry 1 and entry 2\\)",
        ),
    ],
)
def test_load_index_rejects(tmp_path, content, match):
    p = tmp_path / "index.json"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_index(p)


def test_load_index_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_index(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"video_id": "a", "targetRatioWH": [16, 9], "predictions": []}\n{oops\n', "line 2"),
        ('{"video_id": "a", "predictions": []}\n\n"a"\n', "line 3: expected an object"),
        ('{"targetRatioWH": [16, 9], "predictions": []}\n', "line 1: missing 'video_id'"),
        ('{"video_id": "a", "targetRatioWH": [16, 9]}\n', "line 1: video 'a': 'predictions' must"),
        ('{"video_id": "a", "predictions": {}}\n', "got an object"),
    ],
)
def test_load_predictions_malformed_line_names_it(tmp_path, text, match):
    p = tmp_path / "p.jsonl"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_predictions(p)


def test_load_predictions_tolerant(tmp_path):
    p = write_jsonl(
        tmp_path / "p.jsonl",
        [
            line("a", rows((0, A))),
            {"video_id": 5, "predictions": [{"frame": "x"}]},
            line("a", rows((1, A))),
        ],
    )
    pred = load_predictions(p)
    assert [r.frame for r in pred["a"].rows] == [0, 1]
    assert pred["a"].line_nos == (1, 3)
    assert pred["5"].ratio_wh is None and pred["5"].ratio_problem == "missing 'targetRatioWH'"
    assert pred["5"].rows[0].problem == "frame is not a number"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert load_predictions(empty) == {}
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\x00\x00")
    with pytest.raises(ConfigError, match="binary"):
        load_predictions(binary)


@pytest.mark.parametrize(
    "objs,match",
    [
        ([], "no videos"),
        ([line("a", []), line("a", [])], "on lines \\[1, 2\\]"),
        ([{"video_id": "a", "targetRatioWH": [0, 9], "predictions": []}], "positive integers"),
        ([line("a", [{"frame": 2, "bboxes": [0, 0, math.nan]}])], "frame 2: bboxes has NaN"),
        ([line("a", rows((0, A), (0, A)))], "frame 0 annotated twice"),
    ],
)
def test_load_ground_truth_is_strict(tmp_path, objs, match):
    p = write_jsonl(tmp_path / "gt.jsonl", objs)
    with pytest.raises(ConfigError, match=match):
        load_ground_truth(p)


# ---------------------------------------------------------------- validation


def test_validate_clean_predictions_has_no_issues():
    preds = _as_video_rows({"a": rows((0, [0, 0, 320]), (1, [0, 0, 320]))})
    index = [IndexEntry(video_id="a", ratio_wh=R169)]
    assert validate_predictions(preds, index) == []
    assert validate_predictions(preds, index, {"a": (320, 180, 2)}) == []


def test_validate_reports_every_check():
    preds = _as_video_rows(
        {
            "a": rows((0, [0, 0, 320]), (0, [0, 0, 320]), (5, [0, 0, 320]), (1, [0, 10, 320]))
            + [{"frame": 1, "bboxes": [math.nan, 0, 320]}, {"frame": 1, "bboxes": [0, 0, 160]}],
            "b": [],
            "x": rows((0, A)),
        }
    )
    preds["b"] = preds["b"].model_copy(update={"ratio_wh": (9, 16)})
    index = [
        IndexEntry(video_id="a", ratio_wh=R169),
        IndexEntry(video_id="b", ratio_wh=R169),
        IndexEntry(video_id="m", ratio_wh=R169),
    ]
    issues = validate_predictions(preds, index, {"a": (320, 180, 3)})
    by = {(i.video_id, i.message.split(" (")[0]): i for i in issues}
    assert set(by) == {
        ("a", "bboxes has NaN or infinity"),
        ("a", "frame repeated"),
        ("a", "frame past the end"),
        ("a", "box leaves the 320x180 frame"),
        ("a", "w is not the fixed crop width 320 for 320x180"),
        ("b", "targetRatioWH [9, 16] differs from the index's [16, 9]"),
        ("m", "no prediction line"),
        ("x", "not in the index"),
    }
    dup = by[("a", "frame repeated")]
    assert (dup.frame, dup.n_rows, dup.level) == (0, 2, "error")  # frame 0 once, frame 1 once
    assert by[("a", "frame past the end")].frame == 5
    assert by[("a", "box leaves the 320x180 frame")].frame == 1  # y=10 + 180 > 180
    width = by[("a", "w is not the fixed crop width 320 for 320x180")]
    assert (width.level, width.frame, width.n_rows) == ("warning", 1, 1)
    assert "seen: 160" in width.message
    assert by[("a", "bboxes has NaN or infinity")].frame == 1
    assert [i.level for i in issues].count("warning") == 1
    assert str(by[("m", "no prediction line")]) == "error: video 'm': no prediction line (scores 0)"


def test_validate_accepts_index_mapping_and_groups_rows():
    preds = _as_video_rows({"a": [{"frame": f} for f in range(10)]})
    issues = validate_predictions(preds, {"a": IndexEntry(video_id="a", ratio_wh=R169)})
    assert issues == [
        Issue(
            video_id="a",
            frame=0,
            message="missing 'bboxes' (10 rows; frames 0, 1, 2, 3, 4, ...)",
            n_rows=10,
        )
    ]


def test_validate_real_files():
    index = load_index(shared_data("aic_format") / "test_index.json")
    pred = load_predictions(shared_data("aic_format") / "predictions_excerpt.jsonl")
    msgs = [(i.video_id, i.message) for i in validate_predictions(pred, index)]
    assert msgs == [
        ("0", "no prediction line (scores 0)"),
        ("1", "targetRatioWH [16, 9] differs from the index's [9, 16]"),
        ("6", "not in the index (line 1)"),
        ("9", "not in the index (line 2)"),
    ]


# ---------------------------------------------------------------- helpers


def _as_video_rows(by_id, ratio=R169):
    """Round-trip through the loader's own parser, as a file would."""
    from retrieval_hl.competition.format import _parse_video_line

    return {k: _parse_video_line(line(k, v, ratio)) for k, v in by_id.items()}


def test_validate_width_accepts_floor_or_round_up_of_a_fractional_width():
    # 1920x1080 at 9:16: the exact width is 607.5; 607 (floor) and 608 (round) both fit
    index = [IndexEntry(video_id="a", ratio_wh=(9, 16))]
    sizes = {"a": (1920, 1080, None)}
    for w in (607, 608):
        preds = _as_video_rows({"a": rows((0, [0, 0, w]))}, ratio=(9, 16))
        assert validate_predictions(preds, index, sizes) == []
    preds = _as_video_rows({"a": rows((0, [0, 0, 606]), (1, [0, 0, 540]))}, ratio=(9, 16))
    (issue,) = validate_predictions(preds, index, sizes)
    assert (issue.level, issue.n_rows) == ("warning", 2)
    assert issue.message.startswith(
        "w is not the fixed crop width 607 or 608 for 1920x1080 (seen: 540, 606)"
    )
    # 609 * 16 / 9 = 1082.7: too wide, and the box leaves the frame (an error)
    preds = _as_video_rows({"a": rows((0, [0, 0, 609]))}, ratio=(9, 16))
    assert [i.level for i in validate_predictions(preds, index, sizes)] == ["error", "warning"]
