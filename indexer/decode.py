"""Decode a low-resolution proxy of chosen frames, in chunks, once for every consumer.

``decode_proxy`` is the one decoding loop: every consumer of frames (embedding and shots,
signals, grounding, the library) is a ``FrameSink`` fed from it, and sinks that ride along the
same pass share one decode. A reader yields the chosen frames full size, as decoded;
``proxy_chunks`` scales each straight to the proxy size of every sink that wants it, with exact
colour where a model wants its own preprocessing (see there). Memory stays flat however long the
video is: ``FrameChunk``s of at most ``CHUNK_FRAMES`` proxy frames per proxy, and nothing else.
Readers sit behind one interface (decord2 first, PyAV as the fallback).

``torch`` is imported before ``decord`` on purpose: decord2 pulls in an NVBLAS shim that
segfaults when it loads first.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import av
import numpy as np
import torch  # before decord, see module docstring

from indexer.models import VideoInfo
from indexer.threads import torch_threads
from rhl_common.errors import VideoOpenError

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_SHORT_SIDE_PX = 224
CHUNK_FRAMES = 32
DECORD_BATCH = 8  # full-size frames decord holds at once
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


ProxyKey = tuple[tuple[int, int], bool]
"""A proxy: (w, h) in display orientation, and whether its colour is exact (``proxy_chunks``)."""


def proxy_chunks(
    info: VideoInfo,
    frames: Iterator[tuple[int, av.VideoFrame]],
    wanted_by_key: Mapping[ProxyKey, Container[int] | None],
    chunk_size: int,
) -> Iterator[dict[ProxyKey, FrameChunk]]:
    """Scale full-size frames straight to each proxy that wants them, in chunks.

    Exact colour (a model's input): converted to RGB at full size and only then scaled, in RGB,
    bicubic with antialiasing, once (``resize_like_pil``): open_clip's own preprocessing, PIL's
    bicubic resize of the full-size RGB frame, to within one level (``bench/preprocess_match.py``
    on 96 real frames: normalised tensors at most 0.029 apart, embedding cosine 1.00000 with
    random weights; 0.131 and 0.99998 with swscale's bicubic RGB scaling). swscale's scaled yuv->rgb
    conversion is about one grey level off, and resizing a larger proxy again blurs: together
    they brought the embedding cosine to 0.9975 (``bench/preprocess_match.py``).
    Otherwise (measurements such as the signal meter's): converted and scaled in one swscale
    step with the area filter, which does not alias when shrinking: a fifth of the CPU a frame
    (the two decode stages of ``bench/cpu_profile.py --minutes 10``: 56 -> 45 CPU-s).

    Args:
        info: The probed video.
        frames: ``(index, frame)`` in order, each frame full size as decoded, coded orientation.
        wanted_by_key: Proxy -> the indices wanted at it (``None``: all of them).
        chunk_size: Source frames per yielded chunk.

    Yields:
        Per chunk of source frames, a ``FrameChunk`` for each proxy that wants some of them.
    """
    got: dict[ProxyKey, tuple[list[int], list[np.ndarray]]] = {}
    n = 0
    for i, frame in frames:
        rgb = None  # the exact full-size conversion, made once for all exact proxies
        for (size, exact), want in wanted_by_key.items():
            if want is None or i in want:
                idx, arr = got.setdefault((size, exact), ([], []))
                idx.append(i)
                w, h = _decode_size(info, size)
                if exact:
                    if rgb is None:
                        rgb = frame.to_ndarray(format="rgb24")
                    arr.append(resize_like_pil(rgb, w, h))
                else:
                    scaled = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
                    arr.append(scaled.to_ndarray())
        n += 1
        if n == chunk_size:
            yield _flush(info, got)
            got, n = {}, 0
    if n:
        yield _flush(info, got)


def resize_like_pil(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """An RGB uint8 frame (h x w x 3) resized to ``width`` x ``height`` as PIL's bicubic resize
    does (antialiased when shrinking), to within one level: torch's uint8 kernel, a port of it.

    On 720p frames shrunk to 398 x 224 (40 frames of the throughput bench's video, one thread):
    2.6 CPU-ms a frame, against 7.9 for swscale's bicubic RGB scaling (mean difference to PIL
    0.12 levels, at most 6) and 7.5 for PIL itself; mean difference to PIL 0.002, at most 1.
    """
    if rgb.shape[:2] == (height, width):
        return rgb
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    # One thread (OpenMP's setting is the calling thread's, so the encoder's is untouched): 1.5
    # CPU-ms a 720p frame against 1.7 with two, whose second thread spins idle after each frame.
    with torch_threads(1):
        y = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", antialias=True)
    return np.ascontiguousarray(y[0].permute(1, 2, 0).numpy())


def _flush(
    info: VideoInfo, got: dict[ProxyKey, tuple[list[int], list[np.ndarray]]]
) -> dict[ProxyKey, FrameChunk]:
    return {
        key: FrameChunk(np.asarray(idx), _to_display(np.stack(arr), info.rotation_deg))
        for key, (idx, arr) in got.items()
    }


class VideoReader(Protocol):
    """Decodes chosen frames of a video, full size in RGB, or as proxy chunks."""

    name: str

    def iter_frames(
        self, info: VideoInfo, indices: Sequence[int]
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """Yield ``(index, frame)`` for ``indices`` (sorted, unique), in order, full size."""
        ...

    def iter_chunks(
        self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int], chunk_size: int
    ) -> Iterator[FrameChunk]:
        """Yield the frames ``indices`` (sorted, unique) resized to ``size`` (w, h), in order,
        with exact colour (see ``proxy_chunks``).
        """
        ...


class _ChunkingReader:
    """``iter_chunks`` on top of a reader's ``iter_frames``, through ``proxy_chunks``."""

    def iter_frames(
        self, info: VideoInfo, indices: Sequence[int]
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """See ``VideoReader.iter_frames``."""
        raise NotImplementedError

    def iter_chunks(
        self, info: VideoInfo, indices: Sequence[int], size: tuple[int, int], chunk_size: int
    ) -> Iterator[FrameChunk]:
        """See ``VideoReader.iter_chunks``."""
        key = (size, True)
        for chunks in proxy_chunks(info, self.iter_frames(info, indices), {key: None}, chunk_size):
            yield chunks[key]


class DecordReader(_ChunkingReader):
    """decord2: fast seeking and batched decode (``DECORD_BATCH`` full-size frames at a time).

    decord2 mis-sizes rotated videos, so ``open_reader`` never picks it for those.
    """

    name = "decord"

    def iter_frames(
        self, info: VideoInfo, indices: Sequence[int]
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """See ``VideoReader.iter_frames``."""
        import decord

        try:
            vr = decord.VideoReader(info.path, num_threads=0)
        except decord.DECORDError as exc:
            raise VideoOpenError(f"decord cannot open {info.path!r}: {exc}") from None
        idx = [int(i) for i in indices if i < len(vr)]
        for start in range(0, len(idx), DECORD_BATCH):
            part = idx[start : start + DECORD_BATCH]
            try:
                batch = vr.get_batch(part).asnumpy()
            except decord.DECORDError as exc:
                first = str(exc).strip().splitlines()[-1][:160]
                msg = f"decord failed at frame {part[0]} of {info.path!r}: {first}"
                raise VideoOpenError(msg) from None
            for i, rgb in zip(part, batch, strict=True):
                yield i, av.VideoFrame.from_ndarray(rgb, format="rgb24")


class FallbackReader(_ChunkingReader):
    """decord first; where it fails (some sizes, damaged streams) PyAV takes over from there."""

    name = "decord+pyav"

    def iter_frames(
        self, info: VideoInfo, indices: Sequence[int]
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """See ``VideoReader.iter_frames``."""
        done = -1
        try:
            for i, frame in DecordReader().iter_frames(info, indices):
                done = i
                yield i, frame
            return
        except VideoOpenError as exc:
            log.info("%s; continuing with PyAV", exc)
        yield from PyAVReader().iter_frames(info, [i for i in indices if i > done])


class PyAVReader(_ChunkingReader):
    """PyAV: decodes in order, from the start, and keeps the chosen frames; robust to odd files.

    Where each packet's frame index is known before decoding it (see ``_FrameIndex``), the
    decoder is told to skip the non-reference frames nobody wants (``skip_frame``, ``NONREF``):
    no other frame is predicted from them, so every chosen frame comes out bit-identical to a
    full decode. Where not (variable frame rate, packets without timestamps) every frame is
    decoded. Should skipping go wrong (a decoded frame not where its timestamp placed it; a
    damaged stream, where frame threads drop the frames they hold when a truncated last packet
    fails), the file is decoded again without skipping, for the frames not yet yielded.
    """

    name = "pyav"

    def __init__(self) -> None:
        self.decoded_frames = 0
        """Frames the decoder put out in the last ``iter_frames`` (skipped ones are not)."""
        self._skipped = False

    def iter_frames(
        self, info: VideoInfo, indices: Sequence[int]
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """See ``VideoReader.iter_frames``."""
        want = set(indices)
        self.decoded_frames, done = 0, -1
        for skip in (not info.variable_frame_rate, False):
            try:
                for i, frame in self._decode(info, want, skip):
                    if i > done:
                        yield i, frame
                        done = i
                return
            except (av.error.FFmpegError, _Unplaced) as exc:
                if not skip or not (self._skipped or isinstance(exc, _Unplaced)):
                    log.warning("decoding stopped early in %s: %s", info.path, exc)
                    return
                log.info("decoding %s while skipping failed (%s): decoding it again without "
                         "skipping, for the frames from %d", info.path, exc, done + 1)

    def _decode(
        self, info: VideoInfo, want: set[int], skip: bool
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        self._skipped = False
        if not want:
            return
        last = max(want)
        try:
            container = av.open(info.path)
        except av.error.FFmpegError as exc:
            raise VideoOpenError(f"PyAV cannot open {info.path!r}: {exc}") from None
        with container:
            stream = container.streams.video[0]
            # Frame threads (libavcodec's choice) though one thread costs less CPU in the reader
            # alone (10-min bench video: 22.0 vs 20.1 CPU-s, medians of 4): in the job it saved
            # none measurable (96.2 vs 96.8 CPU-s) and the wall grew (127 -> 140 s), as the
            # consumers of ``prefetch`` waited on the decode.
            stream.thread_type = "AUTO"
            ctx = stream.codec_context
            index = _FrameIndex(placing=skip)
            for packet, k in index.place(container.demux(stream)):
                # Frame threading takes the setting along with each packet it submits.
                unwanted = k is not None and k not in want
                ctx.skip_frame = "NONREF" if unwanted else "DEFAULT"
                self._skipped |= unwanted
                for frame in packet.decode():
                    self.decoded_frames += 1
                    i = index.of_frame(frame.pts)
                    if i in want:
                        yield i, frame
                    if i >= last:
                        return


class _Unplaced(Exception):
    """A decoded frame is not where its packet's timestamp placed it."""


class _FrameIndex:
    """The index of each frame out of the decoder: its place in output order.

    Frames are counted as they come out, or, while placing, each packet's frame index is known
    before it is decoded: the rank of its timestamp among all the packets', final once
    ``REORDER_PACKETS`` more packets are read (decoders reorder a few frames, at most 16 in
    H.264 and HEVC). That is the count where each packet holds one frame; gaps in the
    timestamps (joined recordings) do not matter, only their order. A frame out of the decoder
    must then carry a placed timestamp, later than the last frame's (else ``_Unplaced``).
    Placing ends at a packet without a timestamp or one read too late to place.
    """

    REORDER_PACKETS = 32

    def __init__(self, placing: bool) -> None:
        self._placing = placing
        self._rank: dict[int, int] = {}  # placed timestamp -> frame index, in timestamp order
        self._ranked = 0
        self._top: int | None = None  # the last timestamp ranked
        self._last = -1  # the last frame out

    def place(self, packets: Iterator[av.Packet]) -> Iterator[tuple[av.Packet, int | None]]:
        """The ``packets``, in the same order, each with its frame's index when placed."""
        pending: deque[av.Packet] = deque()
        heap: list[int] = []
        for packet in packets:
            if packet.size == 0:  # the end (the flush packet): rank what is left
                while heap:
                    self._rank_next(heapq.heappop(heap))
            elif self._placing and packet.pts is not None:
                heapq.heappush(heap, packet.pts)
                if len(heap) > self.REORDER_PACKETS:
                    self._rank_next(heapq.heappop(heap))
            elif self._placing:
                log.info("a packet without a timestamp: decoding every frame from here")
                self._placing = False
            pending.append(packet)
            while pending and (
                not self._placing or pending[0].size == 0 or pending[0].pts in self._rank
            ):
                p = pending.popleft()
                yield p, self._rank.get(p.pts) if self._placing else None

    def _rank_next(self, pts: int) -> None:
        if not self._placing:
            return
        if self._top is not None and pts <= self._top:
            log.info("timestamp %d repeated or read too late: decoding every frame from here", pts)
            self._placing = False
            return
        self._rank[pts], self._top = self._ranked, pts
        self._ranked += 1

    def of_frame(self, pts: int | None) -> int:
        """The index of the next frame out of the decoder, with timestamp ``pts``."""
        i = self._rank.get(pts) if pts is not None else None
        if i is None and self._ranked:  # counting on after placed frames could be off
            raise _Unplaced(f"a decoded frame's timestamp {pts} was not placed")
        if i is None:
            i = self._last + 1
        elif i <= self._last:
            raise _Unplaced(f"decoded frame {i} came out after frame {self._last}")
        while self._rank and (first := next(iter(self._rank))) <= pts:
            del self._rank[first]
        self._last = i
        return i


def prefetch(chunks: Iterator[T], depth: int = 2) -> Iterator[T]:
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
    """Proxy short side it needs; its frames are scaled straight to that size."""
    exact_colour: bool
    """Whether it needs exact colour, as a model's own preprocessing gives (``proxy_chunks``).
    Optional: a sink without the attribute gets exact colour."""

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

    The pass decodes the union of all wanted frames in chunks of ``CHUNK_FRAMES``, one chunk
    ahead in a background thread (``prefetch``); each sink gets the frames at its own proxy
    proxy (``proxy_chunks``), in chunks holding at least the frames it wants.

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
    keys = [(proxy_size(info, s.short_side_px), getattr(s, "exact_colour", True)) for s in sinks]
    wanted_by_key: dict[ProxyKey, set[int]] = {}
    for key, s in zip(keys, sinks, strict=True):
        wanted_by_key.setdefault(key, set()).update(np.asarray(s.wanted, dtype=np.int64).tolist())
    wanted = sorted(set().union(*wanted_by_key.values()))
    frames = open_reader(info, reader, wanted).iter_frames(info, wanted)
    n = 0
    for chunks in prefetch(proxy_chunks(info, frames, wanted_by_key, CHUNK_FRAMES)):
        for key, sink in zip(keys, sinks, strict=True):
            if (chunk := chunks.get(key)) is not None:
                sink.feed(chunk.indices, chunk.frames)
        k = len(set().union(*(c.indices.tolist() for c in chunks.values())))
        n += k
        if progress:
            progress(k)
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
