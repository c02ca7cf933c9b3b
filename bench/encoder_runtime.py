"""Encoder runtimes on this CPU: CPU time, memory and agreement with fp32 of the same model.

    .venv/bin/python bench/encoder_runtime.py [--arch ViT-B-32] [--frames 64] [--batch 32]
        [--repeat 3] [--skip-onnx] [--skip-rss]

Runs the open_clip towers (seeded random weights: this checks the runtime, not trained
accuracy) on real frames from ../shared/data (proxy size, the encoder's own preprocessing) and on
the highlight vocabulary's English texts, under each runtime:

- ``fp32``: ``OpenClipEncoder(bf16=False)``;
- ``bf16 autocast, fp32 weights``: the encoder before its weights were kept in bf16 (fp32 weights
  resident, re-cast by autocast at every call);
- ``bf16 weights``: ``OpenClipEncoder(bf16=True)``, the default on CPUs with native bf16;
- ``int8 dynamic (Linear)``: ``torch.ao`` dynamic quantization of the fp32 model's Linear layers;
- ``onnxruntime int8 (product path)``: ``OpenClipEncoder()`` as the main job builds it, its image
  tower on ONNX Runtime int8 (:mod:`indexer.encoders.onnx_image`: one image per run; exported into
  the user cache on first use, checked against torch on its first batch), its text tower torch's;
- ONNX Runtime fp32 and dynamic int8 of the image tower at batches of ``--batch`` (a bare session
  of this run's export; ``--skip-onnx`` to leave them out).

Rows give process CPU-ms per image (texts: per text) on ``default_threads()`` torch threads, best
of ``--repeat`` interleaved rounds, its ratio to the fp32 row of this run, the lowest cosine of any
embedding with its fp32 embedding (a runtime is usable at >= 0.99), and the MiB of the model's
tensors. Unless ``--skip-rss``, each encoder runtime is also built in a fresh process of its own,
which reports its resident set before and after the build, its peak during the build, its peak
and resident set after encoding the frames and texts, and the build's CPU and wall seconds; the
product path is built twice more, in a fresh cache each time: the one-time export's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PRODUCT = "onnxruntime int8 (product path)"
FIRST_EXPORT = "onnxruntime int8, first use (export)"
ENCODER_RUNTIMES = ("fp32", "bf16 autocast, fp32 weights", "bf16 weights", PRODUCT)


def real_frames(n: int) -> np.ndarray:
    """``n`` frames of the shared DAVIS clips at the encoder's proxy size, 224 x 224 crops."""
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


def vocabulary_texts() -> list[str]:
    """The English texts of every highlight vocabulary item (what the text tower embeds)."""
    from retrieval_hl.describe.vocab import load_vocabulary

    return list(dict.fromkeys(item.en for item in load_vocabulary()))


def build(runtime: str, arch: str, batch: int):  # noqa: ANN201
    """An ``OpenClipEncoder`` running ``runtime`` (one of ``ENCODER_RUNTIMES`` or int8)."""
    from indexer.encoders.base import EncoderSpec
    from indexer.encoders.open_clip import OpenClipEncoder

    spec = EncoderSpec("open_clip", arch, "random")
    if runtime in (PRODUCT, FIRST_EXPORT):
        return OpenClipEncoder(spec, batch_size=batch)
    enc = OpenClipEncoder(spec, batch_size=batch, bf16=runtime == "bf16 weights",
                          int8_images=False)
    if runtime == "bf16 autocast, fp32 weights":
        enc.bf16 = True  # autocast in _compute, over the fp32 weights it was built with
    elif runtime == "int8 dynamic (Linear)":
        enc.model = torch.ao.quantization.quantize_dynamic(
            enc.model, {torch.nn.Linear}, dtype=torch.qint8
        )
        for block in enc.model.transformer.resblocks:  # open_clip's hook for int8 Linears
            block.mlp.c_fc.int8_original_dtype = torch.float32
    return enc


def tensor_mib(model: torch.nn.Module) -> float:
    """MiB held by the model's parameters, buffers and packed (quantized) weights."""
    tensors = [
        t for v in model.state_dict().values() for t in (v if isinstance(v, tuple) else (v,))
        if isinstance(t, torch.Tensor)
    ]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def memory_mib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak) of this process, MiB. Not ``ru_maxrss``: a
    child started by ``subprocess`` reports its parent's peak there.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def measure_rss(runtime: str, arch: str, inputs: Path, batch: int) -> dict[str, float]:
    """Build ``runtime`` in this (fresh) process: RSS before and after the build, peak during it,
    and peak and RSS after encoding the frames and texts saved in ``inputs`` by the parent.
    """
    x = np.load(inputs / "frames.npy")
    texts = json.loads((inputs / "texts.json").read_text())
    before = memory_mib("VmRSS")
    c0, w0 = time.process_time(), time.perf_counter()
    enc = build(runtime, arch, batch)
    cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - w0
    built, peak_build = memory_mib("VmRSS"), memory_mib("VmHWM")
    enc.encode_images(x)
    enc._encode_texts(texts)
    return {"before": before, "built": built, "peak_build": peak_build,
            "peak": memory_mib("VmHWM"), "after": memory_mib("VmRSS"), "cpu_s": cpu_s,
            "wall_s": wall_s, "image_runtime": enc.image_runtime}


def cpu_ms_per_item(fn: Callable[[], np.ndarray], n: int) -> tuple[float, np.ndarray]:
    """Process CPU-ms per item of one call of ``fn`` (over ``n`` items), and its result."""
    t0 = time.process_time()
    z = fn()
    return (time.process_time() - t0) * 1000 / n, z


def onnx_runs(enc, x: np.ndarray, batch: int) -> dict[str, Callable[[], np.ndarray]]:  # noqa: ANN001
    """ONNX Runtime (fp32, and dynamic int8 as the product exports it) sessions of ``enc``'s
    image tower.
    """
    import onnxruntime as ort

    from indexer.encoders.onnx_image import export_int8

    tmp = tempfile.TemporaryDirectory()  # the sessions hold the graphs: removed once built
    fp32 = Path(tmp.name) / "visual.onnx"
    sample = enc._preprocess(x[:2])
    torch.onnx.export(enc.model.visual, (sample,), str(fp32), input_names=["x"],
                      output_names=["z"], dynamic_axes={"x": {0: "n"}, "z": {0: "n"}},
                      dynamo=False)
    int8 = Path(tmp.name) / "visual.int8.onnx"
    export_int8(enc.model.visual, int8, enc.image_size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = enc.threads
    sessions = {
        name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8 dynamic", int8))
    }
    tmp.cleanup()
    runs = {}
    for name, sess in sessions.items():

        def run(s=sess) -> np.ndarray:  # noqa: ANN001
            z = np.concatenate([
                s.run(None, {"x": enc._preprocess(x[i : i + batch]).numpy()})[0]
                for i in range(0, len(x), batch)
            ])
            return z / np.linalg.norm(z, axis=1, keepdims=True)

        runs[name] = run
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-of", choices=(*ENCODER_RUNTIMES, FIRST_EXPORT), help=argparse.SUPPRESS)
    ap.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_of:
        print(json.dumps(measure_rss(args.rss_of, args.arch, args.inputs, args.batch)))
        return

    x = real_frames(args.frames)
    texts = vocabulary_texts()
    runtimes = (*ENCODER_RUNTIMES, "int8 dynamic (Linear)")
    encs = {name: build(name, args.arch, args.batch) for name in runtimes}
    images = {name: (lambda e=e: e.encode_images(x)) for name, e in encs.items()}
    if not args.skip_onnx:
        images |= onnx_runs(encs["fp32"], x, args.batch)
    text_runs = {name: (lambda e=e: e._encode_texts(texts)) for name, e in encs.items()}
    threads = encs["fp32"].threads
    print(f"{args.arch}, random weights: {len(x)} real frames at batch {args.batch}, "
          f"{len(texts)} vocabulary texts, {threads} torch threads")

    for fn in (*images.values(), *text_runs.values()):  # warm-up
        fn()
    cpu: dict[tuple[str, str], float] = {}
    out: dict[tuple[str, str], np.ndarray] = {}
    for _ in range(args.repeat):  # interleaved rounds, best of each
        for tower, runs, n in (("image", images, len(x)), ("text", text_runs, len(texts))):
            for name, fn in runs.items():
                ms, out[tower, name] = cpu_ms_per_item(fn, n)
                cpu[tower, name] = min(cpu.get((tower, name), np.inf), ms)

    print(f"{'runtime':34s} {'tower':5s} {'CPU-ms/item':>11s} {'vs fp32':>7s} "
          f"{'min cos':>8s} {'tensors MiB':>11s}")
    for tower, name in cpu:
        ratio = cpu[tower, name] / cpu[tower, "fp32"]
        cos = float(np.min(np.sum(out[tower, name] * out[tower, "fp32"], axis=1)))
        mib = f"{tensor_mib(encs[name].model):11.0f}" if name in encs else f"{'':11s}"
        print(f"{name:34s} {tower:5s} {cpu[tower, name]:11.1f} {ratio:6.2f}x "
              f"{cos:8.5f} {mib}")

    if args.skip_rss:
        return
    inputs = Path(tempfile.mkdtemp())
    np.save(inputs / "frames.npy", x)
    (inputs / "texts.json").write_text(json.dumps(texts))
    print(f"\n{'fresh process per runtime, MiB':36s} {'RSS before':>10s} {'built':>7s} "
          f"{'peak':>7s} {'encoded':>7s} {'RSS after':>9s} {'build CPU-s':>11s} {'wall s':>6s}")
    print("(peak: during the build; encoded: peak after encoding the frames and texts)")
    for name in (*ENCODER_RUNTIMES, FIRST_EXPORT, FIRST_EXPORT):
        cmd = [sys.executable, __file__, "--rss-of", name, "--arch", args.arch,
               "--inputs", str(inputs), "--batch", str(args.batch)]
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "XDG_CACHE_HOME": cache} if name == FIRST_EXPORT else None
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO,
                                 env=env)
        m = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{name:36s} {m['before']:10.0f} {m['built']:7.0f} {m['peak_build']:7.0f} "
              f"{m['peak']:7.0f} {m['after']:9.0f} {m['cpu_s']:11.1f} {m['wall_s']:6.1f}"
              f"  ({m['image_runtime']})")


if __name__ == "__main__":
    main()
