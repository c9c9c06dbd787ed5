"""Filter rules: what ``vtk filter`` keeps, parsed from its options or from one rule string.

A rule string (``vtk ablate filter --rules`` gives one per arm, separated by ``;``) is rules
joined by ``,`` or ``+``::

    none                      keep everything
    min:clip-text=0.25        keep clips whose score is >= 0.25
    max:motion=2              keep clips whose score is <= 2
    top:clip-text=0.3         keep the top 30% by the score (top_count for the rounding)
    dedup:frames              perceptual near-duplicates (hashes of sampled frames)
    dedup:embed:0.95          semantic near-duplicates (clip embedding cosine >= 0.95)
    dedup:0.95                short for dedup:embed:0.95

The rules apply in a fixed order, whatever order they are written in: clips lacking a score a
rule needs are dropped (reason ``unscored``), then ``min``/``max``, then ``dedup``, then
``top`` over the clips still kept. So ``top`` is a share of the clean, deduplicated set,
which is what a training budget means; InternVid's top 30% is taken over its whole corpus,
which is the same thing when ``top`` is the only rule.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from vtk.errors import VtkError

SCORE_NAME = re.compile(r"[a-z][a-z0-9_.-]*")


def top_count(fraction: float, n: int) -> int:
    """How many clips ``top:NAME=fraction`` keeps of ``n``: ``floor(fraction * n + 0.5)``,
    i.e. rounded to the nearest, halves up (Python's ``round`` would round halves to even:
    0.5 of 5 would keep 2, here 3). 0.3 of 3 keeps 1, of 5 keeps 2, of 10 keeps 3."""
    if not 0.0 <= fraction <= 1.0:
        raise VtkError(f"top fraction {fraction}: must be between 0 and 1")
    return min(n, int(math.floor(fraction * n + 0.5)))


@dataclass
class Rules:
    """What to keep. ``dedup``: None, ``"frames"`` or ``"embed:T"``."""

    min: dict[str, float] = field(default_factory=dict)
    max: dict[str, float] = field(default_factory=dict)
    top: dict[str, float] = field(default_factory=dict)
    dedup: str | None = None

    def scores_needed(self) -> set[str]:
        return set(self.min) | set(self.max) | set(self.top)

    def is_empty(self) -> bool:
        return not (self.min or self.max or self.top or self.dedup)

    def as_list(self) -> list[str]:
        """The rules as rule strings, in the order they apply."""
        out = [f"min:{k}={v:g}" for k, v in self.min.items()]
        out += [f"max:{k}={v:g}" for k, v in self.max.items()]
        out += [f"dedup:{self.dedup}"] if self.dedup else []
        out += [f"top:{k}={v:g}" for k, v in self.top.items()]
        return out

    def __str__(self) -> str:
        return ", ".join(self.as_list()) or "none"

    def dedup_threshold(self) -> float | None:
        """T of ``embed:T``; None for frames or no dedup."""
        if self.dedup and self.dedup.startswith("embed:"):
            return float(self.dedup.split(":", 1)[1])
        return None


def _pair(text: str, what: str) -> tuple[str, float]:
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not SCORE_NAME.fullmatch(name):
        raise VtkError(f"{what} {text!r}: expected NAME=NUMBER, e.g. clip-text=0.25")
    try:
        number = float(value)
    except ValueError:
        raise VtkError(f"{what} {text!r}: {value.strip()!r} is not a number") from None
    if not math.isfinite(number):
        raise VtkError(f"{what} {text!r}: not a finite number")
    return name, number


def parse_dedup(value: str) -> str:
    """``frames``, ``embed:T`` or ``T`` (embed) -> ``frames`` | ``embed:T``."""
    v = value.strip()
    if v == "frames":
        return v
    t = v.removeprefix("embed:")
    try:
        threshold = float(t)
    except ValueError:
        raise VtkError(f"--dedup {value!r}: give frames or embed:T (T a cosine, e.g. "
                       f"embed:0.95)") from None
    if not -1.0 <= threshold <= 1.0:
        raise VtkError(f"--dedup {value!r}: the cosine threshold must be in [-1, 1]")
    return f"embed:{threshold:g}"


def build_rules(min_=(), max_=(), top=(), dedup: str | None = None) -> Rules:
    """From ``vtk filter``'s options (each a list of NAME=X strings)."""
    rules = Rules()
    for what, items, target in (("--min", min_, rules.min), ("--max", max_, rules.max),
                                ("--top", top, rules.top)):
        for item in items:
            name, value = _pair(item, what)
            target[name] = value
    for name, f in rules.top.items():
        if not 0.0 <= f <= 1.0:
            raise VtkError(f"--top {name}={f:g}: the share kept must be between 0 and 1")
    if dedup is not None:
        rules.dedup = parse_dedup(dedup)
    return rules


def parse_rules(text) -> Rules:
    """A Rules from a rule string (module docstring), a list of them, or a Rules."""
    if isinstance(text, Rules):
        return text
    if isinstance(text, (list, tuple)):
        text = ",".join(text)
    mins, maxs, tops, dedup = [], [], [], None
    parts = [p.strip() for p in re.split(r"[,+]", str(text))]
    if not any(parts) or (not all(parts) and len(parts) > 1):  # '', ',,', 'a,,b': a typo
        raise VtkError(f"rules {str(text)!r}: an empty rule (give 'none' to keep every clip; "
                       f"rules are joined by ',' or '+')")
    for part in parts:
        if part == "none":
            continue
        kind, colon, rest = part.partition(":")
        if not colon:
            raise VtkError(f"rule {part!r}: expected KIND:..., e.g. top:clip-text=0.3 (kinds: "
                           f"min, max, top, dedup, none)")
        if kind == "min":
            mins.append(rest)
        elif kind == "max":
            maxs.append(rest)
        elif kind == "top":
            tops.append(rest)
        elif kind == "dedup":
            if dedup is not None:
                raise VtkError(f"rule {part!r}: one dedup rule at most")
            if not rest.strip():
                raise VtkError(f"rule {part!r}: give dedup:frames or dedup:embed:T (T a "
                               f"cosine, e.g. dedup:0.95)")
            dedup = rest
        else:
            raise VtkError(f"rule {part!r}: unknown kind {kind!r} (kinds: min, max, top, dedup, "
                           f"none)")
    return build_rules(mins, maxs, tops, dedup)
