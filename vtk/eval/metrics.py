"""Zero-shot metrics: pure functions over score matrices (numpy in, plain floats out).

Conventions (docs/evaluation.md):
- Rows are queries, columns candidates. ``scores[q, c]`` is higher for a better match.
- Ranks are 1-based. With several ground truths for one query (MSVD: ~40 captions a video,
  seen from the video side) the query is scored by its best-ranked ground truth, so the other
  ground truths never count against it.
- **Ties are pessimistic**: a wrong candidate that scores exactly as high as the best ground
  truth is ranked above it. ``rank = 1 + #{wrong c : scores[q, c] >= max_gt scores[q]}``.
  A constant model therefore gets the worst rank, never R@1 = 1, and the result does not
  depend on the order of the candidates.
- Recalls and accuracies are fractions in [0, 1] (the report prints them as percentages).
"""

from __future__ import annotations

import numpy as np

RECALL_KS = (1, 5, 10)


def query_ranks(scores: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """1-based rank of the best ground truth of every query, ties counted against it.

    scores: Q x C float; gt: Q x C bool, at least one True per row. Returns Q int64.
    """
    scores = np.asarray(scores)
    gt = np.asarray(gt, dtype=bool)
    if scores.shape != gt.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and gt {gt.shape} must be equal 2-D shapes")
    if not gt.any(axis=1).all():
        raise ValueError("every query needs at least one ground truth")
    best_gt = np.where(gt, scores, -np.inf).max(axis=1, keepdims=True)  # Q x 1
    beaten = (~gt) & (scores >= best_gt)  # wrong candidates at or above the best ground truth
    return 1 + beaten.sum(axis=1).astype(np.int64)


def recall_summary(ranks: np.ndarray, prefix: str = "", ks=RECALL_KS) -> dict[str, float]:
    """R@k (fraction), median rank ``mdr`` and mean rank ``mnr`` of 1-based ranks (Q,)."""
    ranks = np.asarray(ranks)
    out = {f"{prefix}r{k}": float((ranks <= k).mean()) for k in ks}
    out[f"{prefix}mdr"] = float(np.median(ranks))
    out[f"{prefix}mnr"] = float(ranks.mean())
    return out


def labels_to_gt(labels, num_classes: int) -> np.ndarray:
    """One-hot ground truth N x C (bool) from class indices (N,)."""
    labels = np.asarray(labels, dtype=np.int64)
    gt = np.zeros((labels.shape[0], num_classes), dtype=bool)
    gt[np.arange(labels.shape[0]), labels] = True
    return gt


def topk_accuracy(scores: np.ndarray, labels, ks=(1, 5)) -> dict[str, float]:
    """Top-k accuracy (fraction) of class scores V x C against labels (V,); ties pessimistic.

    Returns ``{"top1", "top5", "avg"}`` where avg = (top1 + top5) / 2 (ViCLIP's AVG). With
    fewer than k classes top-k is 1.
    """
    scores = np.asarray(scores)
    ranks = query_ranks(scores, labels_to_gt(labels, scores.shape[1]))
    out = {f"top{k}": float((ranks <= k).mean()) for k in ks}
    if "top1" in out and "top5" in out:
        out["avg"] = (out["top1"] + out["top5"]) / 2
    return out


def text_video_gt(text_to_video, num_videos: int) -> np.ndarray:
    """Ground truth T x V (bool): text t describes video ``text_to_video[t]``."""
    return labels_to_gt(text_to_video, num_videos)


def retrieval_metrics(sim: np.ndarray, text_to_video) -> dict[str, float]:
    """Text-to-video and video-to-text metrics of one similarity matrix.

    sim: T x V (rows texts, columns videos); text_to_video: (T,) video index of each text.
    Every video needs at least one text. Returns ``t2v_r1 t2v_r5 t2v_r10 t2v_mdr t2v_mnr`` and
    the same with ``v2t_`` (a video's rank is that of its best-ranked caption).
    """
    sim = np.asarray(sim)
    gt = text_video_gt(text_to_video, sim.shape[1])
    out = recall_summary(query_ranks(sim, gt), "t2v_")
    out.update(recall_summary(query_ranks(sim.T, gt.T), "v2t_"))
    return out


def softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def dsl(sim: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Dual-softmax rescoring of a queries x candidates matrix: ``sim * softmax(sim / temperature,
    dim=0)``, the softmax running over all queries (so it needs every query at once).

    With ``temperature=1`` on cosine similarities this is what ViCLIP's evaluation does. Returns
    float64 of the same shape.
    """
    sim = np.asarray(sim, dtype=np.float64)
    return sim * softmax(sim / temperature, axis=0)


def dsl_retrieval_metrics(sim: np.ndarray, text_to_video, temperature: float = 1.0):
    """``retrieval_metrics`` after DSL, each direction rescored with its own queries (T2V over
    texts, V2T over videos); keys carry a ``dsl_`` prefix (``dsl_t2v_r1`` ...)."""
    sim = np.asarray(sim)
    gt = text_video_gt(text_to_video, sim.shape[1])
    out = recall_summary(query_ranks(dsl(sim, temperature), gt), "dsl_t2v_")
    out.update(recall_summary(query_ranks(dsl(sim.T, temperature), gt.T), "dsl_v2t_"))
    return out
