"""Image-tower runtimes on this CPU: speed and agreement with fp32 of the same model.

    .venv/bin/python bench/encoder_runtime.py [--arch ViT-B-32] [--frames 64] [--batch 32]

Runs the open_clip image tower (seeded random weights: this checks the runtime, not trained
accuracy) on real frames from ../shared/data (proxy size, the encoder's own preprocessing)
under each runtime: fp32, bf16 autocast, dynamic int8 Linear layers, ONNX Runtime (fp32 and
dynamic int8). Prints images/s, the speed-up over fp32 measured in this run, and the lowest
cosine of any frame's embedding with its fp32 embedding. A runtime is usable at cosine >= 0.99.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def real_frames(n: int) -> np.ndarray:
    from indexer.decode import open_reader, proxy_size
    from indexer.probe import probe_video

    out: list[np.ndarray] = []
    for path in sorted((REPO.parent / "shared" / "data" / "davis16").glob("*.mp4")):
        info = probe_video(path)
        wanted = np.linspace(0, info.n_frames - 1, 8).astype(np.int64)
        for chunk in open_reader(info).iter_chunks(info, wanted, proxy_size(info, 224), 8):
            out += [f[: 224, : 224] for f in chunk.frames if min(f.shape[:2]) >= 224]
        if len(out) >= n:
            break
    return np.stack(out[:n])


def timed(fn, x: torch.Tensor, batch: int, repeat: int = 2) -> tuple[float, np.ndarray]:  # noqa: ANN001
    outs = [fn(x[s : s + batch]) for s in range(0, min(len(x), batch), batch)]  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        outs = [fn(x[s : s + batch]) for s in range(0, len(x), batch)]
        best = min(best, time.perf_counter() - t0)
    z = torch.cat([torch.as_tensor(o).float() for o in outs])
    return len(x) / best, torch.nn.functional.normalize(z, dim=-1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--skip-onnx", action="store_true")
    args = ap.parse_args()
    from indexer.encoders.base import EncoderSpec
    from indexer.encoders.open_clip import OpenClipEncoder

    enc = OpenClipEncoder(EncoderSpec("open_clip", args.arch, "random"), bf16=False)
    visual = enc.model.visual.eval()
    x = enc._preprocess(real_frames(args.frames))
    print(f"{args.arch} image tower, random weights, {len(x)} real frames, batch {args.batch}, "
          f"{torch.get_num_threads()} threads")

    def eager(model, ctx=contextlib.nullcontext):  # noqa: ANN001, ANN202
        @torch.no_grad()
        def run(b: torch.Tensor) -> torch.Tensor:
            with ctx():
                return model(b).float()
        return run

    runs = {
        "fp32": eager(visual),
        "bf16 autocast": eager(visual, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        "int8 dynamic (Linear)": eager(
            torch.ao.quantization.quantize_dynamic(visual, {torch.nn.Linear}, dtype=torch.qint8)
        ),
    }
    if not args.skip_onnx:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = Path(tempfile.mkdtemp())
        fp32 = tmp / "visual.onnx"
        torch.onnx.export(visual, (x[:2],), str(fp32), input_names=["x"], output_names=["z"],
                          dynamic_axes={"x": {0: "n"}, "z": {0: "n"}}, dynamo=False)
        int8 = tmp / "visual.int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8 dynamic", int8)):
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            runs[name] = lambda b, s=sess: s.run(None, {"x": b.numpy()})[0]
    ref_speed = None
    ref = None
    for name, fn in runs.items():
        speed, z = timed(fn, x, args.batch)
        if ref is None:
            ref_speed, ref = speed, z
        cos = float(np.min(np.sum(z * ref, axis=1)))
        print(f"{name:26s} {speed:7.1f} img/s  x{speed / ref_speed:4.2f}  min cosine {cos:.4f}")


if __name__ == "__main__":
    main()
