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
    from vtk.model.released import is_released

    cfg = ModelConfig.from_dict(cfg, strict=False)  # also a run's whole config.json
    if cfg.model not in SIZES:
        raise VtkError(f"unknown model size {cfg.model!r}: choose from {', '.join(SIZES)}")
    if cfg.text == "auto":
        cfg.text = "viclip" if is_released(cfg.init) else "clip" if cfg.init else "minilm"
    if cfg.temp_init is None:
        cfg.temp_init = 0.01 if cfg.init else 0.07
    if cfg.size is None and not cfg.init:
        cfg.size = SIZES[cfg.model]["size"]
    return cfg


def build_model(cfg) -> ViCLIP:
    """A ViCLIP from a ModelConfig or any dict/namespace with its fields (e.g. config.json).

    With ``init`` (a saved transformers CLIPModel) the video tower is CLIP's vision tower
    inflated to video and ``--text clip`` takes CLIP's text tower; ``viclip:PATH`` is a
    released ViCLIP checkpoint, both towers (``vtk.model.released``); otherwise towers are
    fresh.
    """
    from vtk.model import released
    from vtk.model.text import build_text_tower

    cfg = resolve(cfg)
    if released.is_released(cfg.init):
        return released.build(cfg)
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


def init_state(init: str, model) -> dict:
    """The weights ``model`` would start from with ``--init init``, under its state dict names:
    a released ViCLIP (``viclip:PATH``) converted, or a CLIP checkpoint's vision tower
    (``video.``) and, for a CLIP-style text tower (clip, viclip), its text tower cut to the
    model's token count, as the official loader cuts CLIP's 77 positions to ViCLIP's 32. What
    CLIP does not have (the temporal embedding, the temperature) is absent. WiSE-FT
    interpolates with these."""
    from vtk.model import released

    if released.is_released(init):
        return released.to_vtk(released.read(init), frames=model.cfg.frames, where=init)
    clip = load_clip(init)
    state = {f"video.{k}": v for k, v in clip.vision_model.state_dict().items()}
    state["video.proj.weight"] = clip.visual_projection.weight
    if model.cfg.text in ("clip", "viclip"):
        state.update({f"text.backbone.{k}": v for k, v in clip.text_model.state_dict().items()})
        state["text.proj.weight"] = clip.text_projection.weight
        pos = "text.backbone.embeddings.position_embedding.weight"
        mine = model.state_dict().get(pos)
        if mine is not None and state[pos].shape[0] > mine.shape[0]:
            state[pos] = state[pos][: mine.shape[0]]
    return {k: v.detach() for k, v in state.items()}


__all__ = ["ModelConfig", "ViCLIP", "VideoTower", "build_model", "init_state", "resolve"]
