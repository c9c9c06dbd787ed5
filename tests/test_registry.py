"""vtk.registry: the one table decoders, captioners, summarisers and text towers are chosen by."""

import pytest

from vtk.captions import get_captioner, get_summarizer
from vtk.captions.base import CAPTIONERS
from vtk.captions.summarize import SUMMARIZERS
from vtk.data.decoders import BACKENDS, get_decoder
from vtk.errors import VtkError
from vtk.model.text import TOWERS, build_text_tower
from vtk.registry import Registry


@pytest.mark.parametrize("call, known", [
    (lambda: get_decoder("nope"), "torchcodec, decord, pyav"),
    (lambda: get_captioner("nope"),
     "shapes, tagger, hf:<hub-id-or-local-path>, vlm:<hub-id-or-local-path>"),
    (lambda: get_summarizer("nope"), "rules, hf:<hub-id-or-local-path>"),
    (lambda: build_text_tower("nope", 16), "tiny, minilm, clip, viclip"),
    (lambda: get_captioner("hf:"),
     "shapes, tagger, hf:<hub-id-or-local-path>, vlm:<hub-id-or-local-path>"),
])
def test_an_unknown_name_is_one_line_listing_the_known_ones(call, known):
    with pytest.raises(VtkError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and ("'nope'" in msg or "'hf:'" in msg)
    assert msg.endswith(f"(known: {known})")


@pytest.mark.parametrize("registry", [BACKENDS, CAPTIONERS, SUMMARIZERS, TOWERS])
def test_a_backend_whose_module_is_missing_gives_the_install_hint(registry):
    registry.add("ghost", "vtk.no_such_backend:make", extra="ghost")
    registry.add("ghost2", "vtk.no_such_backend:make", package="ghost-lib")
    try:
        with pytest.raises(VtkError, match=r"is not installed \(No module named 'vtk.no_such_"
                                           r"backend'\); install it with: pip install "
                                           r"'vtk-videotext\[ghost\]'$"):
            registry.build("ghost")
        with pytest.raises(VtkError, match="install it with: pip install ghost-lib$"):
            registry.build("ghost2")
    finally:
        del registry.entries["ghost"], registry.entries["ghost2"]


def test_a_family_passes_its_parameter_first():
    reg = Registry("thing")
    reg.add("join:", "os.path:join", param="<tail>")
    reg.add("plain", "os.path:basename")
    assert reg.build("join:a", "b") == "a/b" and reg.build("plain", "/x/y") == "y"
    assert list(reg) == ["plain"] and "join:z" in reg and "join:" not in reg
    assert reg.known() == "join:<tail>, plain"


def test_the_registries_build_the_real_backends():
    assert get_decoder("pyav").name == "pyav"
    assert get_captioner("shapes").name == "shapes"
    assert get_summarizer("rules").name == "rules"
    assert build_text_tower("tiny", 16)(["a red circle"]).shape == (1, 16)
