"""ViCLIP (video tower with token masking), text towers, and the contrastive loss."""

from __future__ import annotations

from vtk.model.viclip import (
    SIZES,
    ModelConfig,
    ViCLIP,
    VideoTower,
    inflate_clip,
    load_clip,
    vision_config,
)


def resolve(cfg) -> ModelConfig:
    """Fill the defaults that depend on other choices (text tower, size, joint dim)."""
    from vtk.errors import VtkError

    cfg = ModelConfig.from_dict(cfg, strict=False)  # also a run's whole config.json
    if cfg.model not in SIZES:
        raise VtkError(f"unknown model size {cfg.model!r}: choose from {', '.join(SIZES)}")
    if cfg.text == "auto":
        cfg.text = "clip" if cfg.init else "minilm"
    if cfg.temp_init is None:
        cfg.temp_init = 0.01 if cfg.init else 0.07
    if cfg.size is None and not cfg.init:
        cfg.size = SIZES[cfg.model]["size"]
    return cfg


def build_model(cfg) -> ViCLIP:
    """A ViCLIP from a ModelConfig or any dict/namespace with its fields (e.g. config.json).

    With ``init`` (a saved transformers CLIPModel) the video tower is CLIP's vision tower
    inflated to video and ``--text clip`` takes CLIP's text tower; otherwise towers are fresh.
    """
    from vtk.model.text import build_text_tower

    cfg = resolve(cfg)
    clip = load_clip(cfg.init) if cfg.init else None
    if clip is not None:
        cfg.embed_dim = clip.config.projection_dim
        cfg.size = cfg.size or clip.config.vision_config.image_size
    cfg.embed_dim = cfg.embed_dim or SIZES[cfg.model]["embed_dim"]
    video = VideoTower(vision_config(cfg, clip.config if clip else None), cfg.frames,
                       cfg.embed_dim, cfg.grad_checkpointing)
    if clip is not None:
        inflate_clip(video, clip)
    text = build_text_tower(cfg.text, cfg.embed_dim, cfg.freeze_text, clip=clip, init=cfg.init)
    return ViCLIP(cfg, video, text)


__all__ = ["ModelConfig", "ViCLIP", "VideoTower", "build_model", "resolve"]
