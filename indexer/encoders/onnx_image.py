"""The open_clip image tower on ONNX Runtime with dynamic int8 weights.

The tower (``model.visual``: patches, transformer, final projection; ``encode_image`` of an
unnormalised embedding) is exported once per model with ``torch.onnx.export`` (in a child
process, whose memory goes when it ends; see :func:`export_int8`), its MatMul weights
quantized to int8 by ``onnxruntime.quantization.quantize_dynamic`` (activations quantized per call),
and the result kept in the user cache (``$XDG_CACHE_HOME/retrieval-hl/onnx-image``), keyed by the
encoder spec, a SHA-1 of the tower's fp32 weights and the torch / onnx / onnxruntime versions.

On ViT-B-32 at one thread (``bench/encoder_runtime.py --skip-onnx --skip-rss``, random weights,
load 4-18) it took 36.5 CPU-ms an image against 55.5 for torch over bf16 weights, lowest cosine
with fp32 0.9998; 44.0 with the patch embedding a Conv and quantized (ConvInteger), in a run of
the same bench beside it. In the main job's CLIP stage (``bench/cpu_profile.py --minutes 10
--cold``, 790 frames) 33.3 CPU-s against 37.6, same highlights.

Trained weights can lose more in int8 than random ones (outlier channels), so an export is not
trusted on its numbers here: the first batches it encodes on the user's machine (at least
:data:`CHECK_FRAMES` frames) are encoded by the torch tower too, and unless every embedding's
cosine with torch's reaches :data:`MIN_COSINE` the export is marked rejected in the cache (torch
runs the tower from then on, in every process); else it is marked accepted and not checked again.
This checks the int8 runtime against the torch runtime of the same weights, on real frames; it
says nothing about the model's accuracy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from indexer.encoders.base import quiet_root_logger
from rhl_common.atomic import atomic_path, write_atomic
from rhl_common.errors import EncoderError
from rhl_common.paths import cache_dir

log = logging.getLogger(__name__)

#: Lowest cosine of an int8 embedding with the torch tower's for the export to be kept (issue 14).
MIN_COSINE = 0.99
#: Frames compared with the torch tower before an export is accepted (the main job's first batch).
CHECK_FRAMES = 16
#: The ops whose weights are quantized: the MatMuls (attention and MLP projections, and the
#: patch embedding, exported as one: :class:`PatchMatMul`). Not Conv: ORT runs it as ConvInteger,
#: which cost more than the fp32 Conv it replaces (ViT-B-32, one thread: 45.8 vs 38.8 CPU-ms an
#: image with the patch Conv left fp32).
QUANTIZED_OPS = ("MatMul",)
# Bump when the exported graph or the status file changes meaning.
_FORMAT = 3


def weights_sha1(module: torch.nn.Module) -> str:
    """SHA-1 of ``module``'s state dict: names, dtypes, shapes and bytes, in order."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's deprecation warnings and the quantizer's advice on the root log."""
    with quiet_root_logger(logging.ERROR), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class OnnxImageTower:
    """An ONNX Runtime int8 session of an image tower, and its acceptance state in the cache.

    The graph gives the projected pooled embedding (``run``) and, for a ViT, the unprojected patch
    tokens too (``tokens``, for relevance maps), so the torch tower can be freed once accepted.
    Images go through one at a time: dynamic quantization scales the activations by their range
    over the whole input, so in a batch a frame's vector would depend on the other frames; one at
    a time it depends on that frame alone (``Encoder.per_frame``). It costs CPU: batches of 8 took
    30.6 CPU-ms an image against 40.2 (ViT-B-32, one thread). Quantizing each token's row on its
    own would keep a batch's frames apart, but ORT's MatMulInteger takes one zero point per
    tensor: symmetric int8 rows (zero point 128) took 35.2 at batches of 8, lowest cosine with
    fp32 0.9985 against 0.9998 (and 44.4 at batches of 32, against 42.5 one at a time, in a later
    run; load 9-14). Session options (denormals as zero, extended rather than all graph
    optimizations, no memory arena) changed nothing measurable.
    """

    name = "onnxruntime int8"

    def __init__(self, model_path: Path, key: str, threads: int) -> None:
        """Open a session of the int8 model at ``model_path`` on ``threads`` threads.

        Raises:
            Exception: whatever ONNX Runtime raises on a model it cannot load.

        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Waiting worker threads sleep instead of spinning: the decode thread needs the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.path = model_path
        self.key = key
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.has_tokens = "tokens" in {o.name for o in self._session.get_outputs()}
        self.accepted = read_status(model_path).get("status") == "accepted"
        self._checked, self._min_cos = 0, 1.0

    @classmethod
    def open(cls, path: Path, key: str, threads: int) -> OnnxImageTower | None:
        """A session of the export at ``path`` (see :func:`prepare`); None, with one log line,
        when ONNX Runtime cannot load it. Never raises.
        """
        try:
            return cls(path, key, threads)
        except Exception as exc:  # the faster path must never take the main job down
            _log_unavailable(exc)
            return None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Unnormalised embeddings (n, dim) float32 of preprocessed images ``x`` (n, 3, h, w)."""
        return self._outputs("z", x)

    def tokens(self, x: np.ndarray) -> np.ndarray:
        """Patch tokens (n, tokens, width) float32 of ``x``, before the projection."""
        return self._outputs("tokens", x)

    def _outputs(self, name: str, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate(
            [self._session.run([name], {self._input: x[i : i + 1]})[0] for i in range(len(x))]
        ).astype(np.float32, copy=False)

    def check(self, ours: np.ndarray, torch_z: np.ndarray) -> bool:
        """Compare this tower's embeddings ``ours`` with the torch tower's ``torch_z`` of the same
        images. False, and the export recorded rejected for good, when any cosine is below
        :data:`MIN_COSINE`; else True, and the export recorded accepted once
        :data:`CHECK_FRAMES` frames have passed (until then later batches are checked too).
        """

        def unit(z: np.ndarray) -> np.ndarray:
            return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

        self._checked += len(ours)
        if len(ours):
            cos = float(np.min(np.sum(unit(ours) * unit(torch_z), axis=1)))
            self._min_cos = min(self._min_cos, cos)
        passed = self._min_cos >= MIN_COSINE
        if passed and self._checked < CHECK_FRAMES:
            return True
        self.accepted = passed
        verdict = "accepted" if passed else "rejected"
        if passed:
            log.info("int8 image tower accepted: lowest cosine with torch %.4f over %d frames",
                     self._min_cos, self._checked)
        else:
            log.warning("int8 image tower rejected: lowest cosine with torch %.4f < %.2f over %d "
                        "frames; torch runs it from now on", self._min_cos, MIN_COSINE,
                        self._checked)
        record = {"key": self.key, "status": verdict, "min_cosine": self._min_cos,
                  "frames": self._checked}
        try:
            write_atomic(_status_path(self.path), json.dumps(record))
        except OSError as exc:
            log.warning("cannot record the int8 image tower's verdict in %s: %s", self.path, exc)
        return passed


def cache_key(spec: str, visual: torch.nn.Module) -> str:
    """Everything the exported int8 tower depends on: spec, weights, exporter and runtime."""
    import onnxruntime

    try:
        onnx_version = metadata.version("onnx")
    except metadata.PackageNotFoundError:  # the export says so, if one is needed
        onnx_version = "none"
    return (f"{spec}|visual sha1 {weights_sha1(visual)}|torch {torch.__version__}|"
            f"onnx {onnx_version}|onnxruntime {onnxruntime.__version__}|format {_FORMAT}")


def model_path(key: str) -> Path:
    """Where the int8 tower of ``key`` is cached: ``<spec digest>-<key digest>.int8.onnx``."""
    spec, digest = (hashlib.sha256(k.encode()).hexdigest()[:16] for k in (_spec_of(key), key))
    return cache_dir("onnx-image") / f"{spec}-{digest}.int8.onnx"


def _spec_of(key: str) -> str:
    return key.split("|", 1)[0]


def _status_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _log_unavailable(exc: Exception) -> None:
    reason = (str(exc).strip().splitlines() or [""])[0][:160]
    log.warning("int8 image tower unavailable (%s: %s): torch runs it", type(exc).__name__, reason)


def prepare(visual: torch.nn.Module, key: str, image_size: tuple[int, int]) -> Path | None:
    """The cached int8 export of ``visual`` (fp32 weights) under ``key``, made first if missing;
    None, with one log line, when it was rejected before or cannot be made (``onnx`` not
    installed, an export error, an unwritable cache). Never raises.
    """
    path = model_path(key)
    status = read_status(path)
    if status.get("status") == "rejected":
        log.info("int8 image tower rejected earlier on this machine (lowest cosine %.4f < %.2f): "
                 "torch runs it", status.get("min_cosine", float("nan")), MIN_COSINE)
        return None
    try:
        if not path.is_file():
            export_int8(visual, path, image_size)
    except Exception as exc:  # the faster path must never take the main job down
        _log_unavailable(exc)
        return None
    return path


def read_status(path: Path) -> dict:
    """The recorded verdict on the int8 tower at ``path``; empty when not checked yet."""
    try:
        return json.loads(_status_path(path).read_text())
    except (OSError, ValueError):
        return {}


def export_int8(visual: torch.nn.Module, path: Path, image_size: tuple[int, int]) -> None:
    """Export ``visual`` (fp32 weights) to ONNX with a dynamic batch axis, quantize its weights
    to int8 and write the result to ``path`` atomically, in a child process
    (:func:`_export_here`, run as ``python -m indexer.encoders.onnx_image``): the fp32 graph and
    the quantizer's copies (~1.2 GiB for ViT-B-32) are freed with it, so the job's process keeps
    its own peak (the machine's total still rises while the child runs). The tower goes to the
    child as a file (``torch.save``) in a temp folder beside ``path``.

    Raises:
        EncoderError: the child failed (its exit status and last line of error output).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting the image tower to ONNX int8 (once per model): %s", path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        module = Path(tmp) / "visual.pt"
        torch.save(visual, module)
        # The child imports this package from where this process did.
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        done = subprocess.run(
            [sys.executable, "-m", "indexer.encoders.onnx_image", str(module), str(path),
             *map(str, image_size)],
            env=env, capture_output=True, text=True, check=False,
        )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise EncoderError(f"ONNX export process failed (exit status {done.returncode}): {last}")
    _remove_stale_exports(path)


def _export_here(visual: torch.nn.Module, path: Path, image_size: tuple[int, int]) -> None:
    """:func:`export_int8`'s work, in this process; the fp32 graph is a temp file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    sample = torch.zeros(1, 3, *image_size)
    outputs = ["z", "tokens"] if has_patch_tokens(visual) else ["z"]
    # Grad on: under no_grad torch's MultiheadAttention takes a fused path ONNX cannot express.
    with (tempfile.TemporaryDirectory(dir=path.parent) as tmp, _quiet(), torch.enable_grad(),
          _export_form(visual, tokens="tokens" in outputs)):
        fp32 = Path(tmp) / "visual.onnx"
        torch.onnx.export(visual, (sample,), str(fp32), input_names=["x"], output_names=outputs,
                          dynamo=False, dynamic_axes={name: {0: "n"} for name in ("x", *outputs)})
        with atomic_path(path) as out:
            quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8,
                             op_types_to_quantize=list(QUANTIZED_OPS))


class PatchMatMul(torch.nn.Module):
    """A ViT's patch embedding (a Conv2d whose stride is its kernel, without padding or bias) as a
    reshape into patches and one MatMul: the same numbers, and an int8 MatMul once quantized (the
    Conv would stay fp32, :data:`QUANTIZED_OPS`). ViT-B-32, one thread: 39.0 vs 40.6 CPU-ms an
    image, best of 6 interleaved rounds.
    """

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        """The MatMul form of ``conv`` (see :meth:`of`); its weights are copied."""
        super().__init__()
        self.patch = conv.kernel_size
        self.weight = torch.nn.Parameter(conv.weight.detach().flatten(1).t().contiguous())

    @classmethod
    def of(cls, conv: object) -> PatchMatMul | None:
        """The MatMul form of ``conv``; None unless it is a patch embedding Conv2d."""
        if not isinstance(conv, torch.nn.Conv2d):
            return None
        patches = (conv.stride == conv.kernel_size and conv.padding == (0, 0)
                   and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None)
        return cls(conv) if patches else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The Conv2d's output (n, width, h / ph, w / pw) of images ``x`` (n, c, h, w)."""
        n, c, h, w = x.shape
        (ph, pw), gh, gw = self.patch, h // self.patch[0], w // self.patch[1]
        patches = x.reshape(n, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
        y = patches.reshape(n, gh * gw, c * ph * pw) @ self.weight
        return y.transpose(1, 2).reshape(n, -1, gh, gw)


@contextlib.contextmanager
def _export_form(visual: torch.nn.Module, tokens: bool) -> Iterator[None]:
    """``visual`` as exported inside the block: giving its patch tokens too when ``tokens``, its
    patch embedding as a MatMul (:class:`PatchMatMul`) where it has one; restored after it.
    """
    conv = getattr(visual, "conv1", None)
    patch = PatchMatMul.of(conv)
    if patch is not None:
        visual.conv1 = patch
    if tokens:
        visual.output_tokens = True
    try:
        yield
    finally:
        if patch is not None:
            visual.conv1 = conv
        if tokens:
            visual.output_tokens = False


def _remove_stale_exports(path: Path) -> None:
    """Remove the exports of the same spec under other keys (older weights, versions, format)
    and their verdicts: one export per spec stays on disk (~85 MiB for ViT-B-32).
    """
    spec_digest = path.name.split("-", 1)[0]
    for other in path.parent.glob(f"{spec_digest}-*"):
        if other.name.split(".", 1)[0] != path.name.split(".", 1)[0]:
            with contextlib.suppress(OSError):
                other.unlink()


def has_patch_tokens(visual: torch.nn.Module) -> bool:
    """Whether ``visual`` gives patch tokens and their projection (a ViT)."""
    return hasattr(visual, "output_tokens") and getattr(visual, "proj", None) is not None


if __name__ == "__main__":  # the child of export_int8: MODULE_FILE OUT_PATH HEIGHT WIDTH
    _module, _out, _h, _w = sys.argv[1:]
    _export_here(torch.load(_module, weights_only=False), Path(_out), (int(_h), int(_w)))
