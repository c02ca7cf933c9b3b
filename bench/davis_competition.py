"""A competition-format benchmark built from the DAVIS-2016 footage in ../shared/data/davis16.

    .venv/bin/python bench/davis_competition.py [--ratio 9:16] [--data ../shared/data/davis16]

Each benchmark video is a DAVIS sequence (real footage, subject mask on every frame) between two
3-second holds of its own first and last frame (still, nothing happens): the highlight is the
sequence. Two extra videos are holds only: their ground truth is empty (no highlight). Ground
truth per kept frame is the fixed-size target-ratio window centred on the subject box, clamped,
exactly as crop_eval.py defines it. The script builds the set once into bench/out/davis_comp/,
runs ``rhl batch`` and ``rhl eval`` on it, and scores baselines in the same run: the kit's
centre crop on every frame, a centre crop on exactly the ground-truth frames (oracle extent), and
the kit's VLM-baseline mechanism given perfect answers (GT extent, GT subject point every 15
frames, linearly interpolated): an upper bound of that baseline, since no VLM runs here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from retrieval_hl.competition.format import VideoPrediction, load_ground_truth
from retrieval_hl.competition.metric import evaluate_files
from retrieval_hl.config import parse_wh
from retrieval_hl.models import CropBox
from retrieval_hl.reframe.window import fixed_window_size
from rhl_common.ffmpeg import ffmpeg_binary

OUT = Path(__file__).parent / "out" / "davis_comp"
HOLD_S = 3.0


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def build(data: Path, ratio: tuple[int, int]) -> tuple[Path, Path, Path]:
    """Write the benchmark videos, index.json and gt.jsonl (once); return their paths."""
    ann = json.loads((data / "annotations.json").read_text())
    vids = OUT / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    index, gt = [], []
    for seq, a in sorted(ann.items()):
        out = vids / f"{seq}.mp4"
        fps = a["fps"]
        hold = int(HOLD_S * fps)
        if not out.exists():
            src = str(data / a["video"])
            ffmpeg("-i", src, "-filter_complex",
                   f"[0:v]split=3[a][b][c];"
                   f"[a]trim=end_frame=1,loop=loop={hold - 1}:size=1:start=0,setpts=N/{fps}/TB[h1];"
                   f"[c]reverse,trim=end_frame=1,loop=loop={hold - 1}:size=1:start=0,"
                   f"setpts=N/{fps}/TB[h2];"
                   f"[b]setpts=PTS-STARTPTS[m];[h1][m][h2]concat=n=3:v=1:a=0,fps={fps}[v]",
                   "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                   "-pix_fmt", "yuv420p", str(out))
        W, H = a["width"], a["height"]
        cw, ch = fixed_window_size(W, H, ratio)
        boxes = []
        for f, (x, y, w, h) in enumerate(a["subject_boxes_xywh"]):
            cx, cy = x + w / 2, y + h / 2
            bx = int(round(min(max(cx - cw / 2, 0), W - cw)))
            by = int(round(min(max(cy - ch / 2, 0), H - ch)))
            boxes.append(CropBox(frame=hold + f, x_px=bx, y_px=by, w_px=cw, h_px=ch))
        index.append({"video_id": seq, "targetRatioWH": list(ratio)})
        gt.append(VideoPrediction.from_crop_boxes(seq, ratio, boxes).to_json_line())
    for k, seq in enumerate(sorted(ann)[:2]):  # two videos with nothing happening
        vid = f"still_{k}"
        out = vids / f"{vid}.mp4"
        if not out.exists():
            a = ann[seq]
            ffmpeg("-i", str(data / a["video"]), "-vf",
                   f"trim=end_frame=1,loop=loop={int(8 * a['fps'])}:size=1:start=0,"
                   f"setpts=N/{a['fps']}/TB", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
        index.append({"video_id": vid, "targetRatioWH": list(ratio)})
        gt.append(VideoPrediction(video_id=vid, ratio_wh=ratio).to_json_line())
    (OUT / "index.json").write_text(json.dumps(index))
    (OUT / "gt.jsonl").write_text("\n".join(gt) + "\n")
    return OUT / "index.json", OUT / "gt.jsonl", vids


def centre_crops(gt_path: Path, vids: Path, ratio, oracle_extent: bool) -> Path:
    """The kit's centre-crop baseline on every frame, or on exactly the GT frames."""
    from indexer.probe import probe_video

    out = OUT / ("centre_gt_frames.jsonl" if oracle_extent else "centre_all.jsonl")
    lines = []
    for vid, rows in load_ground_truth(gt_path).items():
        info = probe_video(vids / f"{vid}.mp4", vid)
        cw, ch = fixed_window_size(info.width_px, info.height_px, ratio)
        x, y = (info.width_px - cw) // 2, (info.height_px - ch) // 2
        frames = [r.frame for r in rows.rows] if oracle_extent else range(info.n_frames)
        boxes = [CropBox(frame=f, x_px=x, y_px=y, w_px=cw, h_px=ch) for f in frames]
        lines.append(VideoPrediction.from_crop_boxes(vid, ratio, boxes).to_json_line())
    out.write_text("\n".join(lines) + "\n")
    return out


def vlm_mechanism_oracle(gt_path: Path, vids: Path, ratio, every: int = 15) -> Path:
    """The kit's VLM baseline fed perfect answers: its one segment is the GT extent and its
    subject point every ``every`` frames is the GT window centre, linearly interpolated. No VLM
    runs here, so this is that baseline's upper bound, not a measurement of it."""
    import numpy as np

    from indexer.probe import probe_video

    out = OUT / "vlm_mechanism_oracle.jsonl"
    lines = []
    for vid, rows in load_ground_truth(gt_path).items():
        info = probe_video(vids / f"{vid}.mp4", vid)
        cw, ch = fixed_window_size(info.width_px, info.height_px, ratio)
        frames = np.array([r.frame for r in rows.rows])
        boxes = []
        if frames.size:
            cx = np.array([r.box[0] + cw / 2 for r in rows.rows])
            cy = np.array([r.box[1] + ch / 2 for r in rows.rows])
            keys = np.unique(np.r_[np.arange(0, frames.size, every), frames.size - 1])
            px = np.interp(frames, frames[keys], cx[keys])
            py = np.interp(frames, frames[keys], cy[keys])
            for f, x, y in zip(frames.tolist(), px, py, strict=True):
                bx = int(round(min(max(x - cw / 2, 0), info.width_px - cw)))
                by = int(round(min(max(y - ch / 2, 0), info.height_px - ch)))
                boxes.append(CropBox(frame=f, x_px=bx, y_px=by, w_px=cw, h_px=ch))
        lines.append(VideoPrediction.from_crop_boxes(vid, ratio, boxes).to_json_line())
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    default_data = Path(__file__).parents[2] / "shared" / "data" / "davis16"
    ap.add_argument("--data", default=str(default_data))
    ap.add_argument("--ratio", default="9:16")
    ap.add_argument("--encoder", default=None, help="Also fuse semantic relevance (needs weights).")
    args = ap.parse_args()
    ratio = parse_wh(args.ratio)
    index, gt, vids = build(Path(args.data), ratio)
    pred = OUT / "ours.jsonl"
    cmd = [sys.executable, "-m", "retrieval_hl", "-q", "batch", str(index), "--videos", str(vids),
           "--out", str(pred)]
    if args.encoder:
        cmd += ["--encoder", args.encoder]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    rows = {
        "ours (rhl batch)": evaluate_files(gt, pred),
        "centre crop, every frame": evaluate_files(gt, centre_crops(gt, vids, ratio, False)),
        "centre crop, GT frames (oracle)": evaluate_files(gt, centre_crops(gt, vids, ratio, True)),
        "VLM baseline, oracle answers": evaluate_files(gt, vlm_mechanism_oracle(gt, vids, ratio)),
    }
    print(f"command: {' '.join(cmd)}  ({wall:.1f} s)")
    print(rows["ours (rhl batch)"].to_table())
    print(f"\n{'method':34s} {'F x100':>7s} {'P x100':>7s} {'R x100':>7s}")
    for name, r in rows.items():
        print(f"{name:34s} {r.mean_f_x100:7.2f} {r.mean_precision_x100:7.2f} "
              f"{r.mean_recall_x100:7.2f}")


if __name__ == "__main__":
    main()
