"""open_clip image/text towers behind the ``Encoder`` interface (see :mod:`indexer.encoders.base`).

``rhl-tiny-vit`` is a tiny architecture registered from ``model_configs/`` here, for tests.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from indexer.encoders.base import (
    RANDOM_SEED,
    WEIGHTS_HELP,
    EncoderSpec,
    TextEmbeddingCache,
    quiet_root_logger,
)
from indexer.encoders.onnx_image import OnnxImageTower, cache_key, has_patch_tokens, prepare
from indexer.threads import torch_threads
from rhl_common.errors import EncoderError
from rhl_common.memory import release_free_memory

log = logging.getLogger(__name__)

_CONFIG_DIR = Path(__file__).parent / "model_configs"


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urllib.parse.urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Make huggingface_hub use its cache only: a missing file fails at once, never hangs."""
    import huggingface_hub.constants as hc

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def bf16_supported() -> bool:
    """True on CPUs with native bf16 (AVX512-BF16 / AMX), where autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_threads() -> int:
    """Torch threads for the towers: half the cores, at least one.

    The indexing pass decodes in a thread of its own beside the encoder (``indexer.decode``), so
    torch never has all the cores: with as many threads as cores, its OpenMP threads wait for
    each other at every layer, spinning. On this project's 2-core machine under load, 2 threads
    took 279 CPU-ms an image (bf16 ViT-B-32, 240 px frames) at batches of 8 frames, 1 thread 76
    (process CPU time over 64 frames, load ~17).
    """
    return max(1, (os.cpu_count() or 1) // 2)


class OpenClipEncoder:
    """open_clip model behind the ``Encoder`` interface: batched, bf16 where it helps, on
    ``default_threads()`` torch threads.

    In bf16 the towers' matmul weights (Linear, Conv, attention projections) are cast once, when
    the model is built, and stay resident in bf16; LayerNorms and embeddings stay fp32 and every
    call runs under bf16 autocast, which casts the activations. Autocast alone would keep the fp32
    weights resident and re-cast them at every call (its weight cache lives one block only).
    ViT-B-32 on one thread (``bench/encoder_runtime.py``, load ~17): 53.5 CPU-ms an image and 40.0
    a text against 55.6 and 45.2 under autocast over fp32 weights, cosine with fp32 >= 0.9999;
    a fresh process holds 1124 MiB after the build against 1368, and peaks at 1373 MiB after
    encoding against 1745.

    The image tower runs on ONNX Runtime int8 instead where it can be had and passes its check
    (:mod:`indexer.encoders.onnx_image`); once accepted the torch image tower is freed.
    """

    name = "open_clip"
    per_frame = True

    def __init__(
        self,
        spec: EncoderSpec,
        batch_size: int = 64,
        bf16: bool | None = None,
        threads: int | None = None,
        int8_images: bool | None = None,
    ) -> None:
        """Build the towers of ``spec``; ``int8_images`` runs the image tower on ONNX Runtime
        int8 when it can be had and passes its check (:mod:`indexer.encoders.onnx_image`);
        None: unless the environment sets ``RHL_INT8_IMAGES=0``.
        """
        if int8_images is None:
            int8_images = os.environ.get("RHL_INT8_IMAGES", "1") != "0"
        import open_clip

        open_clip.add_model_config(_CONFIG_DIR)
        if spec.arch not in open_clip.list_models():
            raise EncoderError(
                f"unknown open_clip architecture {spec.arch!r}; see open_clip.list_models(), "
                "e.g. ViT-B-32, ViT-B-16, xlm-roberta-base-ViT-B-32"
            )
        self.spec = str(spec)
        self.batch_size = batch_size
        self.bf16 = bf16_supported() if bf16 is None else bf16
        self.threads = threads or default_threads()
        self.model, self.tokenizer = self._load(open_clip, spec)
        self.model.eval()
        cfg = self.model.visual.preprocess_cfg
        size = cfg.get("size", 224)
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        # Before the bf16 cast: the int8 tower is exported from (and keyed by) the fp32 weights.
        int8 = self._prepare_int8() if int8_images else None
        if self.bf16:
            open_clip.model.convert_weights_to_lp(self.model, dtype=torch.bfloat16)
            release_free_memory()  # the fp32 copies, freed layer by layer
        # After it: the session is not built beside the fp32 weights (a higher peak).
        self._int8 = OnnxImageTower.open(*int8, self.threads) if int8 else None
        self._patch_proj: torch.Tensor | None = None
        if self._int8 is not None and self._int8.accepted:
            self._free_torch_visual()
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        self.dim = int(open_clip.get_model_config(spec.arch)["embed_dim"])
        self.multilingual = "xlm" in spec.arch or "mt5" in spec.arch or "multilingual" in spec.arch
        # Patch relevance needs trained weights: with random ones the maps are noise.
        self.patch_relevance = not spec.is_random
        self._texts = TextEmbeddingCache(self._cache_key(spec, open_clip), self.dim)
        log.info("encoder %s (dim %d, %s, image tower on %s, %d threads)", self.spec, self.dim,
                 "bf16" if self.bf16 else "fp32", self.image_runtime, self.threads)

    @property
    def image_runtime(self) -> str:
        """What runs the image tower now: ``onnxruntime int8``, or ``torch`` (bf16 or fp32)."""
        if self._int8 is not None:
            return self._int8.name
        return "torch bf16" if self.bf16 else "torch fp32"

    def _prepare_int8(self) -> tuple[Path, str] | None:
        try:
            key = cache_key(self.spec, self.model.visual)
        except ImportError as exc:
            log.warning("int8 image tower unavailable (%s): torch runs it", exc)
            return None
        path = prepare(self.model.visual, key, self.image_size)
        return None if path is None else (path, key)

    def _free_torch_visual(self) -> None:
        """Drop the torch image tower once the int8 one is accepted: it serves ``encode_images``
        and, with patch tokens, ``relevance_maps`` (only the projection is kept, in fp32).
        """
        visual = self.model.visual
        if not self._int8.has_tokens and has_patch_tokens(visual):
            return  # relevance maps still need the torch tower
        if self._int8.has_tokens:
            self._patch_proj = visual.proj.detach().float().clone()
        self.model.visual = None
        del visual
        gc.collect()  # the tower sits in reference cycles: without this it stays (168 MiB, B-32)
        release_free_memory()
        log.info("torch image tower freed: the int8 one runs it")

    def _cache_key(self, spec: EncoderSpec, open_clip) -> str:  # noqa: ANN001
        weights = spec.weights
        if spec.is_path:
            st = Path(spec.weights).expanduser().stat()
            weights = f"{Path(spec.weights).expanduser().resolve()}:{st.st_size}:{st.st_mtime_ns}"
        # bf16 weights resident: the text tower's residual stream is bf16 too, unlike under
        # autocast over fp32 weights ("bf16"), so vectors cached by that runtime are not reused.
        precision = "bf16-weights" if self.bf16 else "fp32"
        return f"{spec.family}:{spec.arch}:{weights}|{precision}|open_clip {open_clip.__version__}"

    @staticmethod
    def _load(open_clip, spec: EncoderSpec):  # noqa: ANN001, ANN205
        if spec.is_random:
            log.warning(
                "encoder %s uses SEEDED RANDOM WEIGHTS: retrieval results are meaningless "
                "(speed runs and tests only)",
                spec,
            )
            torch.manual_seed(RANDOM_SEED)
            try:
                with _hub_offline():
                    model = open_clip.create_model(spec.arch, pretrained=None)
                    tokenizer = open_clip.get_tokenizer(spec.arch)
            except OSError as exc:
                raise EncoderError(
                    f"{spec.arch} needs files from the hub even with random weights "
                    f"(text tower config/tokenizer): {exc}; {WEIGHTS_HELP}"
                ) from None
            return model, tokenizer
        if spec.is_path:
            path = Path(spec.weights).expanduser()
            if not path.is_file():
                raise EncoderError(f"weights file not found: {str(path)!r}; {WEIGHTS_HELP}")
        else:
            known = open_clip.list_pretrained_tags_by_model(spec.arch)
            if spec.weights not in known:
                raise EncoderError(
                    f"no pretrained weights {spec.weights!r} for {spec.arch}; choose one of "
                    f"{', '.join(known) or '(none)'}, 'random', or a local file path"
                )
        online = _hub_reachable()
        ctx = contextlib.nullcontext() if online else _hub_offline()
        try:
            # open_clip logs its own download failure at ERROR on the root logger; the
            # EncoderError below says it once, with the remedy.
            with ctx, quiet_root_logger():
                model = open_clip.create_model(spec.arch, pretrained=str(spec.weights))
                tokenizer = open_clip.get_tokenizer(spec.arch)
        except (OSError, RuntimeError, ValueError) as exc:
            if online:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            else:
                reason = "not in the local hub cache, and the model hub is not reachable from here"
            raise EncoderError(
                f"cannot load weights for {spec}: {reason}; {WEIGHTS_HELP}"
            ) from None
        return model, tokenizer

    def _preprocess(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        th, tw = self.image_size
        h, w = x.shape[-2:]
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - th) // 2, (nw - tw) // 2
        x = x[:, :, top : top + th, left : left + tw]
        return (x - self.mean) / self.std

    @contextlib.contextmanager
    def _compute(self) -> Iterator[None]:
        """Run inside the encoder's thread count and precision (bf16 autocast over the bf16
        weights where it helps).
        """
        bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
        with torch_threads(self.threads), bf16 if self.bf16 else contextlib.nullcontext():
            yield

    @torch.no_grad()  # not inference_mode: under it autocast re-casts the weights every call
    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """See ``Encoder.encode_images``. On the int8 tower when it runs; its first batch is
        checked against the torch tower's (:meth:`OnnxImageTower.check`).
        """
        out = []
        for start in range(0, len(frames), self.batch_size):
            with self._compute():
                x = self._preprocess(frames[start : start + self.batch_size])
                z = self._encode_int8(x) if self._int8 is not None else None
                out.append(self.model.encode_image(x).float() if z is None else z)
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return F.normalize(torch.cat(out), dim=-1).numpy().astype(np.float32)

    def _encode_int8(self, x: torch.Tensor) -> torch.Tensor | None:
        """The int8 tower's embeddings of ``x``; torch's when it fails its check, None when it
        fails to run (torch runs the image tower from then on).
        """
        try:
            z = self._int8.run(x.float().numpy())
        except Exception as exc:  # the faster path must never take the main job down
            reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
            if self.model.visual is None:
                raise EncoderError(f"int8 image tower failed ({reason}) after the torch tower "
                                   f"was freed; delete {self._int8.path} to export it again"
                                   ) from None
            log.warning("int8 image tower failed (%s): torch runs it", reason)
            self._int8 = None
            return None
        if not self._int8.accepted:
            theirs = self.model.encode_image(x).float()
            if not self._int8.check(z, theirs.numpy()):
                self._int8 = None
                return theirs
            if self._int8.accepted:
                self._free_torch_visual()
        return torch.from_numpy(z)

    @torch.no_grad()
    def relevance_maps(self, frames: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Patch-level cosine of each frame with ``query`` (a unit vector of this space).

        The vision tower's patch tokens are projected like the pooled token; frames are squashed
        (not cropped) to the model's input so the (n, g, g) grid covers the whole frame. Coarse
        and noisy, as patch-level CLIP is, but it says where the described thing is.

        Raises:
            EncoderError: the vision tower has no patch tokens (not a ViT).
        """
        visual = self.model.visual
        if self._patch_proj is None and (visual is None or not has_patch_tokens(visual)):
            raise EncoderError(f"{self.spec}: no patch tokens for relevance maps")
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
        x = (x - self.mean) / self.std
        q = torch.from_numpy(np.asarray(query, dtype=np.float32)).reshape(-1)
        if self._patch_proj is not None:  # the int8 tower, the torch one freed
            tokens = F.normalize(torch.from_numpy(self._int8.tokens(x.numpy())) @ self._patch_proj,
                                 dim=-1)
        else:
            visual.output_tokens = True
            try:
                with self._compute():
                    _, tokens = visual(x)
                tokens = F.normalize(tokens.float() @ visual.proj.float(), dim=-1)
            finally:
                visual.output_tokens = False
        sim = (tokens @ q).numpy()
        g = int(round(sim.shape[1] ** 0.5))
        return sim[:, : g * g].reshape(len(frames), g, g)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """See ``Encoder.encode_texts``; texts seen before come from the on-disk cache."""
        return self._texts.encode(list(texts), self._encode_texts)

    @torch.no_grad()  # not inference_mode: under it autocast re-casts the weights every call
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts)
        with self._compute():
            z = self.model.encode_text(tokens).float()
        return F.normalize(z, dim=-1).numpy().astype(np.float32)


