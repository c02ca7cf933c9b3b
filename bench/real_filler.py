"""The main dev benchmark of highlight picking: real actions inside real ordinary footage.

    PYTHONPATH=. .venv/bin/python bench/real_filler.py [--data ../shared/data] [--only ID,...]
        [--crop-only]

Each item is a stretch of real ordinary footage from ``../shared/data/filler/`` or ``moments/``
(traffic with its sound, people walking a corridor, a conveyor, a person at a doorway) into which
zero, one or two DAVIS-2016 sequences are cut, replacing the filler's frames there. The filler's
sound runs on under the action, so the soundtrack gives nothing away. Landscape items are
854x480 with a 9:16 target; portrait items are 270x480 (a fixed 9:16 window of the DAVIS frame
around its subject, and of the filler) with a 16:9 target. One item is over 60 s.

Ground truth per action frame is the fixed-size target-ratio window centred on the subject's mask
box (restricted to the portrait window), clamped to the frame, as ``crop_eval.py`` defines it;
items without an action have an empty ground truth. The DAVIS sequences last 1.7-4.2 s, so the
truth is short against the filler, as a real highlight is.

The set is built once into ``bench/out/real_filler/`` (rebuilt when the item list changes), then
``rhl batch`` and ``rhl eval`` (the competition metric) run on it, and in the same run the
reference lines: a centre crop on every frame, and a centre crop on exactly the true frames. A
per-item table shows the true extents beside the kept ones.

``--crop-only`` isolates the framing from the picking: it grounds exactly the true frames of
every item that has an action (``ground_frames``, as ``rhl batch`` does, without cuts since the
true frames are one shot) and reports, per item, the competition F on those frames (the crop IoU
alone decides it) and the mean offset of our window from the true one along each axis.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from _runner import RHL, centre_crops, ffmpeg, fpr_x100, print_methods, run_batch, window_at

from retrieval_hl.competition.format import VideoPrediction, load_ground_truth, load_predictions
from retrieval_hl.competition.metric import evaluate_files
from retrieval_hl.reframe.window import fixed_window_size

OUT = Path(__file__).parent / "out" / "real_filler"
FPS = 24
LAND = (854, 480)
PORT = (270, 480)

TRAFFIC = "filler/car-detection.mp4"
CORRIDOR = "filler/one-by-one-person-detection.mp4"
CONVEYOR = "filler/bottle-detection.mp4"
DOORWAY = "moments/Y1HGC.mp4"


@dataclass(frozen=True)
class Item:
    """One benchmark video: ``length_s`` of ``filler`` from ``start_s``, with DAVIS sequences
    cut in at the given seconds."""

    video_id: str
    filler: str
    start_s: float
    length_s: float
    actions: tuple[tuple[str, float], ...] = ()
    portrait: bool = False


ITEMS = (
    Item("traffic_swan", TRAFFIC, 0, 30, (("blackswan", 12.4),)),
    Item("corridor_camel", CORRIDOR, 0, 45, (("camel", 20.7),)),
    Item("conveyor_twirl", CONVEYOR, 2, 35, (("dance-twirl", 10.3),)),
    Item("doorway_dog", DOORWAY, 0, 30, (("dog", 18.6),)),
    Item("corridor_long_two", CORRIDOR, 50, 80, (("breakdance", 12.2), ("motocross-jump", 58.5))),
    Item("traffic_two", TRAFFIC, 0, 30, (("kite-surf", 5.6), ("car-roundabout", 19.3))),
    Item("conveyor_two", CONVEYOR, 0, 38, (("libby", 8.8), ("parkour", 27.45))),
    Item("traffic_none", TRAFFIC, 0, 30),
    Item("corridor_none", CORRIDOR, 0, 50),
    Item("doorway_none", DOORWAY, 0, 30),
    Item("p_corridor_parkour", CORRIDOR, 60, 40, (("parkour", 14.3),), portrait=True),
    Item("p_traffic_two", TRAFFIC, 0, 30, (("dance-twirl", 6.55), ("libby", 20.2)), portrait=True),
    Item("p_doorway_breakdance", DOORWAY, 0, 30, (("breakdance", 16.7),), portrait=True),
    Item("p_conveyor_none", CONVEYOR, 5, 30, portrait=True),
)


def has_audio(path: Path) -> bool:
    from indexer.probe import probe_video

    return probe_video(path).has_audio


def portrait_x0(box_cx: np.ndarray) -> int:
    """Left edge of the fixed 9:16 window around the subject's range of centres."""
    centre = (float(box_cx.min()) + float(box_cx.max())) / 2
    return int(round(min(max(centre - PORT[0] / 2, 0), LAND[0] - PORT[0])))


def subject_boxes(davis: Path, seq: str, x0: int, width: int) -> list[tuple[int, int, int, int]]:
    """Tight mask box per frame within columns ``x0 .. x0 + width`` (x relative to ``x0``)."""
    z = np.load(davis / f"{seq}.masks.npz")
    masks = np.unpackbits(z["packed"], axis=-1)[..., : int(z["shape"][2])].astype(bool)
    boxes, last = [], (0, 0, width, masks.shape[1])
    for m in masks[:, :, x0 : x0 + width]:
        ys, xs = np.nonzero(m)
        if len(xs):
            last = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1))
        boxes.append(last)  # a frame where the subject left the window keeps its last box
    return boxes


def build_item(item: Item, data: Path, vids: Path) -> tuple[dict, str]:
    """Write one item's video; return its index entry and ground-truth line."""
    davis = data / "davis16"
    ann = json.loads((davis / "annotations.json").read_text())
    W, H = PORT if item.portrait else LAND
    ratio = (16, 9) if item.portrait else (9, 16)
    n_total = int(round(item.length_s * FPS))
    filler = data / item.filler
    placed, x0s = [], []
    for seq, at_s in item.actions:
        a = int(round(at_s * FPS))
        n = ann[seq]["n_frames"]
        boxes = np.array(ann[seq]["subject_boxes_xywh"], dtype=float)
        x0 = portrait_x0(boxes[:, 0] + boxes[:, 2] / 2) if item.portrait else 0
        placed.append((seq, a, n))
        x0s.append(x0)
    out = vids / f"{item.video_id}.mp4"
    if not out.exists():
        k = len(placed)
        graph = [f"[0:v]trim=start={item.start_s}:duration={item.length_s + 2},"
                 f"setpts=PTS-STARTPTS,fps={FPS},scale={W}:{H}:force_original_aspect_ratio="
                 f"increase,crop={W}:{H},setsar=1,split={k + 1}" + "".join(
                     f"[f{i}]" for i in range(k + 1))]
        parts, begin = [], 0
        for i, ((_seq, a, n), x0) in enumerate(zip(placed, x0s, strict=True)):
            graph.append(f"[f{i}]trim=start_frame={begin}:end_frame={a},setpts=PTS-STARTPTS[p{i}]")
            crop = f"crop={W}:{H}:{x0}:0," if item.portrait else ""
            graph.append(f"[{i + 1}:v]{crop}setsar=1,setpts=PTS-STARTPTS[d{i}]")
            parts += [f"[p{i}]", f"[d{i}]"]
            begin = a + n
        graph.append(f"[f{k}]trim=start_frame={begin}:end_frame={n_total},"
                     f"setpts=PTS-STARTPTS[p{k}]")
        parts.append(f"[p{k}]")
        graph.append(f"{''.join(parts)}concat=n={len(parts)}:v=1:a=0[v]")
        args = ["-i", str(filler)]
        for seq, _a, _n in placed:
            args += ["-i", str(davis / ann[seq]["video"])]
        maps = ["-map", "[v]"]
        if has_audio(filler):
            graph.append(f"[0:a]atrim=start={item.start_s}:duration={n_total / FPS},"
                         "asetpts=PTS-STARTPTS[a]")
            maps += ["-map", "[a]", "-c:a", "aac", "-b:a", "96k"]
        ffmpeg(*args, "-filter_complex", ";".join(graph), *maps, "-c:v", "libx264",
               "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-r", str(FPS),
               str(out))
    cw, ch = fixed_window_size(W, H, ratio)
    rows = []
    for (seq, a, _n), x0 in zip(placed, x0s, strict=True):
        if item.portrait:
            boxes = subject_boxes(davis, seq, x0, W)
        else:
            boxes = [tuple(b) for b in ann[seq]["subject_boxes_xywh"]]
        for f, (x, y, w, h) in enumerate(boxes):
            rows.append(window_at(a + f, x + w / 2, y + h / 2, (W, H), (cw, ch)))
    entry = {"video_id": item.video_id, "targetRatioWH": list(ratio)}
    return entry, VideoPrediction.from_crop_boxes(item.video_id, ratio, rows).to_json_line()


def build(data: Path, items: tuple[Item, ...]) -> tuple[Path, Path, Path]:
    """Write the videos, index.json and gt.jsonl (cached; rebuilt when the item list changes)."""
    vids = OUT / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    spec = hashlib.sha1(json.dumps([asdict(i) for i in items]).encode()).hexdigest()
    stamp = OUT / "spec.sha1"
    if not stamp.exists() or stamp.read_text() != spec:
        for old in vids.glob("*.mp4"):
            old.unlink()
    index, gt = [], []
    for item in items:
        entry, line = build_item(item, data, vids)
        index.append(entry)
        gt.append(line)
    stamp.write_text(spec)
    (OUT / "index.json").write_text(json.dumps(index))
    (OUT / "gt.jsonl").write_text("\n".join(gt) + "\n")
    return OUT / "index.json", OUT / "gt.jsonl", vids


def runs(frames: list[int]) -> str:
    """Contiguous frame runs as seconds, e.g. ``12.0-15.2 30.1-33.0``."""
    if not frames:
        return "-"
    f = np.array(sorted(set(frames)))
    breaks = np.nonzero(np.diff(f) > 1)[0]
    starts = np.r_[f[0], f[breaks + 1]]
    ends = np.r_[f[breaks], f[-1]] + 1
    return " ".join(f"{a / FPS:.1f}-{b / FPS:.1f}" for a, b in zip(starts, ends, strict=True))


def crop_only(gt_path: Path, vids: Path, ids: set[str]) -> None:
    """Ground exactly the true frames of each item; print the crop IoU and offsets per item."""
    import torch  # noqa: F401  (before decord, see indexer.decode)

    from indexer.probe import probe_video
    from retrieval_hl.competition.metric import iou_xyw
    from retrieval_hl.reframe.crops import ground_frames

    truth = {v: r for v, r in load_ground_truth(gt_path).items() if v in ids and r.rows}
    lines = []
    print(f"{'item':22s} {'IoU':>6s} {'dx mean':>8s} {'dy mean':>8s} {'|dx|':>6s} {'|dy|':>6s}")
    for vid, rows in truth.items():
        info = probe_video(vids / f"{vid}.mp4", vid)
        frames = [r.frame for r in rows.rows]
        boxes = ground_frames(info, frames, rows.ratio_wh)
        ours = np.array([[b.x_px, b.y_px, b.w_px] for b in boxes], dtype=float)
        true = np.array([r.box for r in rows.rows], dtype=float)
        iou = iou_xyw(ours, true, rows.ratio_wh)
        d = ours[:, :2] - true[:, :2]
        print(f"{vid:22s} {iou.mean():6.3f} {d[:, 0].mean():8.1f} {d[:, 1].mean():8.1f} "
              f"{np.abs(d[:, 0]).mean():6.1f} {np.abs(d[:, 1]).mean():6.1f}")
        lines.append(VideoPrediction.from_crop_boxes(vid, rows.ratio_wh, boxes).to_json_line())
    pred = OUT / "crop_only.jsonl"
    pred.write_text("".join(x + "\n" for x in lines))
    sub = OUT / "crop_only_gt.jsonl"
    sub.write_text("".join(x + "\n" for x in gt_path.read_text().splitlines()
                           if json.loads(x)["video_id"] in truth))
    rep = evaluate_files(sub, pred)
    centre = evaluate_files(sub, centre_crops(sub, vids, True))
    print(f"\n{'crop on the true frames':28s} {'F x100':>7s}")
    print(f"{'ours (ground_frames)':28s} {rep.mean_f_x100:7.2f}")
    print(f"{'centre crop':28s} {centre.mean_f_x100:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--only", default=None, help="Comma-separated item ids (a quick subset).")
    ap.add_argument("--crop-only", action="store_true",
                    help="Crop the true frames only (no picking); IoU and offsets per item.")
    args = ap.parse_args()
    items = ITEMS
    if args.only:
        keep = set(args.only.split(","))
        items = tuple(i for i in ITEMS if i.video_id in keep)
    index, gt, vids = build(Path(args.data), ITEMS)
    if args.crop_only:
        crop_only(gt, vids, {i.video_id for i in items})
        return
    if args.only:
        sub = OUT / "subset"
        sub.mkdir(exist_ok=True)
        ids = {i.video_id for i in items}
        index = sub / "index.json"
        index.write_text(json.dumps([e for e in json.loads((OUT / "index.json").read_text())
                                     if e["video_id"] in ids]))
        lines = (OUT / "gt.jsonl").read_text().splitlines()
        gt = sub / "gt.jsonl"
        gt.write_text("".join(x + "\n" for x in lines if json.loads(x)["video_id"] in ids))
    pred = index.parent / "ours.jsonl"
    pred.unlink(missing_ok=True)
    cmd, wall = run_batch(index, vids, pred)
    ev = subprocess.run([*RHL, "eval", str(gt), str(pred), "--videos", str(vids), "--json"],
                        check=True, capture_output=True, text=True).stdout
    ours = json.loads(ev)
    rows = {
        "centre crop, every frame": evaluate_files(gt, centre_crops(gt, vids, OUT, False)),
        "centre crop, true frames": evaluate_files(gt, centre_crops(gt, vids, OUT, True)),
    }
    truth, got = load_ground_truth(gt), load_predictions(pred)
    print(f"command: {' '.join(cmd[1:])}  ({wall:.1f} s)")
    print(f"\n{'item':22s} {'F':>5s} {'P':>5s} {'R':>5s}  {'true extent (s)':24s} kept (s)")
    for v in ours["videos"]:
        vid = v["video_id"]
        t = runs([r.frame for r in truth[vid].rows])
        p = runs([r.frame for r in got[vid].rows]) if vid in got else "-"
        print(f"{vid:22s} {100 * v['f']:5.1f} {100 * v['precision']:5.1f} "
              f"{100 * v['recall']:5.1f}  {t:24s} {p}")
    p = 100 * np.mean([v["precision"] for v in ours["videos"]])
    r = 100 * np.mean([v["recall"] for v in ours["videos"]])
    methods = {"ours (rhl batch, rhl eval)": (ours["mean_f_x100"], p, r)}
    print_methods(methods | {name: fpr_x100(rep) for name, rep in rows.items()}, 28)


if __name__ == "__main__":
    main()
