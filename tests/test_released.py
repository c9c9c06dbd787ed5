"""InternVid's released ViCLIP weights: the official key layout into vtk and back, the real
B/16 and L/14 layouts, a forward pass against the official computation written out here from
the layout (nn.MultiheadAttention's math, QuickGELU, EOT pooling), OpenAI's BPE ids, and the
converted run working as any vtk run (eval, --init)."""

import json

import pytest
import torch
import torch.nn.functional as F

from vtk.errors import VtkError
from vtk.model import build_model
from vtk.model import released as R

torch.set_num_threads(1)
needs_bpe = pytest.mark.skipif(
    __import__("importlib").util.find_spec("open_clip") is None,
    reason="OpenAI's BPE vocabulary comes from open_clip_torch (pip install --no-deps "
           "open_clip_torch)")


def official_state(size="tiny", seed=0, frames=8) -> dict:
    """A state dict with the official keys and shapes, random values (LayerNorm gains near 1,
    everything else small, as trained weights are)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in R.Layout.of(size, frames=frames).shapes().items():
        t = torch.randn(shape, generator=g) * 0.05
        if k.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight",
                       "ln_final.weight")):
            t += 1.0
        out[k] = t
    out["temp"] = torch.tensor(0.0123)
    return out


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("released") / "ViCLIP-tiny.pth"
    state = official_state()
    torch.save({"model": state}, path)
    return path, state


def test_real_b16_and_l14_layouts_map_onto_vtk_models_of_those_sizes():
    # the official code's shapes (viclip_vision.py, viclip_text.py: B/16 and L/14 towers, 8
    # frames, 32 text tokens, OpenAI's 49408 BPE ids)
    expect = {"b16": {"vision_encoder.conv1.weight": (768, 3, 1, 16, 16),
                      "vision_encoder.positional_embedding": (197, 768),
                      "vision_encoder.proj": (768, 512),
                      "text_encoder.token_embedding.weight": (49408, 512),
                      "text_encoder.positional_embedding": (32, 512),
                      "text_encoder.text_projection": (512, 512)},
              "l14": {"vision_encoder.conv1.weight": (1024, 3, 1, 14, 14),
                      "vision_encoder.positional_embedding": (257, 1024),
                      "vision_encoder.temporal_positional_embedding": (1, 8, 1024),
                      "vision_encoder.proj": (1024, 768),
                      "vision_encoder.transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
                      "text_encoder.transformer.resblocks.11.attn.in_proj_weight": (2304, 768),
                      "text_encoder.text_projection": (768, 768)}}
    for size, known in expect.items():
        shapes = R.Layout.of(size).shapes()
        assert {k: shapes[k] for k in known} == known
        blocks = {"b16": 12, "l14": 24}[size]
        assert len(shapes) == 15 + 12 * (blocks + 12)
        meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        assert R.detect(meta).size == size
        with torch.device("meta"):  # no memory, no time: shapes only
            model = build_model(dict(model=size, text="viclip", frames=8))
        ours = {k: tuple(v.shape) for k, v in R.to_vtk(meta).items()}
        assert ours == {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in R.from_vtk(R.to_vtk(meta)).items()} == shapes


def test_official_to_vtk_and_back_is_exact(tiny_pth):
    _, state = tiny_pth
    ours = R.to_vtk(state)
    q, k, v = (ours[f"video.encoder.layers.2.self_attn.{p}.weight"] for p in ("q_proj", "k_proj",
                                                                             "v_proj"))
    stacked = state["vision_encoder.transformer.resblocks.2.attn.in_proj_weight"]
    assert torch.equal(torch.cat([q, k, v]), stacked)
    assert torch.equal(ours["video.proj.weight"], state["vision_encoder.proj"].T)
    assert torch.equal(ours["text.proj.weight"], state["text_encoder.text_projection"].T)
    assert torch.equal(ours["video.embeddings.patch_embedding.weight"],
                       state["vision_encoder.conv1.weight"][:, :, 0])
    assert ours["logit_scale"].item() == pytest.approx(-torch.tensor(0.0123).log().item())
    back = R.from_vtk(ours)
    assert set(back) == set(state)
    for name, t in state.items():
        if name == "temp":  # log, stored in float32, then exp: a few units of its last place
            assert back[name].item() == pytest.approx(t.item(), rel=2 ** -21)
        else:
            assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


def test_missing_unknown_and_misshapen_keys_are_one_error_listing_them(tiny_pth):
    _, state = tiny_pth
    bad = dict(state)
    for i in range(4):
        del bad[f"vision_encoder.transformer.resblocks.{i}.ln_2.bias"]
    del bad["text_encoder.ln_final.weight"]
    bad["vision_encoder.extra_head"] = torch.zeros(3)
    bad["text_encoder.positional_embedding"] = torch.zeros(77, 64)
    with pytest.raises(VtkError) as err:
        R.to_vtk(bad)
    msg = str(err.value)
    assert "\n" not in msg
    missing = msg.split("missing: ")[1].split(";")[0].split(", ")
    assert sorted(missing) == ["text_encoder.ln_final.weight",
                               "vision_encoder.transformer.resblocks.0-3.ln_2.bias"]
    assert "unexpected: vision_encoder.extra_head" in msg
    assert "text_encoder.positional_embedding 77x64 (expected 32x64)" in msg
    with pytest.raises(VtkError, match="none of vtk's sizes"):
        R.detect({**state, "vision_encoder.conv1.weight": torch.zeros(96, 3, 1, 8, 8)})


def test_a_file_that_is_not_a_state_dict_is_one_line(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(VtkError, match="not a readable torch checkpoint"):
        R.read(tmp_path / "x.pth")
    torch.save({"model": [1, 2]}, tmp_path / "y.pth")
    with pytest.raises(VtkError, match="not a ViCLIP state dict"):
        R.read(tmp_path / "y.pth")
    with pytest.raises(VtkError, match="no such ViCLIP checkpoint"):
        build_model(dict(init=f"viclip:{tmp_path / 'absent.pth'}"))


# --- the official computation, written from the layout ------------------------------------


def block(x, sd, p, heads, mask=None):
    """One residual attention block, sequence-first (L x B x E): pre-LN attention with the
    stacked q/k/v projection, then a QuickGELU MLP."""
    E = x.shape[-1]
    h = F.layer_norm(x, (E,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
    a, _ = F.multi_head_attention_forward(
        h, h, h, E, heads, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"], None,
        None, False, 0.0, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"],
        training=False, need_weights=False, attn_mask=mask)
    x = x + a
    h = F.layer_norm(x, (E,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
    h = F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)
    return x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])


def official_video(sd, video, heads, layers):
    """video B x T x 3 x H x W -> B x D: a temporal-kernel-1 Conv3d, spatial positions on
    every token, temporal positions on the patches (patch-major order), CLS, joint attention."""
    v = "vision_encoder."
    w = sd[v + "conv1.weight"]
    x = F.conv3d(video.transpose(1, 2), w, stride=(1, w.shape[-2], w.shape[-1]))
    B, E = x.shape[:2]
    x = x.flatten(3).permute(0, 3, 2, 1)  # B x N x T x E
    pos = sd[v + "positional_embedding"]
    x = x + pos[1:, None] + sd[v + "temporal_positional_embedding"][0]
    cls = (sd[v + "class_embedding"] + pos[0]).expand(B, 1, E)
    x = torch.cat([cls, x.reshape(B, -1, E)], dim=1)
    x = F.layer_norm(x, (E,), sd[v + "ln_pre.weight"], sd[v + "ln_pre.bias"]).transpose(0, 1)
    for i in range(layers):
        x = block(x, sd, f"{v}transformer.resblocks.{i}.", heads)
    return F.layer_norm(x[0], (E,), sd[v + "ln_post.weight"], sd[v + "ln_post.bias"]) @ sd[v + "proj"]


def official_text(sd, ids):
    """ids B x 32 (zero-padded, EOT the largest id) -> B x D: causal attention, the EOT
    token's final state through the projection."""
    t = "text_encoder."
    W, S = sd[t + "ln_final.weight"].shape[0], ids.shape[1]
    x = (sd[t + "token_embedding.weight"][ids] + sd[t + "positional_embedding"][:S]).transpose(0, 1)
    mask = torch.full((S, S), float("-inf")).triu(1)
    for i in range(12):
        x = block(x, sd, f"{t}transformer.resblocks.{i}.", max(1, W // 64), mask)
    x = F.layer_norm(x.transpose(0, 1), (W,), sd[t + "ln_final.weight"], sd[t + "ln_final.bias"])
    return x[torch.arange(x.shape[0]), ids.argmax(-1)] @ sd[t + "text_projection"]


def test_converted_video_tower_computes_what_the_official_one_does(tiny_pth):
    path, state = tiny_pth
    model = build_model(dict(init=f"viclip:{path}", frames=8)).eval()
    assert (model.cfg.model, model.cfg.text, model.cfg.size, model.cfg.embed_dim) == \
        ("tiny", "viclip", 32, 64)
    assert model.scale().item() == pytest.approx(1 / 0.0123, rel=1e-6)
    video = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = official_video(state, video, heads=4, layers=4)
        ours = model.video(video)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


@needs_bpe
def test_converted_text_tower_computes_what_the_official_one_does(tiny_pth):
    path, state = tiny_pth
    model = build_model(dict(init=f"viclip:{path}")).eval()
    texts = ["a photo of a cat", "someone is riding a bike down a hill, then falls over"]
    tok = model.text.tokenizer(texts, padding=True, truncation=True, max_length=32,
                               return_tensors="pt")
    ids = torch.zeros(2, 32, dtype=torch.long)  # the official tokenize(): zero-padded to 32
    for i, (row, keep) in enumerate(zip(tok["input_ids"], tok["attention_mask"])):
        ids[i, : int(keep.sum())] = row[keep.bool()]
    with torch.no_grad():
        ref = official_text(state, ids)
        ours = model.text(texts)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    assert not any(p.requires_grad for p in model.text.parameters())  # frozen, as ViCLIP
    assert any(k.startswith("text.backbone.") for k in model.persistent_state_dict())


@needs_bpe
def test_openai_bpe_ids_from_the_open_clip_wheel():
    from vtk.model.text import openai_clip_tokenizer

    tok = openai_clip_tokenizer()
    assert len(tok) == 49408
    # OpenAI CLIP's ids for this sentence: <|startoftext|> a photo of a cat <|endoftext|>
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    long = tok(["word " * 60], truncation=True, max_length=32)["input_ids"][0]
    assert len(long) == 32 and long[0] == 49406 and long[-1] == 49407  # EOT kept when cut


@needs_bpe
def test_converted_run_is_a_vtk_run_and_saves_back_to_the_official_layout(tiny_pth, tmp_path):
    from vtk.train import load_run

    path, state = tiny_pth
    run = R.convert(f"viclip:{path}", tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["text"], config["normalize"], config["init"]) == \
        ("tiny", "viclip", "imagenet", None)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["converted_from"]["path"] == str(path.resolve())
    assert len(summary["converted_from"]["sha256"]) == 64
    stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    assert R.convert(str(path), run) == run  # the same source: reused, not rewritten
    assert (run / "checkpoint.pt").stat().st_mtime_ns == stamp
    model, _ = load_run(run)
    out = R.save(model, tmp_path / "again.pth")
    again = torch.load(out, weights_only=True)["model"]
    for name, t in state.items():
        if name != "temp":
            assert torch.equal(again[name], t), name
    other = tmp_path / "other.pth"
    torch.save({"model": official_state(seed=1)}, other)
    with pytest.raises(VtkError, match="holds another run"):
        R.convert(str(other), run)


def test_temporal_embedding_follows_the_runs_frame_count(tiny_pth):
    _, state = tiny_pth
    four = R.to_vtk(state, frames=4)["video.temporal_embedding"]
    eight = state["vision_encoder.temporal_positional_embedding"]
    assert four.shape == (1, 4, 1, 64)
    assert torch.equal(four[0, 0, 0], eight[0, 0]) and torch.equal(four[0, -1, 0], eight[0, -1])
