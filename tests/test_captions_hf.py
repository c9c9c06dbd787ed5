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
