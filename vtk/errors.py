"""User-facing errors: one line that names the input and the reason."""

from __future__ import annotations

import importlib


class VtkError(Exception):
    """An error the CLI prints as one red line (no traceback) and exits non-zero with."""


def require(module: str, extra: str | None = None, package: str | None = None):
    """Import an optional dependency or raise a VtkError saying what to install.

    >>> np = require("numpy")
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - exercised when the extra is absent
        hint = install_hint(module, extra, package)
        raise VtkError(f"{module} is not installed ({e}); install it with: {hint}") from None


def install_hint(module: str, extra: str | None = None, package: str | None = None) -> str:
    """The pip command that provides ``module``: the vtk extra, else the package."""
    return f"pip install 'vtk-videotext[{extra}]'" if extra else f"pip install {package or module}"


def check_keys(given, names, what: str) -> None:
    """A VtkError for the first key of ``given`` not among ``names`` (a config's fields),
    naming the closest known one: a known name the key starts with or holds as a word
    (``mask_ratio`` -> ``mask``), else the most similar spelling. A typo must not run with the
    default silently."""
    import difflib

    names = list(names)
    for key in given:
        if key in names:
            continue
        words = str(key).split("_")
        close = sorted((n for n in names if str(key).startswith(n) or n in words),
                       key=len, reverse=True) or \
            difflib.get_close_matches(str(key), names, n=1, cutoff=0.0)
        raise VtkError(f"unknown {what} {key!r}"
                       + (f" (did you mean {close[0]!r}?)" if close else ""))
