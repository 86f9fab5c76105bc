"""microtrain.host: CLI, simulators, device bridge, reports."""
from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("microtrain")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
