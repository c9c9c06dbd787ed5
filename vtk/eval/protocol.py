"""Evaluation protocols, and the card every eval.json entry carries: what decides its number.

A zero-shot figure depends on more than the model: which frames are read and how they are
cropped, the prompt templates and how they are combined, whether a video's queries are all its
captions or one, the text clean-up, dual softmax, weight interpolation with the init, the tie
rule. ``--protocol`` names a set of these; single options change one of them (the label then
says so: ``internvid+dsl=False``).

- ``plain``: what vtk does by default: raw cosine similarities (DSL figures, if asked, beside
  them), no weight interpolation, every caption a query, texts as written, the centre square.
- ``internvid``: InternVid's zero-shot setup as far as it is documented (docs/evaluation.md
  cites the source of each setting): DSL reported, WiSE-FT at 0.5 with the init, one caption
  per MSR-VTT video, their text clean-up, the whole frame resized to the input square.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from vtk.errors import VtkError

TIES = ("pessimistic: a wrong candidate scoring as high as the best ground truth ranks above "
        "it (InternVid's code ranks by argsort position instead; float ties are rare)")


@dataclass(frozen=True)
class Protocol:
    name: str = "plain"
    dsl: bool = False  # also score dual-softmax rescored retrieval (dsl_* beside the raw)
    report_dsl: bool = False  # the DSL figures are the reported ones (InternVid's are)
    wise_ft: float | None = None  # the trained model's share in a weight interpolation
    templates: str | tuple = "kinetics"  # classification prompts (vtk.eval.zeroshot)
    template_average: str = "similarity"  # similarity (ViCLIP) | embedding (CLIP)
    one_caption: tuple = ()  # benchmarks (base names) where each video's first caption alone is a query
    clean: str = "none"  # none | internvid (lower case, punctuation dropped)
    crop: str = "center"  # center (short side, centre square) | full (whole frame, squashed)
    overrides: dict = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """The protocol's name, plus the settings changed from it (``internvid+dsl=False``)."""
        if not self.overrides:
            return self.name
        return self.name + "+" + ",".join(f"{k}={_short(v)}" for k, v in sorted(self.overrides.items()))


def _short(value) -> str:
    if isinstance(value, (list, tuple)):
        return "custom" if value else "none"
    return str(value)


PROTOCOLS = {
    "plain": Protocol("plain"),
    "internvid": Protocol("internvid", dsl=True, report_dsl=True, wise_ft=0.5,
                          one_caption=("msrvtt",), clean="internvid", crop="full"),
}
CLEANS = ("none", "internvid")


def resolve(name: str | Protocol = "plain", **given) -> Protocol:
    """The protocol ``name`` with the settings in ``given`` that are not None put in (and
    recorded as overrides when they differ from it)."""
    if isinstance(name, Protocol):
        base = name
    elif name in PROTOCOLS:
        base = PROTOCOLS[name]
    else:
        raise VtkError(f"--protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    known = {f for f in Protocol.__dataclass_fields__
             if f not in ("name", "overrides", "report_dsl")}
    bad = set(given) - known
    if bad:
        raise ValueError(f"unknown protocol settings: {', '.join(sorted(bad))}")
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items()
               if v is not None}
    if changes.get("wise_ft") is False:  # --no-wise-ft: no interpolation
        changes["wise_ft"] = None
    if changes.get("clean", "none") not in CLEANS:
        raise VtkError(f"--clean {changes['clean']!r}: choose one of {', '.join(CLEANS)}")
    out = replace(base, **changes)
    overrides = {**base.overrides, **{k: v for k, v in changes.items()
                                       if getattr(base, k) != v}}
    return replace(out, overrides=overrides)


_DROP = str.maketrans({**{c: None for c in ",.'!?\"()*#:;~"}, "-": " ", "/": " "})


def clean_internvid(text: str) -> str:
    """InternVid's caption clean-up (``pre_text`` of ``InternVideo1/Pretrain/ViCLIP/dataset/
    utils.py``): lower case, the marks , . ' ! ? " ( ) * # : ; ~ dropped, hyphens and slashes
    made spaces, ``<person>`` read as person, spaces collapsed."""
    return " ".join(text.lower().translate(_DROP).replace("<person>", "person").split())


def cleaner(protocol: Protocol):
    return clean_internvid if protocol.clean == "internvid" else None


def split_of(card: dict, name: str, source: str) -> str:
    """The benchmark's split in words (from its annotation's name and kind)."""
    if card.get("synthetic"):
        return f"synthetic ({source}, its own seed stream)"
    ann = Path(card.get("annotation") or source).name
    base = name.removeprefix("synth-")
    if base == "msrvtt":
        return ("test 1k-A (JSFusion, one caption a video)" if ann.lower().endswith(".csv")
                else "test (full 2990 videos, 20 captions a video)")
    return {"k400": "validation", "k600": "validation", "k700": "validation",
            "lsmdc": "public test (1000 clips)", "didemo": "test (paragraphs)",
            "msvd": "test (test_list.txt)", "anet": "val_1 (paragraphs)"}.get(base, ann)


def annotation_hash(card: dict) -> str | None:
    from vtk.fileio import file_sha256

    path = card.get("annotation")
    if path and Path(path).is_file():
        return file_sha256(path)
    return None


def card(protocol: Protocol, entry: dict, bench_card: dict, info: dict, *, frames: int,
         size: int, normalize: str, max_tokens: int | None, model: dict, seed,
         wise: dict | None) -> dict:
    """The protocol card of one eval.json entry."""
    name, base = entry["name"], entry["name"].removeprefix("synth-")
    settings = info.get("settings") or {}
    source = entry.get("settings", {}).get("source", "")
    bench = {"name": name, "split": split_of(bench_card, name, source), "source": source,
             "annotation": bench_card.get("annotation"),
             "annotation_sha256": annotation_hash(bench_card),
             "videos": entry["num_videos"], "texts": entry["num_texts"],
             "missing": entry.get("missing", 0)}
    crop = ("whole frame resized to the square (aspect not kept)" if protocol.crop == "full"
            else "short side resized, centre square")
    video = {"count": frames, "rule": f"middle frame of each of {frames} equal segments",
             "crop": crop, "size": size, "normalize": normalize,
             "stored_fps": settings.get("fps"),
             "stored_short_side": settings.get("size") or "native"}
    text = {"clean": protocol.clean, "max_tokens": max_tokens}
    if entry["task"] == "classification":
        t = protocol.templates
        text.update(templates=t if isinstance(t, str) else list(t),
                    num_templates=len(entry["settings"].get("templates", [])),
                    template_average=protocol.template_average)
    else:
        text.update(captions_per_video="one (the first)" if base in protocol.one_caption
                    else "all", paragraph=bool(bench_card.get("paragraph")))
    scoring = {"dsl": protocol.dsl, "dsl_temperature": 1.0 if protocol.dsl else None,
               "reported": "dsl" if protocol.dsl and protocol.report_dsl
               and entry["task"] == "retrieval" else "raw",
               "ties": TIES, "wise_ft": protocol.wise_ft, "precision": "float32"}
    if wise:
        scoring.update(wise_ft_init=wise.get("init"), wise_ft_interpolated=wise.get(
            "interpolated"), wise_ft_kept=wise.get("kept"))
    return {"protocol": protocol.label, "base": protocol.name, "benchmark": bench,
            "frames": video, "text": text, "scoring": scoring, "seed": seed, "model": model}


def slots(c: dict, checkpoint: bool = True) -> dict[str, str]:
    """A card's settings in words, by slot (protocol, frames, text, scoring, WiSE-FT...)."""
    f, t, s = c.get("frames") or {}, c.get("text") or {}, c.get("scoring") or {}
    whole = "whole" in str(f.get("crop"))
    out = {"protocol": str(c.get("protocol", "?")),
           "frames": f"{f.get('count')} frames ({'whole frame' if whole else 'centre'} "
                     f"{f.get('size')} px, {f.get('normalize')})"}
    if "templates" in t:
        out["templates"] = f"{t.get('num_templates')} templates ({t.get('template_average')})"
    if "captions_per_video" in t:
        one = str(t["captions_per_video"]).startswith("one")
        out["captions"] = "one caption a video" if one else "every caption"
        out["scoring"] = "DSL" if s.get("reported") == "dsl" else "raw similarity"
    out["wise_ft"] = f"WiSE-FT {s['wise_ft']:g}" if s.get("wise_ft") is not None else "no WiSE-FT"
    if t.get("clean") and t["clean"] != "none":
        out["clean"] = f"{t['clean']} text clean-up"
    ck = (c.get("model") or {}).get("checkpoint_sha256")
    if checkpoint and ck:
        out["checkpoint"] = f"checkpoint {ck[:12]}"
    return out


def summary(c: dict) -> str:
    """One line of a card: what a reader needs beside a number."""
    return ", ".join(slots(c).values())


def merged(cards) -> str:
    """One line for the cards of several numbers (a table's): each setting once, the values
    that differ between them joined by ' / '."""
    order = ("protocol", "frames", "templates", "captions", "scoring", "wise_ft", "clean")
    by_slot: dict[str, list[str]] = {k: [] for k in order}
    for c in cards:
        for k, v in slots(c, checkpoint=False).items():
            if v not in by_slot.setdefault(k, []):
                by_slot[k].append(v)
    return ", ".join(" / ".join(v) for v in by_slot.values() if v)
