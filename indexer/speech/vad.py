"""faster-whisper's Silero VAD over a stream of samples: its speech regions, in flat memory.

faster-whisper's ``get_speech_timestamps`` wants the whole track as one array and copies it
twice on the way (padding, then a context column per window): three times 230 MB for an hour
of 16 kHz audio. :class:`StreamingVad` feeds the same ONNX session the same windows, carrying
the model's state and the window context from block to block, so the speech probabilities are
the very same numbers (in smaller batches, see ``BATCH``); :func:`speech_regions` is
faster-whisper's rule that turns them into padded regions (the body of
``faster_whisper.vad.get_speech_timestamps``, faster-whisper 1.1-1.2, MIT), kept apart from the
model so that it needs no audio.
"""

from __future__ import annotations

import numpy as np

WINDOW = 512  # samples per VAD window, as faster-whisper's
CONTEXT = 64  # samples of the previous window each window is given, as faster-whisper's
# Windows per ONNX run. faster-whisper runs 10,000 at once (+130 MiB of activations); the
# model's state is carried from run to run, and the probabilities come out the same bit for bit
# in runs of 100, 512, 1,000 or 10,000 (5.5 min of real audio; the tests compare the regions with
# faster-whisper's on a track longer than 10,000 windows).
BATCH = 1_000


class StreamingVad:
    """Speech probabilities of a 16 kHz mono track fed block by block (any block sizes).

    Holds one batch of windows (``BATCH`` x ``WINDOW`` samples, 2 MB) and one probability
    per window.
    """

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._held: list[np.ndarray] = []
        self._n_held = 0
        self._probs: list[np.ndarray] = []
        self.n_samples = 0
        """Samples fed so far."""

    def feed(self, samples: np.ndarray) -> None:
        """Take the next samples (float32, 16 kHz mono)."""
        self.n_samples += len(samples)
        self._held.append(np.asarray(samples, dtype=np.float32))
        self._n_held += len(samples)
        while self._n_held >= BATCH * WINDOW:
            self._run(BATCH * WINDOW)

    def finish(self) -> np.ndarray:
        """The speech probability of every window, the last one zero-padded (n_windows, 1)."""
        # faster-whisper pads a whole window even when the length is a multiple of one, and
        # zeroes the last CONTEXT samples of the padded track (its context trick): the same here.
        pad = WINDOW - self.n_samples % WINDOW
        self._held.append(np.zeros(pad, dtype=np.float32))
        self._n_held += pad
        tail = np.concatenate(self._held)
        tail[-CONTEXT:] = 0.0
        self._held = [tail]
        while self._n_held:
            self._run(min(self._n_held, BATCH * WINDOW))
        return np.concatenate(self._probs) if self._probs else np.zeros((0, 1), np.float32)

    def _run(self, n: int) -> None:
        buf = np.concatenate(self._held)
        part, rest = buf[:n], buf[n:]
        self._held, self._n_held = [rest], len(rest)
        windows = part.reshape(-1, WINDOW)
        context = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]])
        self._context = windows[-1, -CONTEXT:].copy()
        out, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([context, windows], axis=1), "h": self._h,
                   "c": self._c},
        )
        self._probs.append(out)


def speech_regions(
    speech_probs: np.ndarray, n_samples: int, options: object, sampling_rate: int = 16_000
) -> list[dict]:
    """faster-whisper's speech regions (``{"start", "end"}`` in samples) from the window
    probabilities of a track of ``n_samples``, with its ``VadOptions`` ``options``: the body
    of ``get_speech_timestamps`` after the model has run.
    """
    threshold = options.threshold
    neg_threshold = options.neg_threshold
    min_speech_samples = sampling_rate * options.min_speech_duration_ms / 1000
    speech_pad_samples = sampling_rate * options.speech_pad_ms / 1000
    max_speech_samples = (
        sampling_rate * options.max_speech_duration_s - WINDOW - 2 * speech_pad_samples
    )
    min_silence_samples = sampling_rate * options.min_silence_duration_ms / 1000
    min_silence_samples_at_max_speech = sampling_rate * 98 / 1000
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)

    triggered = False
    speeches: list[dict] = []
    current: dict = {}
    temp_end = 0  # a possible end of the current region (some silence is tolerated)
    prev_end = next_start = 0  # where to split a region that reaches the longest allowed
    for i, prob in enumerate(speech_probs):
        at = WINDOW * i
        if prob >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = at
        if prob >= threshold and not triggered:
            triggered = True
            current["start"] = at
            continue
        if triggered and at - current["start"] > max_speech_samples:
            if prev_end:
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                if next_start < prev_end:  # silence since, not speech again yet
                    triggered = False
                else:
                    current["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:
                current["end"] = at
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue
        if prob < neg_threshold and triggered:
            if not temp_end:
                temp_end = at
            if at - temp_end > min_silence_samples_at_max_speech:
                prev_end = temp_end
            if at - temp_end < min_silence_samples:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech_samples:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
            continue
    if current and n_samples - current["start"] > min_speech_samples:
        current["end"] = n_samples
        speeches.append(current)

    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - speech_pad_samples))
        if i != len(speeches) - 1:
            silence = speeches[i + 1]["start"] - speech["end"]
            if silence < 2 * speech_pad_samples:
                speech["end"] += int(silence // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
            else:
                speech["end"] = int(min(n_samples, speech["end"] + speech_pad_samples))
                speeches[i + 1]["start"] = int(
                    max(0, speeches[i + 1]["start"] - speech_pad_samples)
                )
        else:
            speech["end"] = int(min(n_samples, speech["end"] + speech_pad_samples))
    return speeches
