"""X-CLIP, a video-level encoder (transformers), behind the ``Encoder`` interface.

Spec ``xclip:<model id or folder>:<weights>``:

- ``xclip:microsoft/xclip-base-patch32:hub``: the model from the Hugging Face hub cache only
  (``HF_HOME``; nothing is downloaded);
- ``xclip:/path/to/folder:local``: a folder with the model and its tokenizer;
- ``xclip:rhl-tiny-xclip:random``: a tiny architecture with seeded random weights and a small
  in-code tokenizer, for tests.

A video encoder embeds *clips*, not frames: ``encode_images`` takes consecutive sampled frames,
cuts them into groups of the model's ``num_frames`` (the last group padded with its last frame),
embeds each group as one clip, and gives every frame its group's vector, so that the indexer's
per-slice pooling works unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from indexer.encoders.base import RANDOM_SEED, EncoderSpec
from rhl_common.errors import EncoderError

log = logging.getLogger(__name__)

TINY = "rhl-tiny-xclip"
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 1, 3, 1, 1)
_TINY_WORDS = (
    "a an the of in on at with and person man woman child dog cat ball car crowd people goal "
    "jumps runs kicks dances cheers scores falls swims walks rides throws catches spins test "
    "pattern colourful red blue green highlight"
).split()


def _tiny_model_and_tokenizer():  # noqa: ANN202
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, XCLIPConfig, XCLIPModel

    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "<s>", "</s>", *_TINY_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", model_max_length=32,
    )  # fmt: skip
    config = XCLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 32, "pad_token_id": 1, "bos_token_id": 2,
                     "eos_token_id": 3},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16,
                       "num_frames": 4, "mit_hidden_size": 32, "mit_intermediate_size": 64,
                       "mit_num_hidden_layers": 1, "mit_num_attention_heads": 2},
        projection_dim=32, prompt_layers=1,
    )  # fmt: skip
    torch.manual_seed(RANDOM_SEED)
    return XCLIPModel(config), tokenizer


class XClipEncoder:
    """X-CLIP video and text towers; see the module docstring for specs and clip grouping."""

    name = "xclip"
    per_frame = False  # a clip's vector comes from a run of consecutive frames

    def __init__(self, spec: EncoderSpec, batch_size: int = 8) -> None:
        self.spec = str(spec)
        self.batch_size = batch_size
        self.model, self.tokenizer = self._load(spec)
        self.model.eval()
        vision = self.model.config.vision_config
        self.clip_frames = int(vision.num_frames)
        self.image_size = int(vision.image_size)
        self.dim = int(self.model.config.projection_dim)
        self.multilingual = False
        self.patch_relevance = False  # clip-level vectors only
        log.info("encoder %s (dim %d, %d frames a clip)", self.spec, self.dim, self.clip_frames)

    @staticmethod
    def _load(spec: EncoderSpec):  # noqa: ANN205
        if spec.is_random:
            if spec.arch != TINY:
                raise EncoderError(
                    f"random weights exist only for xclip:{TINY}:random, not {spec}; use "
                    f"xclip:{spec.arch}:hub or a folder"
                )
            log.warning("encoder %s uses SEEDED RANDOM WEIGHTS: results are meaningless", spec)
            return _tiny_model_and_tokenizer()
        if spec.weights not in ("hub", "local"):
            raise EncoderError(
                f"bad X-CLIP weights {spec.weights!r} in {spec}; use hub (the hub cache), local "
                f"(arch is a folder) or random (xclip:{TINY}:random)"
            )
        from transformers import AutoTokenizer, XCLIPModel

        try:
            model = XCLIPModel.from_pretrained(spec.arch, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(spec.arch, local_files_only=True)
        except (OSError, ValueError) as exc:
            where = "folder" if Path(spec.arch).is_dir() else "Hugging Face hub cache (HF_HOME)"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise EncoderError(
                f"cannot load X-CLIP {spec.arch!r} from the {where}: {first}; copy a hub cache "
                f"that holds it to HF_HOME, or give a folder: xclip:/path/to/folder:local"
            ) from None
        return model, tokenizer

    def _clips(self, frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(groups, T, 3, s, s) normalised pixels and each frame's group number."""
        n, t = len(frames), self.clip_frames
        groups = np.arange(n) // t
        pad = (-n) % t
        if pad:
            frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        s = self.image_size
        x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        x = x.view(-1, t, 3, s, s)
        return (x - MEAN) / STD, groups

    @staticmethod
    def _tensor(out) -> torch.Tensor:  # noqa: ANN001
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        """See ``Encoder.encode_images``: consecutive frames, one clip vector per group."""
        if len(frames) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x, groups = self._clips(frames)
        out = [self._tensor(self.model.get_video_features(pixel_values=x[i : i + self.batch_size]))
               for i in range(0, len(x), self.batch_size)]  # fmt: skip
        z = F.normalize(torch.cat(out).float(), dim=-1).numpy().astype(np.float32)
        return z[groups]

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """See ``Encoder.encode_texts``."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        z = self._tensor(self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
        return F.normalize(z.float(), dim=-1).numpy().astype(np.float32)
