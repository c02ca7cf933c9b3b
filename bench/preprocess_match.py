"""Does the encoder see open_clip's own input tensors on real frames?

    PYTHONPATH=. .venv/bin/python bench/preprocess_match.py [--arch ViT-B-32] [--frames 4]

Ours: exactly what the indexer feeds the image encoder. A ``FrameEmbedder`` (every wanted frame
embedded) is fed by ``decode_proxy`` with each reader the encoder's passes use (``pyav``: dense
passes, in order; ``decord``: sparse ones), in two passes: ``index`` (the embedder alone, as
``rhl index``) and ``highlight`` (a sink at the signal meter's larger proxy size rides along and
wants the same frames, as in ``rhl highlight``). The frames it passes to ``encode_images`` go
through ``OpenClipEncoder``'s own resize and centre crop. open_clip's: its transform for the
model (PIL bicubic resize of the full-size RGB frame, centre crop). For frames of the real
videos in ../shared/data it prints, per video, reader and pass, the largest and mean absolute
difference of the normalised input tensors and the lowest cosine of the two embeddings (random
weights: this checks the inputs the model sees, not trained accuracy). Target: cosine >= 0.999.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


class Recording:
    """The encoder, keeping the frames the indexer passes to it."""

    def __init__(self, encoder) -> None:  # noqa: ANN001
        self.encoder = encoder
        self.dim, self.spec, self.per_frame = encoder.dim, encoder.spec, encoder.per_frame
        self.frames: list[np.ndarray] = []

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """Keep ``frames`` and encode them."""
        self.frames.append(frames.copy())
        return self.encoder.encode_images(frames)


class Wants:
    """A stand-in sink at another proxy size (the signal meter's) wanting the same frames."""

    def __init__(self, wanted: np.ndarray, short_side_px: int) -> None:
        self.wanted, self.short_side_px = wanted, short_side_px

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        """Take nothing."""


def full_frames(path: Path, wanted: np.ndarray) -> list[np.ndarray]:
    """The ``wanted`` frames, full size, RGB, as an application would hand them to open_clip."""
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

    from indexer.decode import decode_proxy
    from indexer.encoders.base import EncoderSpec
    from indexer.encoders.open_clip import OpenClipEncoder
    from indexer.pipeline import FrameEmbedder
    from indexer.probe import probe_video
    from retrieval_hl.signals.meter import ANALYSIS_SHORT_SIDE_PX

    enc = OpenClipEncoder(EncoderSpec("open_clip", args.arch, "random"), bf16=False,
                          int8_images=False)  # torch fp32: the preprocessing alone differs
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
        theirs = torch.stack([theirs_tf(Image.fromarray(f)) for f in full_frames(path, wanted)])
        with torch.no_grad():
            zb = torch.nn.functional.normalize(enc.model.encode_image(theirs), dim=-1)
        for reader in ("pyav", "decord"):
            for name, others in (("index", []), ("highlight", [ANALYSIS_SHORT_SIDE_PX])):
                rec = Recording(enc)
                embedder = FrameEmbedder(wanted, rec)
                decode_proxy(info, [*(Wants(wanted, s) for s in others), embedder], reader)
                vectors = embedder.embeddings()[1]  # the last batch is embedded here
                frames = np.concatenate(rec.frames)
                d = (enc._preprocess(frames) - theirs).abs()
                cos = torch.from_numpy(vectors) @ zb.T
                cos = cos.diagonal()
                worst_max = max(worst_max, float(d.max()))
                means.append(float(d.mean()))
                cosines += cos.tolist()
                print(f"{path.name:20s} {info.width_px}x{info.height_px} {reader:6s} {name:9s} "
                      f"fed {frames.shape[2]}x{frames.shape[1]}  max |d| {float(d.max()):.3f}  "
                      f"mean |d| {float(d.mean()):.4f}  min cosine {float(cos.min()):.5f}",
                      flush=True)
    print(f"all: max |d| {worst_max:.3f} (normalised units), mean |d| {np.mean(means):.4f}, "
          f"min cosine {min(cosines):.5f} over {len(cosines)} frame embeddings")


if __name__ == "__main__":
    main()
