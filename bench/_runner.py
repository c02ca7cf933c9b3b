"""What the competition-format benchmarks share (``davis_competition.py``, ``real_filler.py``):
ffmpeg, the ground-truth window on a subject, the centre-crop reference lines, the ``rhl batch``
run and the table of methods.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from retrieval_hl.competition.format import VideoPrediction, load_ground_truth
from retrieval_hl.competition.metric import EvalReport
from retrieval_hl.models import CropBox
from retrieval_hl.reframe.window import fixed_window_size
from rhl_common.ffmpeg import ffmpeg_binary

RHL = [sys.executable, "-m", "retrieval_hl"]


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly, overwriting its output; raise if it fails."""
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def window_at(frame: int, cx: float, cy: float, frame_wh: tuple[int, int],
              window_wh: tuple[int, int]) -> CropBox:
    """The ``window_wh`` window centred on (cx, cy), clamped to the frame (as ``crop_eval.py``
    defines the ground truth)."""
    (w, h), (cw, ch) = frame_wh, window_wh
    bx = int(round(min(max(cx - cw / 2, 0), w - cw)))
    by = int(round(min(max(cy - ch / 2, 0), h - ch)))
    return CropBox(frame=frame, x_px=bx, y_px=by, w_px=cw, h_px=ch)


def centre_crops(gt_path: Path, vids: Path, out_dir: Path, oracle_extent: bool) -> Path:
    """A centre crop at each video's target ratio on every frame, or on exactly the true frames;
    written to ``out_dir``."""
    from indexer.probe import probe_video

    out = out_dir / ("centre_gt_frames.jsonl" if oracle_extent else "centre_all.jsonl")
    lines = []
    for vid, rows in load_ground_truth(gt_path).items():
        info = probe_video(vids / f"{vid}.mp4", vid)
        ratio = rows.ratio_wh
        cw, ch = fixed_window_size(info.width_px, info.height_px, ratio)
        x, y = (info.width_px - cw) // 2, (info.height_px - ch) // 2
        frames = [r.frame for r in rows.rows] if oracle_extent else range(info.n_frames)
        boxes = [CropBox(frame=f, x_px=x, y_px=y, w_px=cw, h_px=ch) for f in frames]
        lines.append(VideoPrediction.from_crop_boxes(vid, ratio, boxes).to_json_line())
    out.write_text("\n".join(lines) + "\n")
    return out


def run_batch(index: Path, vids: Path, pred: Path, *options: str) -> tuple[list[str], float]:
    """Run ``rhl batch`` on ``index`` into ``pred``; return the command and its wall time (s)."""
    cmd = [*RHL, "-q", "batch", str(index), "--videos", str(vids), "--out", str(pred), *options]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return cmd, time.perf_counter() - t0


def print_methods(rows: dict[str, tuple[float, float, float]], width: int) -> None:
    """The table of methods: name, then mean F, precision and recall (x100) of each."""
    print(f"\n{'method':{width}s} {'F x100':>7s} {'P x100':>7s} {'R x100':>7s}")
    for name, (f, p, r) in rows.items():
        print(f"{name:{width}s} {f:7.2f} {p:7.2f} {r:7.2f}")


def fpr_x100(report: EvalReport) -> tuple[float, float, float]:
    """Mean F, precision and recall (x100) of an eval report, for :func:`print_methods`."""
    return report.mean_f_x100, report.mean_precision_x100, report.mean_recall_x100
