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
