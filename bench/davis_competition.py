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
from pathlib import Path

from _runner import centre_crops, ffmpeg, fpr_x100, print_methods, run_batch, window_at

from retrieval_hl.competition.format import VideoPrediction, load_ground_truth
from retrieval_hl.competition.metric import evaluate_files
from retrieval_hl.config import parse_wh
from retrieval_hl.reframe.window import fixed_window_size

OUT = Path(__file__).parent / "out" / "davis_comp"
HOLD_S = 3.0


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
            boxes.append(window_at(hold + f, x + w / 2, y + h / 2, (W, H), (cw, ch)))
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
            frame_wh = (info.width_px, info.height_px)
            for f, x, y in zip(frames.tolist(), px, py, strict=True):
                boxes.append(window_at(f, x, y, frame_wh, (cw, ch)))
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
    cmd, wall = run_batch(index, vids, pred, *(["--encoder", args.encoder] if args.encoder else []))
    rows = {
        "ours (rhl batch)": evaluate_files(gt, pred),
        "centre crop, every frame": evaluate_files(gt, centre_crops(gt, vids, OUT, False)),
        "centre crop, GT frames (oracle)": evaluate_files(gt, centre_crops(gt, vids, OUT, True)),
        "VLM baseline, oracle answers": evaluate_files(gt, vlm_mechanism_oracle(gt, vids, ratio)),
    }
    print(f"command: {' '.join(cmd)}  ({wall:.1f} s)")
    print(rows["ours (rhl batch)"].to_table())
    print_methods({name: fpr_x100(r) for name, r in rows.items()}, 34)


if __name__ == "__main__":
    main()
