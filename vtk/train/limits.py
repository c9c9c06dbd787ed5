"""What a training run may ask for, checked before any work starts; each bound is a one-line
VtkError that names the option:

- every number in its range (``check_values``: the CLI's click ranges say the same, and this
  covers library callers such as ``vtk ablate``, which pass configs directly);
- ``--size`` against the video tower's patch, ``--frames`` against the clips of the shard set
  (a clip shorter than ``--frames`` repeats its frames; asking for more than any clip has only
  adds copies), and one step's memory against what the device has free (``check_inputs``).
"""

from __future__ import annotations

import json
import math
import os
import tarfile

from vtk.errors import VtkError

# field: (lowest value, whether the lowest is allowed); None values are left to the defaults
MINIMUM = {
    "steps": (0, True), "unmasked_steps": (0, True), "batch_size": (1, True),
    "accum": (1, True), "lr": (0.0, False), "warmup": (0.0, True), "weight_decay": (0.0, True),
    "unmasked_lr_scale": (0.0, True), "min_lr_ratio": (0.0, True), "frames": (1, True),
    "size": (1, True), "workers": (0, True), "seed": (0, True), "checkpoint_every": (1, True),
    "log_every": (1, True), "stop_after": (1, True), "grad_clip": (0.0, True),
}
CHOICES = {"amp": ("auto", "bf16", "fp16", "off"), "flip": ("swap", "plain", "off")}
PEEK_SAMPLES = 64  # clips whose json is read for --frames
# What a ViT block keeps for backward, per token, in units of its width. Korthikanti et al.
# 2022 ("Reducing Activation Recomputation in Large Transformer Models", sec. 4.1) count about
# 17 (34 bytes at 16 bits, before attention scores); half of that is a floor that a real step
# exceeds, so a run refused by it could not have run.
KEPT_PER_TOKEN = 8


def option(field: str) -> str:
    return "--" + field.replace("_", "-")


def check_values(cfg) -> None:
    """Every number of a TrainConfig in its range (after the defaults are filled in)."""
    for field, (low, inclusive) in MINIMUM.items():
        v = getattr(cfg, field)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise VtkError(f"{option(field)} {v!r}: not a number")
        if field in ("steps", "unmasked_steps", "batch_size", "accum", "frames", "size",
                     "workers", "seed", "checkpoint_every", "log_every", "stop_after") \
                and v != int(v):
            raise VtkError(f"{option(field)} {v}: must be a whole number")
        if v < low or (v == low and not inclusive):
            bound = f"at least {low}" if inclusive else f"more than {low}"
            raise VtkError(f"{option(field)} {v}: must be {bound}")
    if not 0.0 <= cfg.mask < 1.0:
        raise VtkError(f"--mask {cfg.mask}: the ratio must be in [0, 1)")
    if cfg.min_lr_ratio > 1:
        raise VtkError(f"min_lr_ratio {cfg.min_lr_ratio}: the cosine floor must be at most 1")
    if cfg.steps + cfg.unmasked_steps < 1:
        raise VtkError(f"--steps {cfg.steps} --unmasked-steps {cfg.unmasked_steps}: nothing to "
                       "train; ask for at least one step")
    if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise VtkError(f"betas {list(cfg.betas)}: two values in [0, 1) expected")
    for field, choices in CHOICES.items():
        if getattr(cfg, field) not in choices:
            raise VtkError(f"{option(field)} {getattr(cfg, field)!r}: choose one of "
                           f"{', '.join(choices)}")


def tower(cfg) -> dict | None:
    """The video tower's patch, width and depth and the input size a config resolves to,
    without building it (None when --init cannot be read: building the model says why)."""
    from vtk.model import released, resolve
    from vtk.model.viclip import vision_config

    m = resolve(cfg)
    clip_config = None
    if released.is_released(m.init):
        try:
            lay = released.detect(released.read(m.init), m.init)
        except VtkError:
            return None
        return {"patch": lay.patch, "width": lay.width, "layers": lay.layers,
                "size": m.size or lay.image}
    if m.init:
        from transformers import CLIPConfig

        try:
            clip_config = CLIPConfig.from_pretrained(m.init)
        except (OSError, ValueError):
            return None
    vc = vision_config(m, clip_config)
    return {"patch": vc.patch_size, "width": vc.hidden_size, "layers": vc.num_hidden_layers,
            "size": m.size or vc.image_size}


def longest_clip(tar: str, samples: int = PEEK_SAMPLES) -> int | None:
    """The most frames among the first ``samples`` clips of a shard (their json's
    ``num_frames``), or None when none says."""
    most, seen = None, 0
    try:
        from vtk.shards.reader import open_tar  # a URL's tar too (one streaming pass)

        with open_tar(tar) as tf:
            for member in tf:
                if not (member.isfile() and member.name.endswith(".json")) or member.size > 1 << 20:
                    continue
                seen += 1
                try:
                    n = json.loads(tf.extractfile(member).read()).get("num_frames")
                except (ValueError, AttributeError):
                    continue
                if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                    most = max(most or 0, n)
                if seen >= samples:
                    break
    except (OSError, tarfile.TarError):
        return None  # the loader reports unreadable shards, with their names
    return most


def available_bytes(device) -> int | None:
    """Memory free for this process: the GPU's free memory, or the machine's MemAvailable
    shared by the ranks on it; None where it cannot be read."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    return free // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except (OSError, ValueError):
        pass
    return None


def step_bytes(cfg, geometry: dict, device) -> tuple[int, int]:
    """(a floor of the memory one micro-step needs, the tokens per clip it counts):
    the float32 clips, their patch embeddings and what every block keeps for backward."""
    size, patch, width, layers = (geometry[k] for k in ("size", "patch", "width", "layers"))
    per_frame = (size // patch) ** 2
    unmasked = cfg.mask == 0 or cfg.unmasked_steps > 0  # that stage keeps every token
    tokens = 1 + (cfg.frames * per_frame if unmasked else round((1 - cfg.mask) * cfg.frames
                                                                   * per_frame))
    elem = 2 if device.type == "cuda" and cfg.amp != "off" else 4
    kept = 1 if cfg.grad_checkpointing else KEPT_PER_TOKEN
    clip = (cfg.frames * 3 * size * size * 4 + cfg.frames * (per_frame + 1) * width * elem
            + tokens * width * elem * kept * layers)
    return cfg.batch_size * clip, tokens


# bytes per trainable parameter held for training: fp32 weights, their gradient and AdamW's
# two moments (a frozen parameter: its weights only)
STATE_BYTES = 4 + 4 + 8


def memory_per_gpu(cfg, params: int, trainable: int, world: int, fsdp: bool,
                   device=None) -> dict:
    """An estimate of one rank's memory for a training step (bytes): the model state (weights,
    gradients, AdamW moments; FSDP divides it by ``world``, DDP holds it whole on every rank)
    and ``step_bytes``' activation floor. A floor: the framework's workspace, the loader's
    buffers and fragmentation come on top (``vtk bench gpu`` measures)."""
    import torch

    device = device or torch.device("cuda")
    state = trainable * STATE_BYTES + (params - trainable) * 4
    state = -(-state // world) if fsdp and world > 1 else state
    step, tokens = step_bytes(cfg, tower(cfg), device)
    return {"state_bytes": state, "step_bytes": step, "tokens": tokens,
            "total_bytes": state + step}


def check_inputs(cfg, paths: list[str] | None, device) -> None:
    """--size against the tower, --frames against the shard set's clips, a step's memory
    against the device; before the model, the cache or the loader allocate anything."""
    geometry = tower(cfg)
    if geometry is not None and geometry["size"] < geometry["patch"]:
        raise VtkError(f"--size {geometry['size']}: smaller than the {cfg.model} tower's "
                       f"{geometry['patch']} px patch; use at least {geometry['patch']}")
    most = longest_clip(paths[0]) if paths else None
    if most is not None and cfg.frames > most:
        raise VtkError(f"--frames {cfg.frames}: the clips of {paths[0]} have at most {most} "
                       f"frames (the first {PEEK_SAMPLES} read); more would only repeat frames: "
                       f"use --frames {most} or fewer")
    if geometry is None:
        return
    need, tokens = step_bytes(cfg, geometry, device)
    free = available_bytes(device)
    if free is not None and need > free:
        gib = 2**30
        raise VtkError(f"--batch-size {cfg.batch_size} --frames {cfg.frames} --size "
                       f"{geometry['size']}: one step needs at least {need / gib:.1f} GiB "
                       f"({cfg.batch_size} clips x {tokens} tokens through {geometry['layers']} "
                       f"layers), more than the {free / gib:.1f} GiB free on {device}; lower "
                       "--batch-size, --frames or --size, or raise --mask")


def check_captions(captions: str, sets: list[str]) -> None:
    """The caption a run trains on must be in its clips: the first sample of each shard set
    is read (its json's captions, its txt). A set built with ``vtk shard --captions none`` (the
    default) has no coarse, fine or fused caption, and its txt is the source's own caption
    (a manifest's) or empty; training would go on with the wrong text, or with empty strings.
    A VtkError names the set, the caption asked for and how to get it, before anything is
    written. Captions by name (layers, ``vlm``) are the loader's check."""
    from vtk.data.samples import caption_failure, first_members
    from vtk.types import CAPTION_MODES

    if captions not in CAPTION_MODES:
        return
    for one in sets:
        first = first_members(one)
        if first is None:
            continue  # no sample, or an unreadable one: the loader reports it in its place
        meta, txt = first
        text = (txt or "").strip()
        if (text if captions == "txt" else meta.get("captions")) or caption_failure(meta, captions):
            continue
        build = (f"rebuild it with vtk shard ... --captions both, or caption it in place: "
                 f"vtk caption {one} --as NAME --fine-model MODEL, then vtk train --captions "
                 f"NAME (docs/captions.md)")
        if not text:
            raise VtkError(f"{one}: its clips have no captions (built with vtk shard --captions "
                           f"none, the default) and an empty txt: --captions {captions} would "
                           f"train on empty text; {build}")
        raise VtkError(f"{one}: its clips have no {captions!r} caption (built with vtk shard "
                       f"--captions none, the default); their txt is the source's own caption: "
                       f"train on it with --captions txt, or {build}")
