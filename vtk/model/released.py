"""InternVid's released ViCLIP weights (ViCLIP-B/16, ViCLIP-L/14) in and out of vtk.

``--init viclip:PATH`` (``vtk train``) and ``vtk eval viclip:PATH`` read the ``.pth`` files of
``OpenGVLab/InternVideo`` (``InternVideo1/Pretrain/ViCLIP``; loaded there by
``Data/InternVid/viclip/viclip.py`` as ``torch.load(path)["model"]`` into its ViCLIP module).
Their layout, with ``E`` the video width, ``P`` the patch, ``G = 224 / P`` the patch grid,
``T`` the frames (8), ``W`` the text width and ``D`` the joint dim (``W == D`` in both):

    vision_encoder.conv1.weight                      E x 3 x 1 x P x P   Conv3d, temporal kernel 1
    vision_encoder.class_embedding                   E
    vision_encoder.positional_embedding              (1 + G*G) x E       CLS first
    vision_encoder.temporal_positional_embedding     1 x T x E           patches only, not CLS
    vision_encoder.ln_pre.{weight,bias}              E
    vision_encoder.transformer.resblocks.N.          N < 12 (B/16), 24 (L/14)
        ln_1.{weight,bias}, ln_2.{weight,bias}       E
        attn.in_proj_weight, attn.in_proj_bias       3E x E, 3E          q, k, v stacked
        attn.out_proj.{weight,bias}                  E x E, E
        mlp.c_fc.{weight,bias}                       4E x E, 4E          QuickGELU between
        mlp.c_proj.{weight,bias}                     E x 4E, E
    vision_encoder.ln_post.{weight,bias}             E
    vision_encoder.proj                              E x D               x @ proj, no bias
    text_encoder.token_embedding.weight              49408 x W           OpenAI CLIP's BPE ids
    text_encoder.positional_embedding                32 x W              causal, EOT-pooled
    text_encoder.transformer.resblocks.N.*           as above at W, N < 12
    text_encoder.ln_final.{weight,bias}              W
    text_encoder.text_projection                     W x D
    temp                                             scalar              1 / logit scale

vtk's ViCLIP (``vtk.model.viclip`` and the ``viclip`` text tower, both transformers' CLIP
modules) holds the same tensors under its own names. The mapping is one to one, and changes
only their form: the Conv3d kernel loses its time axis (a patch embedding per frame), q/k/v
are split into three Linears, ``proj`` and ``text_projection`` are transposed into Linear
weights, the temporal embedding gains a token axis (1 x T x 1 x E) and ``temp`` becomes
``logit_scale = -log(temp)``. Token order differs (vtk's is frame-major, the official one
patch-major), which joint attention and CLS pooling do not see. Nothing is dropped and
nothing is made up: keys that are missing, left over or of another shape are one error that
lists them all. Pixels are normalised with ImageNet's statistics, as the official loaders
do, so a converted run's config.json says ``normalize: imagenet``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vtk.errors import VtkError

PREFIX = "viclip:"  # --init viclip:PATH, vtk eval viclip:PATH
NORMALIZE = "imagenet"  # the official loaders' mean and std (not CLIP's)

# official block names -> transformers' CLIPEncoderLayer names (q/k/v handled apart)
BLOCK = {
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
}
QKV = ("q_proj", "k_proj", "v_proj")
# official tower-level names -> vtk's, and whether the tensor is transposed on the way
VISION = {
    "class_embedding": ("video.embeddings.class_embedding", False),
    "positional_embedding": ("video.embeddings.position_embedding.weight", False),
    "ln_pre.weight": ("video.pre_layrnorm.weight", False),
    "ln_pre.bias": ("video.pre_layrnorm.bias", False),
    "ln_post.weight": ("video.post_layernorm.weight", False),
    "ln_post.bias": ("video.post_layernorm.bias", False),
    "proj": ("video.proj.weight", True),
}
TEXT = {
    "token_embedding.weight": ("text.backbone.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text.backbone.embeddings.position_embedding.weight", False),
    "ln_final.weight": ("text.backbone.final_layer_norm.weight", False),
    "ln_final.bias": ("text.backbone.final_layer_norm.bias", False),
    "text_projection": ("text.proj.weight", True),
}
TOWERS = (("vision_encoder", "video.encoder.layers"), ("text_encoder", "text.backbone.encoder.layers"))


def is_released(init) -> bool:
    """Whether an ``--init`` value names a released ViCLIP checkpoint (``viclip:PATH``)."""
    return isinstance(init, str) and init.startswith(PREFIX)


def released_path(init: str) -> Path:
    path = Path(init[len(PREFIX):] if is_released(init) else init).expanduser()
    if not path.is_file():
        raise VtkError(f"{init}: no such ViCLIP checkpoint file")
    return path


@dataclass(frozen=True)
class Layout:
    """The shapes of one released ViCLIP: a vtk size (tiny, b16, l14) and what varies."""

    size: str
    patch: int
    width: int
    layers: int
    embed_dim: int  # joint dim, also the text width
    image: int  # the input size its position embedding was trained at
    frames: int
    text_layers: int = 12
    context: int = 32
    vocab: int = 49408

    @classmethod
    def of(cls, size: str, frames: int = 8, image: int | None = None) -> Layout:
        from vtk.model.text import VICLIP_CONTEXT, VICLIP_TEXT_LAYERS, VICLIP_VOCAB
        from vtk.model.viclip import SIZES

        s = SIZES[size]
        return cls(size, s["patch"], s["width"], s["layers"], s["embed_dim"], image or s["size"],
                   frames, VICLIP_TEXT_LAYERS, VICLIP_CONTEXT, VICLIP_VOCAB)

    def shapes(self) -> dict[str, tuple]:
        """Every key of the official state dict and its shape."""
        E, W, D, P = self.width, self.embed_dim, self.embed_dim, self.patch
        grid = self.image // P
        out = {
            "vision_encoder.conv1.weight": (E, 3, 1, P, P),
            "vision_encoder.class_embedding": (E,),
            "vision_encoder.positional_embedding": (1 + grid * grid, E),
            "vision_encoder.temporal_positional_embedding": (1, self.frames, E),
            "vision_encoder.ln_pre.weight": (E,), "vision_encoder.ln_pre.bias": (E,),
            "vision_encoder.ln_post.weight": (E,), "vision_encoder.ln_post.bias": (E,),
            "vision_encoder.proj": (E, D),
            "text_encoder.token_embedding.weight": (self.vocab, W),
            "text_encoder.positional_embedding": (self.context, W),
            "text_encoder.ln_final.weight": (W,), "text_encoder.ln_final.bias": (W,),
            "text_encoder.text_projection": (W, D),
            "temp": (),
        }
        for tower, width, depth in (("vision_encoder", E, self.layers),
                                    ("text_encoder", W, self.text_layers)):
            for i in range(depth):
                out.update({f"{tower}.transformer.resblocks.{i}.{k}": v
                            for k, v in block_shapes(width).items()})
        return out


def block_shapes(width: int) -> dict[str, tuple]:
    w = width
    return {"ln_1.weight": (w,), "ln_1.bias": (w,), "attn.in_proj_weight": (3 * w, w),
            "attn.in_proj_bias": (3 * w,), "attn.out_proj.weight": (w, w),
            "attn.out_proj.bias": (w,), "mlp.c_fc.weight": (4 * w, w), "mlp.c_fc.bias": (4 * w,),
            "mlp.c_proj.weight": (w, 4 * w), "mlp.c_proj.bias": (w,), "ln_2.weight": (w,),
            "ln_2.bias": (w,)}


def read(path: str | Path) -> dict:
    """The state dict of a released checkpoint (``{"model": ...}`` as released, or bare);
    memory-mapped, and tensors and plain data only (nothing in the file is executed)."""
    path = released_path(str(path))
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # a file in torch's legacy (pre-zip) format cannot be mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise VtkError(f"{path}: not a readable torch checkpoint ({first[:200]})") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VtkError(f"{path}: not a ViCLIP state dict (expected {{'model': {{name: tensor}}}})")
    return state


def detect(state: dict, where: str = "checkpoint") -> Layout:
    """The Layout a state dict claims: the video tower's patch, width and depth name the size,
    the position embeddings the input size, the temporal embedding the frames."""
    from vtk.model.viclip import SIZES

    conv = state.get("vision_encoder.conv1.weight")
    if conv is None or conv.dim() != 5 or tuple(conv.shape[1:3]) != (3, 1):
        found = "absent" if conv is None else "x".join(map(str, conv.shape))
        raise VtkError(f"{where}: not a released ViCLIP state dict (vision_encoder.conv1.weight "
                       f"E x 3 x 1 x P x P expected, {found})")
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    blocks = {int(m.group(1)) for k in state
              if (m := re.match(r"vision_encoder\.transformer\.resblocks\.(\d+)\.", k))}
    layers = max(blocks) + 1 if blocks else 0
    size = next((n for n, s in SIZES.items()
                 if (s["patch"], s["width"], s["layers"]) == (patch, width, layers)), None)
    if size is None:
        known = ", ".join(f"{n} (patch {s['patch']}, width {s['width']}, {s['layers']} blocks)"
                          for n, s in SIZES.items())
        raise VtkError(f"{where}: a video tower of patch {patch}, width {width} and {layers} "
                       f"blocks is none of vtk's sizes: {known}")
    pos = state.get("vision_encoder.positional_embedding")
    grid = math.isqrt(int(pos.shape[0]) - 1) if pos is not None and pos.dim() == 2 else 0
    temporal = state.get("vision_encoder.temporal_positional_embedding")
    frames = int(temporal.shape[1]) if temporal is not None and temporal.dim() == 3 else 8
    return Layout.of(size, frames=frames, image=grid * patch or None)


def _compact(keys) -> list[str]:
    """Key names with block indices folded: 'x.resblocks.{0-11}.ln_1.weight'."""
    groups: dict[str, list[int]] = {}
    for k in keys:
        m = re.match(r"(.*\.resblocks\.)(\d+)(\..*)", k)
        if m:
            groups.setdefault(f"{m.group(1)}{{}}{m.group(3)}", []).append(int(m.group(2)))
        else:
            groups.setdefault(k, [])
    out = []
    for pattern, idx in groups.items():
        if not idx:
            out.append(pattern)
            continue
        idx, runs = sorted(set(idx)), []
        for i in idx:
            if runs and i == runs[-1][1] + 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        out.append(pattern.format(",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)))
    return out


def check(state: dict, layout: Layout, where: str = "checkpoint") -> None:
    """One VtkError listing every missing, unexpected and misshapen key, if any."""
    want = layout.shapes()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} {'x'.join(map(str, state[k].shape)) or 'scalar'} (expected "
              f"{'x'.join(map(str, want[k])) or 'scalar'})"
              for k in want if k in state and tuple(state[k].shape) != want[k]]
    parts = []
    for label, items in (("missing", _compact(missing)), ("unexpected", _compact(unexpected)),
                         ("of another shape", shapes)):
        if items:
            parts.append(f"{label}: {', '.join(items)}")
    if parts:
        raise VtkError(f"{where}: not a released ViCLIP-{layout.size} state dict; "
                       + "; ".join(parts))


def to_vtk(state: dict, layout: Layout | None = None, frames: int | None = None,
           where: str = "checkpoint") -> dict:
    """The official state dict as vtk's ViCLIP state dict (checked first). ``frames``: the
    run's frame count; the temporal embedding is resampled linearly to it when it differs,
    as the official loader interpolates it."""
    from vtk.model.viclip import resample_temporal

    layout = layout or detect(state, where)
    check(state, layout, where)
    out = {}
    for tower, target in TOWERS:
        depth = layout.layers if tower == "vision_encoder" else layout.text_layers
        for i in range(depth):
            src, dst = f"{tower}.transformer.resblocks.{i}.", f"{target}.{i}."
            for k, name in BLOCK.items():
                out[dst + name] = state[src + k]
            for part, w, b in zip(QKV, state[src + "attn.in_proj_weight"].chunk(3),
                                  state[src + "attn.in_proj_bias"].chunk(3)):
                out[f"{dst}self_attn.{part}.weight"], out[f"{dst}self_attn.{part}.bias"] = w, b
    for prefix, table in (("vision_encoder.", VISION), ("text_encoder.", TEXT)):
        for k, (name, transpose) in table.items():
            t = state[prefix + k]
            out[name] = t.t() if transpose else t
    out["video.embeddings.patch_embedding.weight"] = state["vision_encoder.conv1.weight"][:, :, 0]
    temporal = state["vision_encoder.temporal_positional_embedding"][:, :, None]  # 1 x T x 1 x E
    out["video.temporal_embedding"] = resample_temporal(temporal, frames or layout.frames)
    temp = state["temp"].double()
    out["logit_scale"] = (-temp.log()).to(state["temp"].dtype).reshape(1)  # vtk's is 1-d
    return {k: v.contiguous() for k, v in out.items()}


def from_vtk(state: dict, where: str = "model") -> dict:
    """vtk's ViCLIP state dict (with the ``viclip`` text tower) in the official layout: what
    the official code loads, and the inverse of ``to_vtk``."""
    need = ("video.embeddings.patch_embedding.weight", "text.backbone.embeddings.token_embedding.weight")
    if any(k not in state for k in need):
        raise VtkError(f"{where}: only a ViCLIP with the viclip text tower has the released "
                       "layout (its text tower is another)")
    out = {}
    for tower, source in TOWERS:
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(re.escape(source) + r"\.(\d+)\.", k))}
        for i in sorted(blocks):
            src, dst = f"{source}.{i}.", f"{tower}.transformer.resblocks.{i}."
            for k, name in BLOCK.items():
                out[dst + k] = state[src + name]
            out[dst + "attn.in_proj_weight"] = torch.cat(
                [state[f"{src}self_attn.{p}.weight"] for p in QKV])
            out[dst + "attn.in_proj_bias"] = torch.cat(
                [state[f"{src}self_attn.{p}.bias"] for p in QKV])
    for prefix, table in (("vision_encoder.", VISION), ("text_encoder.", TEXT)):
        for k, (name, transpose) in table.items():
            out[prefix + k] = state[name].t() if transpose else state[name]
    out["vision_encoder.conv1.weight"] = state["video.embeddings.patch_embedding.weight"][:, :, None]
    out["vision_encoder.temporal_positional_embedding"] = state["video.temporal_embedding"][:, :, 0]
    scale = state["logit_scale"]
    out["temp"] = (-scale.double()).exp().to(scale.dtype).reshape(())  # the official: a scalar
    return {k: v.detach().contiguous() for k, v in out.items()}


def build(cfg):
    """A ViCLIP holding the released weights ``cfg.init`` names (``viclip:PATH``); ``cfg``
    (a resolved ModelConfig) gets the checkpoint's size, joint dim and input size."""
    from vtk.model.text import build_text_tower
    from vtk.model.viclip import ViCLIP, VideoTower, vision_config

    if cfg.text != "viclip":
        raise VtkError(f"--init {cfg.init}: the released ViCLIP brings its own text tower; "
                       f"--text {cfg.text} is not it (leave --text at auto)")
    state = read(cfg.init)
    layout = detect(state, cfg.init)
    cfg.model, cfg.embed_dim = layout.size, layout.embed_dim
    cfg.size = cfg.size or layout.image
    video = VideoTower(vision_config(cfg, image_size=layout.image), cfg.frames, layout.embed_dim,
                       cfg.grad_checkpointing)
    text = build_text_tower("viclip", layout.embed_dim, cfg.freeze_text)
    model = ViCLIP(cfg, video, text)
    model.load_state_dict(to_vtk(state, layout, cfg.frames, cfg.init))
    return model


def source_id(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def convert(init: str, out: str | Path | None = None, log=None) -> Path:
    """A vtk run folder holding the released checkpoint ``init`` (``viclip:PATH`` or PATH):
    config.json, checkpoint.pt and summary.json (which records the source and its sha256), so
    every vtk command takes it as a run. ``out`` defaults to ``NAME-vtk`` beside the file; a
    folder converted from the same file (path, size and time) is reused as it is."""
    from vtk.fileio import file_sha256, read_json, write_json
    from vtk.model import build_model
    from vtk.train import checkpoint
    from vtk.train.config import TrainConfig, saved_config

    src = released_path(init)
    out = Path(out).expanduser() if out else src.with_name(f"{src.stem}-vtk")
    made = (read_json(out / "summary.json") or {}).get("converted_from") or {}
    source = source_id(src)
    if (out / "checkpoint.pt").is_file():
        if {k: made.get(k) for k in source} == source:
            return out
        raise VtkError(f"{out}: holds another run (not converted from {src}); move it or pass "
                       "another folder")
    if log:
        log(f"converting {src} into the vtk run {out}")
    state = read(src)
    layout = detect(state, str(src))
    model_state = to_vtk(state, layout, where=str(src))
    cfg = TrainConfig(model=layout.size, text="viclip", frames=layout.frames, size=layout.image,
                      embed_dim=layout.embed_dim, freeze_text=True, normalize=NORMALIZE,
                      steps=0, seed=0)
    config = saved_config(cfg.fill_defaults())
    # the run must load as vtk loads runs (names and shapes of vtk's modules)
    build_model(config).load_persistent_state_dict(model_state)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out / "checkpoint.pt", {"model": model_state})
    write_json(out / "config.json", config, indent=2)
    write_json(out / "summary.json", {
        "complete": True, "steps": 0, "converted_from": {**source, "sha256": file_sha256(src),
                                                         "layout": asdict(layout)}}, indent=2)
    return out


def save(model, path: str | Path) -> Path:
    """A vtk ViCLIP (the viclip text tower) written as a released-layout checkpoint,
    ``{"model": state}``: loadable by the official code and by ``--init viclip:PATH``."""
    path = Path(path)
    state = from_vtk(model.state_dict())
    layout = detect(state, str(path))
    check(state, layout, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path
