"""Shared fixtures: small videos generated with ffmpeg's lavfi sources, the tiny test encoder."""

from __future__ import annotations

import io
import logging
import os
import shutil
import sqlite3
import subprocess
import wave
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pytest

from indexer.models import VideoInfo
from rhl_common.ffmpeg import ffmpeg_binary

TINY = "open_clip:rhl-tiny-vit:random"
REPO = Path(__file__).resolve().parents[1]


def shared_data(sub: str) -> Path:
    """A folder of the shared real footage: ``$RHL_SHARED_DATA/sub``, else ``../shared/data/sub``
    next to the repository; the test is skipped, with the reason, when it is absent.
    """
    root = Path(os.environ.get("RHL_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = root / sub
    if not path.is_dir():
        pytest.skip(f"shared data {path} not present (set RHL_SHARED_DATA to its folder)")
    return path


def video_info(seconds: float = 40.0, fps: float = 10.0) -> VideoInfo:
    """A probe result for an imagined 160x120 video, for the pure core's tests."""
    return VideoInfo(path="/x.mp4", video_id="v", width_px=160, height_px=120, fps=fps,
                     n_frames=int(seconds * fps), duration_s=seconds)


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; fail the test with its stderr on error."""
    subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        capture_output=True,
    )


def make_video(
    path: Path,
    seconds: float = 6.0,
    size: str = "160x120",
    fps: int = 10,
    audio: bool = True,
    source: str = "testsrc2",
) -> Path:
    """A lavfi test-pattern video, with a sine tone when ``audio``."""
    args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    ffmpeg(*args, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(fps), "-shortest", str(path))
    return path


def strip_starts_shot(uri: str) -> None:
    """Turn a closed store's payloads into the older format, written before slices carried
    ``starts_shot``.
    """
    kind, path = uri.split(":", 1)
    if kind == "faiss":
        db = sqlite3.connect(Path(path) / "slices" / "store.sqlite")
        with db:
            db.execute("UPDATE points SET payload = json_remove(payload, '$.starts_shot')")
        db.close()
        return
    from qdrant_client import models

    from indexer.stores import open_store

    with open_store(uri) as s:
        s.client.delete_payload("slices", keys=["starts_shot"], points=models.Filter())


def make_cut_video(path: Path, fps: int = 10) -> Path:
    """Three shots with hard cuts at 3 s and 6 s (red / test pattern / blue), 9 s, with audio."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=c=red:size=160x120:rate={fps}:duration=3",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=160x120:rate={fps}:duration=3",
        "-f",
        "lavfi",
        "-i",
        f"color=c=blue:size=160x120:rate={fps}:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:duration=9",
        "-filter_complex",
        "[0:v][1:v][2:v]concat=n=3:v=1:a=0[v]",
        "-map",
        "[v]",
        "-map",
        "3:a",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    )
    return path


@pytest.fixture(autouse=True)
def no_logged_errors(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture):
    """Fail a test that logged an ERROR (ours or a library's, e.g. PySceneDetect's), unless it
    is marked ``logs_errors`` because it provokes one on purpose.
    """
    yield
    if request.node.get_closest_marker("logs_errors"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors:
        pytest.fail(
            "logged an error: " + "; ".join(f"{r.name}: {r.getMessage()}" for r in errors[:3]),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated once per session; tests copy before they modify."""
    d = tmp_path_factory.mktemp("videos")
    out = {
        "plain": make_video(d / "plain.mp4"),
        "cuts": make_cut_video(d / "cuts.mp4"),
        "silent": make_video(d / "silent.mp4", seconds=4, audio=False),
    }
    rot_src = make_video(d / "rot_src.mp4", seconds=2, size="64x32", audio=False, source="testsrc")
    # A display matrix (ffmpeg 6+; the old ``-metadata:s:v rotate=`` is ignored by ffmpeg 7+).
    ffmpeg("-display_rotation", "90", "-i", str(rot_src), "-c", "copy", str(d / "rot.mp4"))
    out["rotated"] = d / "rot.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(d / "audio.m4a")
    )
    out["audio_only"] = d / "audio.m4a"
    return out


@pytest.fixture(scope="session")
def tiny_encoder():
    """The seeded random tiny open_clip model (dim 32)."""
    from indexer.encoders import create_encoder

    return create_encoder(TINY)


# espeak-ng's amplitude (default 100) and pitch (default 50) of an emphasised sentence: about
# 6 dB louder and higher, a raised voice.
EMPHASIS = {"amplitude": 200, "pitch": 80}


def speak(
    text: str, voice: str = "en-us", speed_wpm: int = 160, amplitude: int = 100, pitch: int = 50
) -> tuple[np.ndarray, int]:
    """``text`` spoken by Debian's espeak-ng (``amplitude`` 0-200, ``pitch`` 0-99): int16 mono
    samples and their rate; the test is skipped, with the reason, when espeak-ng is absent.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    out = subprocess.run([exe, "-v", voice, "-s", str(speed_wpm), "-a", str(amplitude),
                          "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(out)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


def make_narration_video(
    path: Path,
    sentences: list[str],
    *,
    gap_s: float = 1.0,
    lead_s: float = 1.0,
    base: Path | None = None,
    voice: str = "en-us",
    size: str = "160x120",
    fps: int = 10,
    emphasised: Collection[int] = (),
) -> list[tuple[float, float]]:
    """A video with ``sentences`` spoken one after another (``gap_s`` of silence between them)
    over ``base`` (looped, its own audio dropped) or a lavfi test pattern; the sentences at the
    indices ``emphasised`` are said louder and higher (``EMPHASIS``).

    Returns:
        Each sentence's audible span (start_s, end_s): where its samples rise above silence.
    """
    pieces, spans, rate, t = [], [], 0, lead_s
    for k, text in enumerate(sentences):
        samples, rate = speak(text, voice, **(EMPHASIS if k in emphasised else {}))
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
        a, b = (loud[0], loud[-1] + 1) if loud.size else (0, len(samples))
        samples = samples[a:b]
        pieces.append(samples)
        spans.append((t, t + len(samples) / rate))
        t += len(samples) / rate + gap_s
    track = np.zeros(int(round((t - gap_s + lead_s) * rate)), dtype=np.int16)
    for samples, (start, _) in zip(pieces, spans, strict=True):
        k = int(round(start * rate))
        track[k : k + len(samples)] = samples
    wav = path.with_suffix(".narration.wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(track.tobytes())
    duration = f"{len(track) / rate:.3f}"
    if base is None:
        video_in = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={duration}"]
    else:
        video_in = ["-stream_loop", "-1", "-i", str(base)]
    ffmpeg(*video_in, "-i", str(wav), "-map", "0:v", "-map", "1:a", "-t", duration,
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
           str(path))
    wav.unlink()
    return spans


@pytest.fixture(autouse=True, scope="session")
def _torch_image_tower():
    """Torch runs the image tower unless a test asks for int8 (``test_onnx_image.py``): with
    random weights the frames of a test pattern tie to within int8's noise, so the pipeline
    tests' retrieval would pick other slices than under torch.
    """
    old = os.environ.get("RHL_INT8_IMAGES")
    os.environ["RHL_INT8_IMAGES"] = "0"
    yield
    if old is None:
        os.environ.pop("RHL_INT8_IMAGES", None)
    else:
        os.environ["RHL_INT8_IMAGES"] = old


@pytest.fixture(autouse=True, scope="session")
def _speech_cache(tmp_path_factory: pytest.TempPathFactory):
    """Transcripts and the joined whisper model go to a temp folder, not the user's cache."""
    old = os.environ.get("RHL_CACHE_DIR")
    os.environ["RHL_CACHE_DIR"] = str(tmp_path_factory.mktemp("rhl-cache"))
    yield
    if old is None:
        os.environ.pop("RHL_CACHE_DIR", None)
    else:
        os.environ["RHL_CACHE_DIR"] = old
