"""Multi-scale captions from pixels: coarse (middle frame), fine (frames + summary), both.

>>> from vtk.captions import CaptionSpec, Captioning
>>> results = Captioning(CaptionSpec(mode="both")).run(clips)  # doctest: +SKIP

Captioners (``shapes``, ``tagger``, ``hf:<id-or-path>``) live behind one protocol and one
registry (``vtk.captions.base``); summarisers (``rules``, ``hf:<id-or-path>``) likewise
(``vtk.captions.summarize``).
"""

from vtk.captions.base import Captioner, get_captioner
from vtk.captions.captioning import Captioning, CaptionSpec, default_model, fine_indices
from vtk.captions.summarize import get_summarizer

__all__ = ["CaptionSpec", "Captioning", "Captioner", "get_captioner", "get_summarizer",
           "default_model", "fine_indices"]
