"""Zero-shot classification and retrieval over hand-built embeddings."""

import numpy as np
import pytest

from vtk.eval import zeroshot as Z


def unit(*xs):
    v = np.array(xs, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_sixteen_kinetics_templates_and_class_major_prompts():
    assert len(Z.KINETICS_TEMPLATES) == 16
    assert all("{}" in t for t in Z.KINETICS_TEMPLATES)
    prompts = Z.class_prompts(["jumping", "spinning"], ["A video of {}", "{}"])
    assert prompts == ["A video of jumping", "jumping", "A video of spinning", "spinning"]
    assert Z.resolve_templates(None) == Z.KINETICS_TEMPLATES
    assert Z.resolve_templates("none") == ("{}",)
    with pytest.raises(ValueError):
        Z.resolve_templates(["no slot"])


# Class 0: both templates embed to e1. Class 1: its templates point apart (e2, e3), so their
# mean embedding is short (norm 1/sqrt 2) and embedding averaging boosts class 1 by sqrt 2.
PROMPTS = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
VIDEO = unit(0.55, 0.8324, 0.0676)[None]  # close to unit already


def test_per_template_similarity_average_is_viclip_mode():
    s = Z.class_scores(VIDEO, PROMPTS, num_templates=2)
    v = VIDEO[0]
    np.testing.assert_allclose(s[0], [v[0], (v[1] + v[2]) / 2], rtol=1e-6)
    assert s[0].argmax() == 0


def test_embedding_average_mode_differs_as_computed_by_hand():
    s = Z.class_scores(VIDEO, PROMPTS, num_templates=2, mode="embedding")
    v = VIDEO[0]
    np.testing.assert_allclose(s[0], [v[0], (v[1] + v[2]) / np.sqrt(2)], rtol=1e-6)
    assert s[0].argmax() == 1


def test_zeroshot_classification_returns_metrics_and_class_by_video_scores():
    videos = np.stack([unit(1, 0.1, 0), unit(0, 1, 0.2), unit(0.1, 0, 1)])
    prompts = np.eye(3).repeat(2, axis=0)  # 3 classes x 2 templates, class-major
    m, scores = Z.zeroshot_classification(videos, prompts, [0, 1, 1], num_templates=2)
    assert scores.shape == (3, 3)  # classes x videos
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["top5"] == 1.0 and m["avg"] == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(ValueError):
        Z.class_scores(videos, prompts[:5], num_templates=2)


def test_retrieval_texts_flatten_and_paragraphs():
    per_video = [["a red circle moves left"], ["first it grows.", " then it spins. "], ["x", "y"]]
    texts, owner = Z.retrieval_texts(per_video)
    assert texts == ["a red circle moves left", "first it grows.", " then it spins. ", "x", "y"]
    assert owner.tolist() == [0, 1, 1, 2, 2]
    texts, owner = Z.retrieval_texts(per_video, paragraphs=True)
    assert texts[1] == "first it grows. then it spins."
    assert owner.tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        Z.retrieval_texts([["ok"], []])


def test_zeroshot_retrieval_perfect_and_dsl_keys():
    videos = np.eye(3)
    texts = np.array([[1, 0, 0], [0, 1, 0], [0, 0.6, 0.8], [0, 0, 1]], dtype=np.float64)
    m, sim = Z.zeroshot_retrieval(videos, texts, [0, 1, 2, 2], dsl=True)
    assert sim.shape == (4, 3)
    assert m["t2v_r1"] == 1.0 and m["v2t_r1"] == 1.0 and m["t2v_mdr"] == 1.0
    assert m["dsl_t2v_r1"] == 1.0 and "dsl_v2t_mnr" in m
    m, _ = Z.zeroshot_retrieval(videos, texts, [0, 1, 2, 2])
    assert not any(k.startswith("dsl_") for k in m)
