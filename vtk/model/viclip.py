"""ViCLIP: CLIP with a video tower and random video-token dropping (FLIP-style masking).

The video tower is transformers' CLIP vision model, inflated to video the way ViCLIP does it:

    video  B x T x 3 x H x W
      │ per-frame patch embedding + CLIP spatial position embedding   (CLIPVisionEmbeddings)
      ▼
    patches B x T x N x E   (+ zero-initialised learnable temporal embedding, one per frame)
      │ flatten to L = T*N tokens
      │ keep round((1 - R) * L) tokens at random, a different set per sample (training only)
      ▼
    [CLS] + kept tokens  B x (1 + K) x E     (E: the tower's width)
      │ pre-LN, joint space-time attention over all tokens (CLIPEncoderLayer, SDPA)
      ▼
    CLS -> post-LN -> projection -> L2-normalise      B x D

Because the module names match ``CLIPVisionModel`` (``embeddings``, ``pre_layrnorm``,
``encoder.layers``, ``post_layernorm``), a CLIP checkpoint loads with ``load_state_dict``;
only the temporal embedding is new, and it starts at zero, so a one-frame video gives exactly
CLIP's image embedding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Video tower sizes. tiny is the CPU prototype of docs/background.md; b16 / l14 are CLIP's.
SIZES = {
    "tiny": dict(patch=8, width=64, layers=4, heads=4, embed_dim=64, size=32),
    "b16": dict(patch=16, width=768, layers=12, heads=12, embed_dim=512, size=224),
    "l14": dict(patch=14, width=1024, layers=24, heads=16, embed_dim=768, size=224),
}
MAX_LOGIT_SCALE = 100.0  # ViCLIP clamps the temperature at 0.01 from below


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (it is written to config.json)."""

    model: str = "tiny"  # video tower size: tiny | b16 | l14
    text: str = "auto"  # text tower: tiny | minilm | clip; auto = clip with --init, else minilm
    frames: int = 8
    size: int | None = None  # input pixels (square); None = the size's default
    init: str | None = None  # a saved transformers CLIPModel: local path or hub id
    freeze_text: bool | None = None  # None = frozen for pretrained towers (as ViCLIP), else trained
    embed_dim: int | None = None  # joint space; None = the size's default (CLIP's with --init)
    # None: 0.01 with --init (ViCLIP: logit scale 100, its bound), else CLIP's 0.07; towers
    # trained from scratch stall at 0.01 (tiny, 100 steps: loss 3.42 vs 1.95 at 0.07)
    temp_init: float | None = None
    grad_checkpointing: bool = False

    @classmethod
    def from_dict(cls, d, *, strict: bool = True):
        """An instance of ``cls`` (also a subclass such as TrainConfig) from a dict or
        namespace. A key it does not have is a VtkError naming the closest known one (a typo
        must not train with the default silently); ``strict=False`` picks ``cls``'s fields
        out of a larger dict (a model's fields from a run's config.json)."""
        from vtk.errors import check_keys

        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            d = vars(d)
        names = [f.name for f in fields(cls)]
        if strict:
            check_keys(d, names, f"{cls.__name__} key")
        return cls(**{k: d[k] for k in names if k in d})

    def to_dict(self) -> dict:
        return asdict(self)


def mask_tokens(x: torch.Tensor, ratio: float, generator: torch.Generator | None = None):
    """Keep exactly max(1, round((1 - ratio) * L)) of the L tokens of each sample, at random.

    x: B x L x E -> B x K x E. Each sample gets its own random subset (FLIP / ViCLIP style:
    random tokens, not tubes); the kept tokens stay in their original order.
    """
    B, L, E = x.shape
    # at least one video token beside CLS, whatever the ratio: an empty token set would train
    # CLS on its own embedding alone
    keep = max(1, round((1.0 - ratio) * L)) if L else 0
    device = generator.device if generator is not None else x.device
    noise = torch.rand(B, L, generator=generator, device=device)
    idx = noise.argsort(dim=1)[:, :keep].sort(dim=1).values.to(x.device)  # B x K
    return x.gather(1, idx[:, :, None].expand(B, keep, E))


class VideoTower(nn.Module):
    """CLIP ViT over space-time tokens. forward(video B x T x 3 x H x W) -> B x D (not normalised)."""

    def __init__(self, vision_config, frames: int, embed_dim: int, grad_checkpointing=False):
        from transformers import CLIPVisionModel

        super().__init__()
        vision_config._attn_implementation = "sdpa"
        clip = CLIPVisionModel(vision_config)  # built only to take its (CLIP-initialised) modules
        self.config = vision_config
        self.embeddings = clip.embeddings  # patch conv, class token, spatial position embedding
        self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, 1, vision_config.hidden_size))
        self.pre_layrnorm = clip.pre_layrnorm
        self.encoder = clip.encoder  # .layers: CLIPEncoderLayer x depth
        self.post_layernorm = clip.post_layernorm
        self.proj = nn.Linear(vision_config.hidden_size, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=vision_config.hidden_size**-0.5)
        self.grad_checkpointing = grad_checkpointing

    @property
    def num_patches(self) -> int:
        return self.embeddings.num_patches

    def temporal(self, T: int) -> torch.Tensor:
        """Temporal embedding for T frames: 1 x T x 1 x E (resampled if T differs from training)."""
        return resample_temporal(self.temporal_embedding, T)

    def forward(self, video: torch.Tensor, mask_ratio: float = 0.0, generator=None) -> torch.Tensor:
        B, T, C, H, W = video.shape
        # Tokens are made here: per-frame patches with CLIP's CLS and spatial positions added.
        frames = video.reshape(B * T, C, H, W)
        interpolate = H != self.config.image_size or W != self.config.image_size
        x = self.embeddings(frames, interpolate_pos_encoding=interpolate)  # BT x (1+N) x E
        x = x.unflatten(0, (B, T))  # B x T x (1+N) x E
        cls = x[:, 0, :1]  # B x 1 x E (the same for every frame; no temporal position)
        patches = x[:, :, 1:] + self.temporal(T)  # B x T x N x E
        patches = patches.flatten(1, 2)  # B x L x E, L = T*N

        # ...masked here, after every position embedding is in (training only)...
        if mask_ratio > 0 and self.training:
            patches = mask_tokens(patches, mask_ratio, generator)  # B x K x E

        # ...and attend jointly over space and time.
        x = torch.cat([cls, patches], dim=1)  # B x (1+K) x E
        x = self.pre_layrnorm(x)
        for layer in self.encoder.layers:
            if self.grad_checkpointing and self.training:
                x = checkpoint(layer, x, None, use_reentrant=False)
            else:
                x = layer(x, None)

        # Pooled here: the CLS token.
        return self.proj(self.post_layernorm(x[:, 0]))  # B x D


def resample_temporal(emb: torch.Tensor, T: int) -> torch.Tensor:
    """A 1 x T0 x 1 x E temporal embedding for T frames: itself, the mean for a still image
    (zero at init, so CLIP's image embedding is kept), else linearly resampled."""
    if T == emb.shape[1]:
        return emb
    if T == 1:
        return emb.mean(1, keepdim=True)
    emb = F.interpolate(emb[:, :, 0].transpose(1, 2), size=T, mode="linear", align_corners=True)
    return emb.transpose(1, 2)[:, :, None]


class ViCLIP(nn.Module):
    """Video tower + text tower + a learnable temperature (logit scale bounded at 100)."""

    def __init__(self, cfg: ModelConfig, video: VideoTower, text: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.video = video
        self.text = text
        # one element, not a scalar: FSDP (fully_shard) shards parameters along a dimension
        self.logit_scale = nn.Parameter(torch.tensor([math.log(1.0 / cfg.temp_init)]))

    def encode_video(self, video: torch.Tensor, mask_ratio: float = 0.0, generator=None):
        """video: B x T x 3 x H x W (normalised floats) -> B x D, L2-normalised.

        ``mask_ratio`` drops that share of the video tokens in training mode; in eval mode
        every token is kept, as in ViCLIP's evaluation."""
        return F.normalize(self.video(video, mask_ratio, generator), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """list of B strings -> B x D, L2-normalised."""
        return F.normalize(self.text(texts), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, video, texts, mask_ratio: float = 0.0, generator=None):
        """Returns (video B x D, text B x D, logit scale) for the contrastive loss."""
        return self.encode_video(video, mask_ratio, generator), self.encode_text(texts), self.scale()

    @torch.no_grad()
    def clamp_logit_scale(self):
        """Called after each optimiser step, as ViCLIP clamps its temperature."""
        self.logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))

    def persistent_state_dict(self) -> dict:
        """The weights a checkpoint needs: everything but a frozen pretrained text backbone,
        which is reloaded from its package or --init path (saves 90 MB per MiniLM run)."""
        skip = tuple(f"text.{p}." for p in getattr(self.text, "external", ()))
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def load_persistent_state_dict(self, state: dict):
        missing, unexpected = self.load_state_dict(state, strict=False)
        skip = tuple(f"text.{p}." for p in getattr(self.text, "external", ()))
        missing = [k for k in missing if not k.startswith(skip)]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")


def vision_config(cfg: ModelConfig, clip_config=None, image_size: int | None = None):
    """The CLIPVisionConfig for a size (or the one of the CLIP checkpoint given to --init);
    ``image_size``: the size its position embedding was trained at, when not ``cfg.size`` (a
    released ViCLIP's 224 under a run at another input size: interpolated at forward)."""
    from transformers import CLIPVisionConfig

    if clip_config is not None:
        vc = CLIPVisionConfig(**clip_config.vision_config.to_dict())
    else:
        s = SIZES[cfg.model]
        vc = CLIPVisionConfig(
            hidden_size=s["width"], intermediate_size=4 * s["width"], num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"], patch_size=s["patch"], image_size=s["size"],
            hidden_act="quick_gelu",
        )
        vc.image_size = image_size or cfg.size or s["size"]
    return vc


def load_clip(init: str):
    """A saved transformers CLIPModel (local folder or hub id)."""
    from transformers import CLIPModel
    from transformers.utils import logging

    from vtk.errors import VtkError

    logging.disable_progress_bar()
    try:
        return CLIPModel.from_pretrained(init)
    except OSError as e:
        raise VtkError(f"--init {init}: cannot load a CLIPModel from it ({e})") from None


def inflate_clip(tower: VideoTower, clip) -> None:
    """Copy CLIP's image tower into the video tower (the temporal embedding stays at zero)."""
    state = {k: v for k, v in clip.vision_model.state_dict().items()}
    missing, unexpected = tower.load_state_dict(state, strict=False)
    assert set(missing) <= {"temporal_embedding", "proj.weight"}, missing
    assert not unexpected, unexpected
    tower.proj.weight.data.copy_(clip.visual_projection.weight)
