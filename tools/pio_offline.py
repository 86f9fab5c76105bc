#!/usr/bin/env python3
"""Prepare a PlatformIO core dir so that `pio run` of a microtrain folder never touches the network.

PlatformIO runs every build through SCons, which it treats as a core package (``tool-scons``) and
downloads from its registry on first use. This script installs that package from the SCons that
pip installed (PyPI ``scons``), with the metadata PlatformIO checks, and switches off the
network-bound housekeeping (upgrade check, telemetry, first-run banner):

    python tools/pio_offline.py [--core-dir DIR] [--print-env]
    eval "$(python tools/pio_offline.py --core-dir DIR --print-env)"   # then: pio run -d <folder>

Python API::

    env = prepare(core_dir)          # -> {"PLATFORMIO_CORE_DIR": ..., ...}; idempotent
    subprocess.run(["pio", "run", "-d", folder], env={**os.environ, **env})

What it writes under DIR (nothing else; an existing registry ``tool-scons`` is left alone):

* ``packages/tool-scons/``: ``scons.py`` (launcher), ``SCons/`` (a copy of the installed package),
  ``package.json`` and ``.piopm`` naming version ``X`` where ``~X`` is the requirement of the
  installed PlatformIO (``platformio.dependencies.get_core_dependencies()["tool-scons"]``, e.g.
  ``~4.41101.0`` for PlatformIO 6.2 = SCons 4.11.1), so PlatformIO finds it and does not download;
* ``appstate.json``: ``last_version`` = the installed PlatformIO (no "upgrading" pass, which updates
  core packages online), telemetry off, upgrade check interval 3650 days, last checks = now.

The returned environment repeats the settings (``PLATFORMIO_SETTING_*``) and sets
``PLATFORMIO_DISABLE_UPGRADE_CHECK=true`` so a core dir prepared by an older run stays offline.
Platforms are not installed here: microtrain folders name their platform by path (docs/platformio.md).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

#: tool-scons version PlatformIO 6.2 requires (~4.41101.0 = SCons 4.11.1); used only when the
#: installed PlatformIO cannot be imported to read its own requirement.
DEFAULT_SCONS_PACKAGE_VERSION = "4.41101.0"
UPGRADE_CHECK_DAYS = 3650
STAMP = ".microtrain-offline"

LAUNCHER = '''#!/usr/bin/env python3
"""SCons launcher of the offline tool-scons package written by microtrain tools/pio_offline.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from SCons.Script.Main import main  # noqa: E402

if __name__ == "__main__":
    main()
'''


class OfflineError(RuntimeError):
    """The core dir cannot be prepared (one line: what and how to proceed)."""


def default_core_dir() -> Path:
    """Where PlatformIO looks when nothing is configured: $PLATFORMIO_CORE_DIR or ~/.platformio."""
    return Path(os.environ.get("PLATFORMIO_CORE_DIR") or Path.home() / ".platformio")


def required_scons_version() -> str:
    """The tool-scons version the installed PlatformIO accepts (its ``~X.Y.Z`` requirement, as X.Y.Z)."""
    try:
        from platformio.dependencies import get_core_dependencies
    except ImportError:
        return DEFAULT_SCONS_PACKAGE_VERSION
    req = str(get_core_dependencies().get("tool-scons", DEFAULT_SCONS_PACKAGE_VERSION))
    m = re.search(r"\d+(?:\.\d+){0,2}", req)
    if not m:
        raise OfflineError(f"cannot read PlatformIO's tool-scons requirement {req!r}")
    parts = (m.group(0).split(".") + ["0", "0"])[:3]
    return ".".join(parts)


def platformio_version() -> str | None:
    try:
        import platformio
    except ImportError:
        return None
    return getattr(platformio, "__version__", None)


def _scons_package() -> tuple[Path, str]:
    try:
        import SCons
    except ImportError:
        raise OfflineError("SCons is not installed in this Python; `pip install scons` (or microtrain[pio])") from None
    version = getattr(SCons, "__version__", "") or "unknown"
    if not version.startswith("4."):
        raise OfflineError(f"SCons {version} found; PlatformIO 6 needs SCons 4.x (`pip install 'scons>=4,<5'`)")
    return Path(SCons.__file__).resolve().parent, version


def _keep_existing(pkg_dir: Path, version: str, stamp: dict) -> bool:
    """True when ``pkg_dir`` already holds a usable tool-scons of ``version``: a registry package
    (no stamp of ours) or ours, written from the same SCons."""
    try:
        meta = json.loads((pkg_dir / ".piopm").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("name") != "tool-scons" or meta.get("version") != version:
        return False
    if not (pkg_dir / "scons.py").is_file() or not (pkg_dir / "package.json").is_file():
        return False
    if not (pkg_dir / STAMP).exists():
        return True
    try:
        ours = json.loads((pkg_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return ours == stamp and (pkg_dir / "SCons" / "Script" / "Main.py").is_file()


def install_scons(core_dir: Path, version: str | None = None) -> Path:
    """Write ``core_dir/packages/tool-scons`` from the installed SCons (no-op when already there)."""
    version = version or required_scons_version()
    src, scons_version = _scons_package()
    packages = core_dir / "packages"
    dst = packages / "tool-scons"
    stamp = {"scons": scons_version, "package_version": version, "source": str(src)}
    if _keep_existing(dst, version, stamp):
        return dst
    packages.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tool-scons-", dir=packages))
    os.chmod(tmp, 0o755)
    try:
        shutil.copytree(src, tmp / "SCons", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (tmp / "scons.py").write_text(LAUNCHER)
        manifest = {
            "name": "tool-scons",
            "version": version,
            "description": f"SCons {scons_version} from PyPI, packaged for offline PlatformIO by microtrain",
            "keywords": ["build tools"],
            "homepage": "https://scons.org",
            "license": "MIT",
        }
        (tmp / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
        meta = {"type": "tool", "name": "tool-scons", "version": version,
                "spec": {"owner": "platformio", "id": None, "name": "tool-scons",
                         "requirements": f"~{version}", "uri": None}}
        (tmp / ".piopm").write_text(json.dumps(meta))
        (tmp / STAMP).write_text(json.dumps(stamp))
        old = None
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=".tool-scons-old-", dir=packages))
            os.rmdir(old)
            os.rename(dst, old)
        os.rename(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def write_appstate(core_dir: Path) -> Path:
    """Merge the offline settings into ``core_dir/appstate.json`` (PlatformIO's state file)."""
    path = core_dir / "appstate.json"
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            state = {}
    except (OSError, ValueError):
        state = {}
    settings = dict(state.get("settings") or {})
    settings.update({"enable_telemetry": False, "check_platformio_interval": UPGRADE_CHECK_DAYS})
    state["settings"] = settings
    now = int(time.time())
    last_check = dict(state.get("last_check") or {})
    last_check.update({"platformio_upgrade": now, "prune_system": now})
    state["last_check"] = last_check
    version = platformio_version()
    if version:
        state["last_version"] = version  # otherwise the first command "upgrades" core packages online
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
    return path


def offline_env(core_dir: Path) -> dict[str, str]:
    return {
        "PLATFORMIO_CORE_DIR": str(core_dir),
        "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",
        "PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL": str(UPGRADE_CHECK_DAYS),
        "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
    }


def prepare(core_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Make ``core_dir`` (default: $PLATFORMIO_CORE_DIR or ~/.platformio) usable offline; return the
    environment variables to run ``pio`` with. Idempotent; raises :class:`OfflineError`."""
    core = Path(core_dir).expanduser().resolve() if core_dir is not None else default_core_dir().resolve()
    try:
        core.mkdir(parents=True, exist_ok=True)
        install_scons(core)
        write_appstate(core)
    except OSError as e:
        raise OfflineError(f"{core}: cannot prepare the PlatformIO core dir ({e.strerror or e})") from None
    return offline_env(core)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--core-dir", help="PlatformIO core dir (default: $PLATFORMIO_CORE_DIR or ~/.platformio)")
    ap.add_argument("--print-env", action="store_true", help="print only `export VAR=value` lines (for eval)")
    args = ap.parse_args(argv)
    try:
        env = prepare(args.core_dir)
    except OfflineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    if not args.print_env:
        print(f"PlatformIO core dir ready for offline builds: {env['PLATFORMIO_CORE_DIR']} "
              f"(tool-scons {required_scons_version()}); run pio with:", file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
