"""Decode a low-resolution proxy of chosen frames, in chunks, once for every consumer.

``decode_proxy`` is the one decoding loop: every consumer of frames (embedding and shots,
signals, grounding, the library) is a ``FrameSink`` fed from it, and sinks that ride along the
same pass share one decode. Memory stays flat however long the video is: a reader yields
``FrameChunk``s of at most ``CHUNK_FRAMES`` proxy frames and keeps nothing else. Readers sit
behind one interface (decord2 first, PyAV as the fallback).

``torch`` is imported before ``decord`` on purpose: decord2 pulls in an NVBLAS shim that
segfaults when it loads first.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import av
import numpy as np
import torch  # noqa: F401  (must load before decord, see module docstring)

from indexer.models import VideoInfo
from rhl_common.errors import VideoOpenError

log = logging.getLogger(__name__)

DEFAULT_SHORT_SIDE_PX = 224
CHUNK_FRAMES = 32
SEQUENTIAL_STEP_S = 1.0


@dataclass(frozen=True)
class FrameChunk:
    """Proxy frames in order: ``frames[i]`` (RGB uint8, h x w x 3) is frame ``indices[i]``."""

    indices: np.ndarray
    frames: np.ndarray

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be (n, h, w, 3), got {self.frames.shape}")
        if len(self.indices) != len(self.frames):
            raise ValueError("indices and frames differ in length")


def proxy_size(info: VideoInfo, short_side_px: int = DEFAULT_SHORT_SIDE_PX) -> tuple[int, int]:
    """Proxy (width, height) in display orientation: short side ``short_side_px``, even sizes."""
    scale = min(1.0, short_side_px / min(info.width_px, info.height_px))
    w = max(2, int(round(info.width_px * scale / 2)) * 2)
    h = max(2, int(round(info.height_px * scale / 2)) * 2)
    return w, h


def _to_display(batch: np.ndarray, rotation_deg: int) -> np.ndarray:
    # The display matrix rotation is counter-clockwise, as np.rot90 with k > 0.
    k = (rotation_deg // 90) % 4
    return np.ascontiguousarray(np.rot90(batch, k=k, axes=(1, 2))) if k else batch


def _decode_size(info: VideoInfo, size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    return (h, w) if info.rotation_deg in (90, 270) else (w, h)


class VideoReader(Protocol):
    """Decodes chosen frames of a video as a proxy, chunk by chunk."""

    name: str

    def iter_chunks(
        self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int], chunk_size: int
    ) -> Iterator[FrameChunk]:
        """Yield the frames ``indices`` (sorted, unique) resized to ``size`` (w, h), in order."""
        ...


class DecordReader:
    """decord2: fast seeking and batched decode with scaling inside the decoder.

    decord2 mis-sizes rotated videos, so ``open_reader`` never picks it for those.
    """

    name = "decord"

    def iter_chunks(
        self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int], chunk_size: int
    ) -> Iterator[FrameChunk]:
        """See ``VideoReader.iter_chunks``."""
        import decord

        w, h = _decode_size(info, size)
        try:
            vr = decord.VideoReader(info.path, width=w, height=h, num_threads=0)
        except decord.DECORDError as exc:
            raise VideoOpenError(f"decord cannot open {info.path!r}: {exc}") from None
        idx = np.asarray([i for i in indices if i < len(vr)], dtype=np.int64)
        for start in range(0, len(idx), chunk_size):
            part = idx[start : start + chunk_size]
            try:
                batch = vr.get_batch(part.tolist()).asnumpy()
            except decord.DECORDError as exc:
                first = str(exc).strip().splitlines()[-1][:160]
                msg = f"decord failed at frame {part[0]} of {info.path!r}: {first}"
                raise VideoOpenError(msg) from None
            yield FrameChunk(part, _to_display(batch, info.rotation_deg))


class FallbackReader:
    """decord first; where it fails (some sizes, damaged streams) PyAV takes over from there."""

    name = "decord+pyav"

    def iter_chunks(
        self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int], chunk_size: int
    ) -> Iterator[FrameChunk]:
        """See ``VideoReader.iter_chunks``."""
        done = -1
        try:
            for chunk in DecordReader().iter_chunks(info, indices, size, chunk_size):
                done = int(chunk.indices[-1])
                yield chunk
            return
        except VideoOpenError as exc:
            log.info("%s; continuing with PyAV", exc)
        rest = [i for i in indices if i > done]
        yield from PyAVReader().iter_chunks(info, rest, size, chunk_size)


class PyAVReader:
    """PyAV: decodes every frame in order and keeps the chosen ones; robust to odd files."""

    name = "pyav"

    def iter_chunks(
        self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int], chunk_size: int
    ) -> Iterator[FrameChunk]:
        """See ``VideoReader.iter_chunks``."""
        w, h = _decode_size(info, size)
        # Bicubic, as decord scales: frames within 0.05 grey levels of decord's on average
        # (bilinear: 0.24), so signals do not depend on which reader a pass took.
        scaled = {"width": w, "height": h, "format": "rgb24", "interpolation": "BICUBIC"}
        wanted = iter(sorted(indices))
        nxt = next(wanted, None)
        got_idx: list[int] = []
        got: list[np.ndarray] = []
        try:
            container = av.open(info.path)
        except av.error.FFmpegError as exc:
            raise VideoOpenError(f"PyAV cannot open {info.path!r}: {exc}") from None
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for i, frame in enumerate(container.decode(stream)):
                    if nxt is None:
                        break
                    if i < nxt:
                        continue
                    got_idx.append(i)
                    got.append(frame.to_ndarray(**scaled))
                    nxt = next(wanted, None)
                    if len(got) == chunk_size:
                        yield FrameChunk(
                            np.asarray(got_idx), _to_display(np.stack(got), info.rotation_deg)
                        )
                        got_idx, got = [], []
            except av.error.FFmpegError as exc:
                log.warning("decoding stopped early in %s: %s", info.path, exc)
        if got:
            yield FrameChunk(np.asarray(got_idx), _to_display(np.stack(got), info.rotation_deg))


def prefetch(chunks: Iterator[FrameChunk], depth: int = 2) -> Iterator[FrameChunk]:
    """Decode ahead in a background thread while the caller works on the previous chunk.

    Decoders and torch both release the GIL, so decode and embedding overlap on two cores.
    Errors in the decoder thread are re-raised in the caller.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for c in chunks:
                if stop.is_set():
                    return
                q.put(c)
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    t = threading.Thread(target=work, name="rhl-decode", daemon=True)
    t.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass


class FrameSink(Protocol):
    """A consumer of proxy frames from one decoding pass (see ``decode_proxy``)."""

    wanted: np.ndarray
    """Source frame indices it wants, sorted and unique."""
    short_side_px: int
    """Proxy short side it needs; the pass decodes at the largest any sink asks for."""

    def feed(self, indices: np.ndarray, frames_rgb: np.ndarray) -> None:
        """Take the frames of this chunk it wants (it filters by ``wanted`` itself)."""
        ...


def decode_proxy(
    info: VideoInfo,
    sinks: Sequence[FrameSink],
    reader: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decode the frames the ``sinks`` want, once, and feed every chunk to every sink, in order.

    The pass decodes the union of all wanted frames at the largest proxy size asked for, in
    chunks of ``CHUNK_FRAMES``, one chunk ahead in a background thread (``prefetch``).

    Args:
        info: The probed video.
        sinks: The consumers, fed in this order for each chunk.
        reader: Reader back-end: ``auto``, ``decord`` or ``pyav`` (see ``open_reader``).
        progress: Called with the number of frames of each chunk once every sink has it.

    Returns:
        The number of frames decoded (fewer than wanted when the stream ends early).

    Raises:
        ConfigError: ``reader`` is unknown.
        VideoOpenError: The video cannot be opened or decoded.
    """
    if not sinks:
        return 0
    wanted = np.unique(np.concatenate([np.asarray(s.wanted, dtype=np.int64) for s in sinks]))
    size = proxy_size(info, max(s.short_side_px for s in sinks))
    n = 0
    chunks = open_reader(info, reader, wanted).iter_chunks(info, wanted, size, CHUNK_FRAMES)
    for chunk in prefetch(chunks):
        for sink in sinks:
            sink.feed(chunk.indices, chunk.frames)
        n += len(chunk.indices)
        if progress:
            progress(len(chunk.indices))
    return n


READERS: dict[str, type[VideoReader]] = {"decord": DecordReader, "pyav": PyAVReader}


def open_reader(
    info: VideoInfo, backend: str = "auto", indices: Sequence[int] | None = None
) -> VideoReader:
    """Pick a reader: ``decord`` (default) or ``pyav``; ``auto`` falls back to PyAV when needed.

    ``auto`` also takes PyAV for a dense pass (``indices`` at least one frame per
    ``SEQUENTIAL_STEP_S`` on average, as the indexing and signal passes are): every frame has
    to be decoded to reach them anyway, PyAV does that in order with less CPU than decord's
    seek-and-skip, and it spares the process decord's CUDA libraries (about 400 MiB resident).

    Raises:
        ConfigError: ``backend`` is not one of ``auto``, ``decord``, ``pyav``.

    """
    from rhl_common.errors import ConfigError

    if backend not in ("auto", *READERS):
        raise ConfigError(f"unknown reader backend {backend!r}; choose auto, {', '.join(READERS)}")
    if backend != "auto":
        return READERS[backend]()
    if info.rotation_deg:
        log.info("rotated video (%d deg): using the PyAV reader", info.rotation_deg)
        return PyAVReader()
    if info.variable_frame_rate:
        log.info("variable frame rate: using the PyAV reader (frames counted in decode order)")
        return PyAVReader()
    if indices is not None and len(indices) * SEQUENTIAL_STEP_S * info.fps >= info.n_frames:
        return PyAVReader()
    return FallbackReader()
