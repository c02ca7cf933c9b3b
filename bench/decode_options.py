"""Cheaper decode for the coarse pass: the ways to get the indexing pass's frames, against a plain
``ffmpeg -f null`` decode of the same file, all in this process.

    PYTHONPATH=. .venv/bin/python bench/decode_options.py [--seconds 120] [--start-s 100]

The file is a piece (stream copy) of ``throughput.py``'s 10-minute real-footage video. The
frames wanted are those of one ``rhl highlight`` pass: the signal meter's 4 fps and the
indexer's 2 fps, at the meter's 240 px proxy; the ``decode_proxy`` rows are the pass itself,
the meter's frames at 240 px and the encoder's at its own 224 px. Printed per way: wall and CPU
seconds (CPU counts ffmpeg's own threads and children; steadier than wall on a shared machine)
and the frames it decoded (``decode_proxy``: the frames it fed). The PyAV reader skips the
non-reference frames nobody wants; its "every frame" rows give it the same file as one of
variable frame rate, where it does not skip (the reader before it skipped). The ``skip_frame``
rows count what the decoder outputs for the whole stream: ``NONREF`` leaves out every
non-reference frame (a sampled frame may be one of them), ``NONKEY`` keeps keyframes only.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (before decord)

sys.path.insert(0, str(Path(__file__).parent))
from throughput import OUT, _ffmpeg, make_video  # noqa: E402

from indexer.decode import (  # noqa: E402
    DEFAULT_SHORT_SIDE_PX,
    DecordReader,
    PyAVReader,
    decode_proxy,
    proxy_size,
)
from indexer.models import VideoInfo  # noqa: E402
from indexer.probe import probe_video  # noqa: E402
from indexer.slicing import sample_frames  # noqa: E402
from retrieval_hl.signals.meter import ANALYSIS_SHORT_SIDE_PX, SAMPLE_FPS  # noqa: E402


def clock(name: str, fn: Callable[[], int]) -> None:
    """Run ``fn`` and print its wall and CPU time (this process and its children)."""
    def cpu() -> float:
        me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    t0, c0 = time.perf_counter(), cpu()
    n = fn()
    print(f"{name:34s} wall {time.perf_counter() - t0:6.1f} s  CPU {cpu() - c0:6.1f} s  "
          f"frames {n}", flush=True)


def pyav_skipping(info: VideoInfo, wanted: np.ndarray, size: tuple[int, int], skip: str):
    """PyAV with the decoder told to skip frames; converts the wanted frames it still outputs."""
    import av

    want = set(wanted.tolist())

    def run() -> int:
        n = 0
        with av.open(info.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.skip_frame = skip
            start = stream.start_time or 0
            for frame in container.decode(stream):
                n += 1
                if round(float((frame.pts - start) * stream.time_base) * info.fps) in want:
                    frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
        return n

    return run


class NullSink:
    """A ``FrameSink`` that wants frames at a size, with exact colour or not, and drops them."""

    def __init__(self, wanted: np.ndarray, short_side_px: int, exact_colour: bool) -> None:
        self.wanted, self.short_side_px, self.exact_colour = wanted, short_side_px, exact_colour

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        """Drop the frames."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--start-s", type=float, default=100.0)
    args = ap.parse_args()
    path = OUT / f"decode_piece_{args.start_s:g}_{args.seconds:g}.mp4"
    if not path.exists():
        _ffmpeg("-ss", f"{args.start_s:g}", "-i", str(make_video(10)), "-t", f"{args.seconds:g}",
                "-c", "copy", str(path))
    info = probe_video(path)
    wanted = np.union1d(sample_frames(info, SAMPLE_FPS), sample_frames(info, 2.0))
    size = proxy_size(info, ANALYSIS_SHORT_SIDE_PX)
    print(f"{path.name}: {info.duration_s:.0f} s, {len(wanted)} frames wanted at {size}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    vfr = info.model_copy(update={"variable_frame_rate": True})  # timestamps not trusted

    def chunks(reader, info: VideoInfo = info) -> Callable[[], int]:  # noqa: ANN001
        def run() -> int:
            n = sum(len(c.indices) for c in reader.iter_chunks(info, wanted, size, 32))
            return getattr(reader, "decoded_frames", n)

        return run

    def proxy(info: VideoInfo) -> Callable[[], int]:
        # As in the main job: the signal meter's frames cheap, the encoder's exact.
        sinks = [NullSink(sample_frames(info, SAMPLE_FPS), ANALYSIS_SHORT_SIDE_PX, False),
                 NullSink(sample_frames(info, 2.0), DEFAULT_SHORT_SIDE_PX, True)]
        return lambda: decode_proxy(info, sinks, "pyav")

    clock("ffmpeg -f null (reference)", lambda: _ffmpeg("-i", str(path), "-f", "null", "-") or 0)
    clock("decord get_batch (scaled)", chunks(DecordReader()))
    clock("PyAV every frame", chunks(PyAVReader(), vfr))
    clock("PyAV skipping (the auto pick)", chunks(PyAVReader()))
    clock("decode_proxy, every frame", proxy(vfr))
    clock("decode_proxy, skipping", proxy(info))
    clock("PyAV skip_frame NONREF", pyav_skipping(info, wanted, size, "NONREF"))
    clock("PyAV skip_frame NONKEY", pyav_skipping(info, wanted, size, "NONKEY"))
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
