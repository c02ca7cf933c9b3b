"""Does our preprocessing give open_clip's own input tensors on real frames?

    .venv/bin/python bench/preprocess_match.py [--arch ViT-B-32] [--frames 6]

Ours: the decoder scales the frame to the proxy (short side 224), then ``OpenClipEncoder``
resizes (bilinear, antialiased tensor ops) and centre-crops. open_clip's: its own transform for
the model (PIL bicubic resize of the full frame, centre crop). For frames of the real videos in
../shared/data it prints the largest and mean absolute difference of the normalised input
tensors, and the lowest cosine of the image embeddings (random weights: this checks the inputs
the model sees, not trained accuracy).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def full_frames(path: Path, wanted: np.ndarray) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
            if i >= wanted.max():
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--frames", type=int, default=4)
    args = ap.parse_args()
    import open_clip

    from indexer.decode import open_reader, proxy_size
    from indexer.encoders.base import EncoderSpec
    from indexer.encoders.open_clip import OpenClipEncoder
    from indexer.probe import probe_video

    enc = OpenClipEncoder(EncoderSpec("open_clip", args.arch, "random"), bf16=False)
    cfg = enc.model.visual.preprocess_cfg
    keys = ("mean", "std", "interpolation", "resize_mode")
    theirs_tf = open_clip.image_transform(enc.model.visual.image_size, is_train=False,
                                          **{k: v for k, v in cfg.items() if k in keys})
    data = REPO.parent / "shared" / "data"
    videos = [data / "clips" / "juggle.mp4", data / "clips" / "long_jump.mp4",
              *sorted((data / "davis16").glob("*.mp4"))[:3], data / "filler" / "car-detection.mp4"]

    worst_max, means, cosines = 0.0, [], []
    for path in videos:
        if not path.is_file():
            continue
        info = probe_video(path)
        wanted = np.linspace(0, info.n_frames - 1, args.frames + 2)[1:-1].astype(np.int64)
        chunks = open_reader(info).iter_chunks(info, wanted, proxy_size(info, 224), len(wanted))
        ours = enc._preprocess(np.concatenate([c.frames for c in chunks]))
        theirs = torch.stack([theirs_tf(Image.fromarray(f)) for f in full_frames(path, wanted)])
        d = (ours - theirs).abs()
        with torch.no_grad():
            za = torch.nn.functional.normalize(enc.model.encode_image(ours), dim=-1)
            zb = torch.nn.functional.normalize(enc.model.encode_image(theirs), dim=-1)
        cos = (za * zb).sum(-1)
        worst_max = max(worst_max, float(d.max()))
        means.append(float(d.mean()))
        cosines += cos.tolist()
        print(f"{path.name:28s} {info.width_px}x{info.height_px}  max |d| {float(d.max()):.3f}  "
              f"mean |d| {float(d.mean()):.4f}  min cosine {float(cos.min()):.5f}")
    print(f"all: max |d| {worst_max:.3f} (normalised units), mean |d| {np.mean(means):.4f}, "
          f"min cosine {min(cosines):.5f} over {len(cosines)} frames")


if __name__ == "__main__":
    main()
