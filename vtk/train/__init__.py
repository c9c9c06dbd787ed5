"""Training: the loop (trainer.py), checkpoints, metrics, DDP plumbing.

    >>> from vtk.train import train, load_run
    >>> summary = train({"data": "shards/train", "out": "runs/a", "mask": 0.5, "steps": 300})
    >>> model, config = load_run("runs/a", "cpu")
"""

from __future__ import annotations

from pathlib import Path


def train(config) -> dict:
    """See ``vtk.train.trainer.train``."""
    from vtk.train.trainer import train as _train

    return _train(config)


def load_run(run_dir, device="cpu"):
    """(model in eval mode on ``device``, config dict) from a run directory's checkpoint."""
    import torch

    from vtk.errors import VtkError
    from vtk.model import build_model
    from vtk.train import checkpoint

    run_dir = Path(run_dir)
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not cfg_path.exists() or not ckpt_path.exists():
        raise VtkError(f"{run_dir}: not a finished run (config.json and checkpoint.pt expected)")
    config = checkpoint.read_config(cfg_path)
    state = checkpoint.load(ckpt_path)["model"]
    model = build_model(config)
    try:
        model.load_persistent_state_dict(state)
    except RuntimeError as e:  # shapes or names differ: config.json and checkpoint.pt disagree
        first = str(e).strip().splitlines()[0]
        raise VtkError(f"{ckpt_path}: does not match {cfg_path.name}: {first[:300]}") from None
    return model.to(torch.device(device)).eval(), config


__all__ = ["train", "load_run"]
