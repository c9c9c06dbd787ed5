"""Zero-shot classification and retrieval as pure functions over embeddings (numpy).

Embeddings are L2-normalised rows, so a dot product is the cosine similarity. Classification
follows ViCLIP: every class name goes into each of the 16 Kinetics action templates and the
per-template similarities are averaged (``mode="similarity"``); CLIP's way, averaging the
template embeddings and renormalising, is ``mode="embedding"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vtk.eval.metrics import dsl_retrieval_metrics, retrieval_metrics, topk_accuracy

# The 16 action templates of ViCLIP's Kinetics evaluation (ActionCLIP's list).
KINETICS_TEMPLATES = (
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)

TEMPLATE_SETS = {"kinetics": KINETICS_TEMPLATES, "none": ("{}",)}


def resolve_templates(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"kinetics"`` (default), ``"none"`` (bare class names) or a list of ``{}`` templates."""
    if spec is None:
        return KINETICS_TEMPLATES
    if isinstance(spec, str):
        if spec in TEMPLATE_SETS:
            return TEMPLATE_SETS[spec]
        spec = [spec]
    templates = tuple(spec)
    bad = [t for t in templates if "{}" not in t]
    if bad or not templates:
        raise ValueError(f"templates need a '{{}}' for the class name: {bad or 'none given'}")
    return templates


def class_prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """C * K prompts, class-major: prompt ``c * K + k`` is template k filled with class c."""
    return [t.format(name) for name in class_names for t in templates]


def class_scores(
    video_emb: np.ndarray,
    prompt_emb: np.ndarray,
    num_templates: int,
    mode: str = "similarity",
    chunk: int = 4096,
) -> np.ndarray:
    """Video-to-class scores V x C from video embeddings V x D and prompt embeddings (C*K) x D
    (class-major, as ``class_prompts`` orders them).

    ``similarity``: mean over templates of the cosine similarity (ViCLIP).
    ``embedding``: cosine with the renormalised mean template embedding (CLIP).
    """
    video_emb = np.asarray(video_emb, dtype=np.float32)
    prompts = np.asarray(prompt_emb, dtype=np.float32)
    k = num_templates
    if prompts.shape[0] % k:
        raise ValueError(f"{prompts.shape[0]} prompt embeddings are not a multiple of {k} templates")
    c, d = prompts.shape[0] // k, prompts.shape[1]
    if mode == "embedding":
        mean = prompts.reshape(c, k, d).mean(axis=1)
        mean /= np.linalg.norm(mean, axis=1, keepdims=True).clip(min=1e-12)
        return video_emb @ mean.T
    if mode != "similarity":
        raise ValueError(f"unknown template mode {mode!r}: similarity | embedding")
    out = np.empty((video_emb.shape[0], c), dtype=np.float32)
    for i in range(0, video_emb.shape[0], chunk):  # V x (C*K) can be large for K700
        sims = video_emb[i : i + chunk] @ prompts.T  # v x (C*K)
        out[i : i + chunk] = sims.reshape(-1, c, k).mean(axis=2)
    return out


def zeroshot_classification(
    video_emb: np.ndarray,
    prompt_emb: np.ndarray,
    labels: Sequence[int],
    num_templates: int,
    mode: str = "similarity",
) -> tuple[dict[str, float], np.ndarray]:
    """Top-1, top-5 and AVG (fractions) and the class scores C x V (class texts x videos, the
    orientation ``--save-sims`` writes)."""
    scores = class_scores(video_emb, prompt_emb, num_templates, mode)  # V x C
    return topk_accuracy(scores, labels), scores.T


def paragraph(sentences: Sequence[str]) -> str:
    """All sentences of a video joined into one query (DiDeMo and ActivityNet retrieval)."""
    return " ".join(s.strip() for s in sentences if s and s.strip())


def retrieval_texts(
    texts_per_video: Sequence[Sequence[str]], paragraphs: bool = False
) -> tuple[list[str], np.ndarray]:
    """Flatten per-video reference texts into query rows.

    Returns the texts (T,) and ``text_to_video`` (T,) int64. With ``paragraphs`` each video
    gives one text, its sentences joined. Every video needs at least one text.
    """
    texts: list[str] = []
    owner: list[int] = []
    for v, refs in enumerate(texts_per_video):
        refs = [paragraph(refs)] if paragraphs else [r for r in refs if r and r.strip()]
        if not refs or not refs[0]:
            raise ValueError(f"video {v} has no reference text")
        texts += refs
        owner += [v] * len(refs)
    return texts, np.asarray(owner, dtype=np.int64)


def zeroshot_retrieval(
    video_emb: np.ndarray,
    text_emb: np.ndarray,
    text_to_video: Sequence[int],
    dsl: bool = False,
) -> tuple[dict[str, float], np.ndarray]:
    """T2V and V2T metrics (plus ``dsl_*`` when asked) and the raw similarity T x V."""
    sim = np.asarray(text_emb, dtype=np.float32) @ np.asarray(video_emb, dtype=np.float32).T
    out = retrieval_metrics(sim, text_to_video)
    if dsl:
        out.update(dsl_retrieval_metrics(sim, text_to_video))
    return out, sim
