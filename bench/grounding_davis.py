"""Grounding on DAVIS-2016 clips: ours vs a fixed centre crop, scored by shared/tools/crop_eval.py.

usage: python bench/grounding_davis.py [--data DIR] [--ratio 9:16] [--ratio 16:9] [--out DIR]

Runs ``ground_frames`` on every frame of every sequence listed in DIR/annotations.json. The
annotations' subject boxes are read by the scorer only, never by ``ground_frames``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (before decord, see indexer.decode)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.probe import probe_video  # noqa: E402
from retrieval_hl.config import parse_wh  # noqa: E402
from retrieval_hl.reframe.crops import ground_frames  # noqa: E402
from retrieval_hl.reframe.window import fixed_window_size  # noqa: E402

SHARED = ROOT.parent / "shared"
LINE = re.compile(r"^(\S+)\tiou=([\d.]+)\tcoverage=([\d.]+)\tjitter=([\d.]+)")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def score(data: Path, pred: Path) -> dict[str, tuple[float, float, float]]:
    out = subprocess.run(
        [sys.executable, str(SHARED / "tools" / "crop_eval.py"), str(data), str(pred)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    res = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            res[m.group(1)] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "davis16")
    ap.add_argument("--ratio", action="append", default=None, help="W:H, repeatable")
    ap.add_argument("--out", type=Path, default=Path("/tmp/grounding_davis"))
    ap.add_argument("--sample-fps", type=float, default=8.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    ratios = [parse_wh(r) for r in (args.ratio or ["9:16"])]
    ann = json.loads((args.data / "annotations.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for tw, th in ratios:
        ours, centre, wall = [], [], {}
        for seq in sorted(ann):
            info = probe_video(args.data / ann[seq]["video"], video_id=seq)
            t0 = time.perf_counter()
            boxes = ground_frames(info, range(info.n_frames), (tw, th), sample_fps=args.sample_fps)
            wall[seq] = time.perf_counter() - t0
            ours.append(
                {
                    "video_id": seq,
                    "targetRatioWH": [tw, th],
                    "predictions": [
                        {"frame": b.frame, "bboxes": [b.x_px, b.y_px, b.w_px]} for b in boxes
                    ],
                }
            )
            w, h = fixed_window_size(info.width_px, info.height_px, (tw, th))
            x, y = (info.width_px - w) // 2, (info.height_px - h) // 2
            centre.append(
                {
                    "video_id": seq,
                    "targetRatioWH": [tw, th],
                    "predictions": [
                        {"frame": f, "bboxes": [x, y, w]} for f in range(info.n_frames)
                    ],
                }
            )
        tag = f"{tw}x{th}"
        p_ours, p_centre = args.out / f"ours_{tag}.jsonl", args.out / f"centre_{tag}.jsonl"
        write_jsonl(p_ours, ours)
        write_jsonl(p_centre, centre)
        s_ours, s_centre = score(args.data, p_ours), score(args.data, p_centre)
        print(f"\ntarget {tw}:{th}   (ours vs centre crop)")
        print(
            f"{'sequence':16s} {'IoU ours':>9s} {'centre':>7s} {'cov ours':>9s} {'centre':>7s} "
            f"{'jit ours':>9s} {'centre':>7s} {'wall s':>7s}"
        )
        for seq in [*sorted(ann), "MEAN"]:
            a, b = s_ours.get(seq, (0, 0, 0)), s_centre.get(seq, (0, 0, 0))
            t = sum(wall.values()) if seq == "MEAN" else wall[seq]
            print(
                f"{seq:16s} {a[0]:9.3f} {b[0]:7.3f} {a[1]:9.3f} {b[1]:7.3f} "
                f"{a[2]:9.4f} {b[2]:7.4f} {t:7.2f}"
            )
        n = sum(v["n_frames"] for v in ann.values())
        print(
            f"wall time {sum(wall.values()):.1f} s for {n} frames "
            f"({n / sum(wall.values()):.0f} frames/s); predictions in {args.out}"
        )


if __name__ == "__main__":
    main()
