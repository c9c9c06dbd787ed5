"""One way to register a backend: a name -> "module:attr" table, imported on first use.

Decoders, captioners, summarisers and text towers each keep one ``Registry``. A backend is a
small module (or a factory in one) behind its kind's protocol; the registry only knows where it
lives and which extra provides it, so importing vtk never imports a backend's library.

    >>> DECODERS = Registry("decoder")
    >>> DECODERS.add("pyav", "vtk.data.decoders.pyav:make")
    >>> DECODERS.add("decord", "vtk.data.decoders.decord:make", extra="decord")
    >>> dec = DECODERS.build("pyav", threads=1)  # doctest: +SKIP

A name ending in ``:`` is a family with a parameter: ``add("hf:", ..., param="<hub-id>")``
makes ``build("hf:Salesforce/blip")`` call the factory with ``"Salesforce/blip"`` first.
An unknown name, or a backend whose module is missing, is one ``VtkError`` line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from vtk.errors import VtkError, install_hint


@dataclass(frozen=True)
class Entry:
    target: str  # "module:attr", a factory (or class) called with the build arguments
    extra: str | None = None  # the vtk-videotext extra that provides the backend's library
    package: str | None = None  # or the pip package, when no extra does
    param: str | None = None  # for a family ("hf:"): what follows the colon, for the help


class Registry:
    """Backends of one ``kind`` (the word used in errors: "decoder", "text tower")."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Entry] = {}

    def add(self, name: str, target: str, extra: str | None = None, package: str | None = None,
            param: str | None = None) -> None:
        if name.endswith(":") != (param is not None):
            raise ValueError(f"{name!r}: a family name ends in ':' and has a param, nothing else")
        self.entries[name] = Entry(target, extra, package, param)

    def __iter__(self):
        """The plain names, in registration order (families left out: they need a parameter)."""
        return (n for n in self.entries if not n.endswith(":"))

    def __contains__(self, name: str) -> bool:
        return self._lookup(name) is not None

    def known(self) -> str:
        """'a, b, hf:<param>' for errors and help texts."""
        return ", ".join(n + (e.param or "") for n, e in self.entries.items())

    def _lookup(self, name: str) -> tuple[Entry, tuple] | None:
        if name in self.entries and not name.endswith(":"):
            return self.entries[name], ()
        family, sep, arg = name.partition(":")
        entry = self.entries.get(family + sep) if sep else None
        return (entry, (arg,)) if entry is not None and arg else None

    def load(self, name: str):
        """The factory registered as ``name`` (imported now), and the family's parameter."""
        found = self._lookup(name)
        if found is None:
            raise VtkError(f"unknown {self.kind} {name!r} (known: {self.known()})")
        entry, args = found
        module, _, attr = entry.target.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            hint = install_hint(module, entry.extra, entry.package)
            raise VtkError(f"{self.kind} {name!r} is not installed ({e}); install it with: "
                           f"{hint}") from None
        return getattr(mod, attr), args

    def build(self, name: str, *args, **kwargs):
        """The backend ``name`` built with these arguments (a family's parameter goes first)."""
        factory, param = self.load(name)
        return factory(*param, *args, **kwargs)
