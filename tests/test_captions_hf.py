"""hf: captioners and summarisers run the real transformers path (processor, generate,
decode) on tiny random models built offline: BLIP, BLIP-2, GIT, GPT-2 and T5."""

import numpy as np
import pytest

from vtk.captions import Captioning, CaptionSpec, get_captioner
from vtk.captions.hf import HFSummarizer
from vtk.captions.testing import BUILDERS, tiny_tokenizer
from vtk.errors import VtkError
from vtk.sources import synth
from vtk.types import Clip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {name: str(build(root / name)) for name, build in BUILDERS.items()}


def _clips(n=3):
    preset = synth.get_preset("train")
    made = [synth.make_clip(preset, 9, i) for i in range(n)]
    return [Clip(f"synth-train-s9-{i:06d}", 0, frames, preset.fps, 0.0, 2.0,
                 meta={"synth": truth}) for i, (frames, truth) in enumerate(made)]


def test_offline_tokenizer_is_not_empty(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    assert len(tok) > 100
    assert tok.unk_token_id not in tok("a small red circle moves left")["input_ids"]


@pytest.mark.parametrize("arch", ["blip", "blip2", "git"])
def test_image_to_text_models_caption_batches(models, arch):
    cap = get_captioner(f"hf:{models[arch]}", "cpu")
    frames = np.stack([c.frames[8] for c in _clips(3)])
    texts = cap.caption(frames)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)
    assert texts == cap.caption(frames)  # greedy decoding: deterministic
    assert cap.caption(frames[:1]) == texts[:1]  # batching does not change the result


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_text_models_summarise_frame_captions(models, arch):
    s = HFSummarizer(models[arch], "cpu")
    assert s.seq2seq == (arch == "t5")
    prompt = s.prompt(["a red circle on the left", "a red circle in the centre"], [0.0, 0.5])
    assert "0.5s: a red circle in the centre" in prompt
    out = s.summarize(["a red circle on the left", "a red circle in the centre"], [0.0, 0.5])
    assert isinstance(out, str) and out
    assert "summarize" not in out  # the prompt is not echoed back


def test_captioning_with_hf_models_end_to_end(models):
    spec = CaptionSpec(mode="both", coarse_model=f"hf:{models['blip2']}",
                       fine_model=f"hf:{models['git']}", summarizer=f"hf:{models['gpt2']}")
    results = Captioning(spec).run(_clips(2))
    for r in results:
        assert "error" not in r, r
        assert r["caption_models"] == {"coarse": spec.coarse_model, "fine": spec.fine_model,
                                       "summarizer": spec.summarizer}
        c = r["captions"]
        assert c["coarse"] and c["fine"] and len(c["frames"]) == 8
        assert c["fused"] == f"{c['coarse']}. {c['fine']}"


def test_missing_model_folder_is_one_line_error(tmp_path):
    with pytest.raises(VtkError, match="cannot load"):
        get_captioner(f"hf:{tmp_path}/missing", "cpu")
    with pytest.raises(VtkError, match="cannot load"):
        HFSummarizer(str(tmp_path / "missing"), "cpu")


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_batched_summaries_match_one_at_a_time(models, arch):
    s = HFSummarizer(models[arch], "cpu")
    jobs = [(["a red circle"], [0.0], None),
            (["a small blue square on the left", "a small blue square in the centre",
              "a small blue square on the right"], [0.0, 0.5, 1.0], None)]
    assert s.summarize_batch(jobs) == [s.summarize(*job) for job in jobs]


@pytest.fixture
def hub_probe(monkeypatch):
    """hub_offline() probed afresh, and huggingface_hub's offline switch put back after."""
    from huggingface_hub import constants

    from vtk.captions.hf import hub_offline

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    hub_offline.cache_clear()
    yield
    hub_offline.cache_clear()


def test_an_offline_hub_id_fails_in_one_line_and_leaves_no_output(tmp_path, capsys,
                                                                   monkeypatch, hub_probe):
    """HF_HUB_OFFLINE=1, or a hub host that takes no connection (a closed port on 127.0.0.1):
    a hub id that is not in the cache is refused before OUT is made (it spent minutes in the
    hub client's retries, then left a .lock, an empty stats/ and a caption cache)."""
    import shutil
    import socket

    from data_helpers import run_cli

    from vtk.captions.hf import hub_offline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    args = ["shard", "synth:train?n=2", "--out", str(out), "--captions", "coarse",
            "--coarse-model", "hf:nobody/no-such-model", "--workers", "1"]
    code, err, _ = run_cli(args, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "hf:nobody/no-such-model" in err and "HF_HUB_OFFLINE=1" in err
    assert not out.exists()
    # a caption layer the same: refused before its folder is made
    assert run_cli(["shard", "synth:train?n=2", "--out", str(out), "--workers", "1",
                    "--quiet"], capsys)[0] == 0
    code, err, _ = run_cli(["caption", str(out), "--as", "x", "--fine-model",
                            "hf:nobody/no-such-model", "--quiet"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "HF_HUB_OFFLINE=1" in err, err
    assert not (out / "captions").exists()
    shutil.rmtree(out)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub_offline.cache_clear()
    code, err, _ = run_cli(["shard", "synth:train?n=2", "--out", str(out), "--captions", "fine",
                            "--summarizer", "hf:nobody/no-such-summarizer"], capsys)
    assert code == 1 and "127.0.0.1 unreachable" in err and "no-such-summarizer" in err, err
    assert not out.exists()


def test_a_build_that_fails_before_any_work_leaves_no_output(tmp_path, capsys):
    """A model folder that is not a model fails when the workers load it, after the writer
    opened OUT: OUT, made by this run, goes again."""
    from data_helpers import run_cli

    (tmp_path / "notamodel").mkdir()
    out = tmp_path / "out"
    code, err, _ = run_cli(["shard", "synth:train?n=2", "--out", str(out), "--captions",
                            "coarse", "--coarse-model", f"hf:{tmp_path / 'notamodel'}",
                            "--workers", "1"], capsys)
    assert code == 1 and "cannot load" in err, err
    assert not out.exists()
