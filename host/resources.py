"""Locate the package data that ships inside microtrain: the C runtime and the board TOMLs.

Contract: ``firmware_dir()`` and ``boards_dir()`` return real directories on disk belonging to the
*imported* ``microtrain.firmware`` / ``microtrain.boards`` packages, wherever microtrain was
imported from (a wheel install, an editable install, a source checkout). Nothing here looks at the
current working directory or at paths relative to this file, so an installed microtrain never
reads a stray source tree.

Both data packages are namespace-style (no ``__init__.py``). ``importlib.resources.files`` is tried
first; editable installs add a non-directory placeholder to a namespace ``__path__``, which that
API rejects, so the fallback walks the package's search locations and keeps real directories.
"""
from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
from pathlib import Path

from ..compiler.errors import MicrotrainError

FIRMWARE_PACKAGE = "microtrain.firmware"
BOARDS_PACKAGE = "microtrain.boards"


class ResourceError(MicrotrainError):
    """Package data is missing: the installation is broken."""


def package_dir(package: str) -> Path:
    """The on-disk directory of a data package (first real directory on its search path)."""
    try:
        root = importlib.resources.files(package)
        path = Path(str(root))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, NotADirectoryError, TypeError, ValueError):
        pass
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ResourceError(f"package data {package!r} is not installed; reinstall microtrain")
    for loc in spec.submodule_search_locations or []:
        p = Path(loc)
        if p.is_dir():
            return p
    if spec.origin:
        p = Path(spec.origin).parent
        if p.is_dir():
            return p
    raise ResourceError(f"package data {package!r} has no directory on disk; reinstall microtrain")


def firmware_dir() -> Path:
    """Directory holding the C runtime (``microtrain.firmware``)."""
    return package_dir(FIRMWARE_PACKAGE)


def boards_dir() -> Path:
    """Directory holding the board descriptions (``microtrain.boards``, one ``*.toml`` per board)."""
    return package_dir(BOARDS_PACKAGE)
