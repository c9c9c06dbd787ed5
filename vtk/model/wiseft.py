"""WiSE-FT: evaluate a weight-space interpolation of a trained model with its init.

    theta(alpha) = (1 - alpha) * theta_init + alpha * theta_trained

(Wortsman et al., "Robust fine-tuning of zero-shot models", arXiv 2109.01903). ``alpha`` is the
trained model's share: 1 is the trained model, 0 the init. InternVid's zero-shot scripts use
0.5 (``InternVideo1/Pretrain/ViCLIP/exp/exp_pretrain_ViCLIP/zs_*/run_*_wiseft05.sh``, which set
``wiseft.enable True`` with ``wiseft.coef=0.5`` in their config.py); their
``tasks/shared_utils.py`` computes ``coef * trained + (1 - coef) * freshly built model``, the
fresh model holding the CLIP weights, so their ``coef`` is this ``alpha``. Like them, the
temporal embedding is not interpolated (``keys_to_exclude``: CLIP has none; the init's would
be zeros), nor is the temperature (vtk's logit scale; no metric depends on it). Every other
tensor the init has is interpolated; the trained model's tensors the init lacks are kept.
"""

from __future__ import annotations

import torch

from vtk.errors import VtkError

EXCLUDE = ("video.temporal_embedding", "logit_scale")


def interpolate(trained: dict, init: dict, alpha: float, exclude=EXCLUDE) -> tuple[dict, dict]:
    """(the interpolated state dict, what was done: ``alpha``, ``interpolated`` (count),
    ``kept`` (the trained tensors left as they are)). A tensor of another shape in the init is
    a VtkError listing them: the init is not what the model was trained from."""
    if not 0.0 <= alpha <= 1.0:
        raise VtkError(f"--wise-ft {alpha}: the trained model's share, in [0, 1] (0.5 in "
                       "InternVid's zero-shot scripts)")
    misfit = [f"{k} {tuple(init[k].shape)} vs {tuple(v.shape)}" for k, v in trained.items()
              if k in init and k not in exclude and tuple(init[k].shape) != tuple(v.shape)]
    if misfit:
        raise VtkError(f"--wise-ft: the init does not fit the model ({len(misfit)} tensors of "
                       f"other shapes: {', '.join(misfit[:8])}{' ...' if len(misfit) > 8 else ''})")
    out, kept, done = {}, [], 0
    for k, v in trained.items():
        if k in exclude or k not in init or not v.is_floating_point():
            out[k] = v
            kept.append(k)
            continue
        start = init[k].to(device=v.device, dtype=v.dtype)
        out[k] = alpha * v + (1.0 - alpha) * start
        done += 1
    if not done:
        raise VtkError("--wise-ft: the init shares no tensor with the model")
    return out, {"alpha": alpha, "interpolated": done, "kept": kept}


@torch.no_grad()
def apply(model, init: dict, alpha: float) -> dict:
    """Load the interpolation of ``model``'s weights with ``init`` into ``model`` (in place);
    returns what ``interpolate`` did."""
    state, info = interpolate(model.state_dict(), init, alpha)
    model.load_state_dict(state)
    cache = getattr(getattr(model, "text", None), "cache", None)
    if cache is not None:  # features of the old weights must not be reused
        cache.forget()
    return info
