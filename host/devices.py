"""Compiled programs and running devices, as the host keeps track of them.

* **Program store.** ``microtrain compile`` / ``run`` save, next to the generated C, what the host
  needs to drive the program later (``mt_host.pkl``: the int8 graph, the resolved plan and the
  generator options) and register the folder under the program's hash. ``microtrain train --port
  URL`` asks the device for its model hash (HELLO) and finds the program that way; ``--project
  DIR`` names it directly.
* **Emulated boards.** ``flash`` of a qemu-* board builds the firmware image and starts QEMU in
  the background with the board's UART on a free TCP port; the state (pid, port, image) is kept
  in ``DIR/.microtrain-device.json`` so a second ``flash`` replaces the running instance and
  ``flash --stop`` ends it.

The pickle holds only microtrain's own IR dataclasses and numpy arrays; it is read back only from
folders this tool wrote (its generator and hash are checked), like any build artefact.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compiler.errors import MicrotrainError

HOST_FILE = "mt_host.pkl"
STATE_FILE = ".microtrain-device.json"
HOST_FORMAT = 1


class DeviceSetupError(MicrotrainError):
    """A program or device cannot be set up (one line: what, where, how to proceed)."""


# ---- program store -------------------------------------------------------------------------------
def store_dir() -> Path:
    """Where program folders are registered by hash: $MICROTRAIN_HOME/programs, else
    $XDG_CACHE_HOME/microtrain/programs, else ~/.cache/microtrain/programs."""
    home = os.environ.get("MICROTRAIN_HOME")
    if home:
        return Path(home).expanduser() / "programs"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "microtrain" / "programs"


def save_program(out_dir: str | Path, graph, plan, gen_kwargs: dict[str, Any], gen_hash: str) -> Path:
    """Write ``mt_host.pkl`` into a compiled folder and register the folder under ``gen_hash``."""
    from ..compiler.codegen.emit import GENERATOR

    out = Path(out_dir).resolve()
    blob = {"format": HOST_FORMAT, "generator": GENERATOR, "hash": gen_hash, "graph": graph, "plan": plan,
            "kwargs": dict(gen_kwargs)}
    tmp = out / (HOST_FILE + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(blob, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, out / HOST_FILE)
    try:
        reg = store_dir()
        reg.mkdir(parents=True, exist_ok=True)
        (reg / gen_hash).write_text(str(out) + "\n")
    except OSError:
        pass  # the registry is a convenience: --project DIR still works
    return out / HOST_FILE


@dataclass
class Program:
    """A compiled program the host can drive: its folder, board and generated sources."""

    dir: Path
    gen: Any          # compiler.codegen.emit.Generated
    graph: Any
    plan: Any
    kwargs: dict[str, Any]

    @property
    def board(self) -> str:
        return str(self.gen.manifest["options"].get("board") or "")


def load_program(project: str | Path) -> Program:
    """The program of a folder written by ``microtrain compile`` (regenerated and hash-checked)."""
    from ..compiler.codegen import generate

    d = Path(project).expanduser()
    if not (d / "mt_model.json").is_file():
        raise DeviceSetupError(f"{project}: not a microtrain compile folder (no mt_model.json)")
    if not (d / HOST_FILE).is_file():
        raise DeviceSetupError(f"{project}: no {HOST_FILE} (compiled by an older microtrain?); run microtrain compile again")
    try:
        with open(d / HOST_FILE, "rb") as f:
            blob = pickle.load(f)  # noqa: S301 - our own build artefact, hash-checked below
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a broken artefact
        raise DeviceSetupError(f"{d / HOST_FILE}: unreadable ({type(e).__name__}); run microtrain compile again") from e
    if not isinstance(blob, dict) or blob.get("format") != HOST_FORMAT:
        raise DeviceSetupError(f"{d / HOST_FILE}: unknown format; run microtrain compile again")
    gen = generate(blob["graph"], blob["plan"], **blob["kwargs"])
    if gen.hash != blob["hash"]:
        raise DeviceSetupError(f"{project}: program {blob['hash']} no longer regenerates identically "
                               f"(now {gen.hash}); run microtrain compile again")
    return Program(d.resolve(), gen, blob["graph"], blob["plan"], dict(blob["kwargs"]))


def find_program(model_hash: str) -> Program:
    """The registered program with ``model_hash`` (what a device announces in HELLO)."""
    entry = store_dir() / model_hash
    if not entry.is_file():
        raise DeviceSetupError(f"no compiled program with hash {model_hash} on this host; pass --project DIR "
                               f"(the folder of microtrain compile)")
    d = Path(entry.read_text().strip())
    if not d.is_dir():
        raise DeviceSetupError(f"program {model_hash} was compiled into {d}, which no longer exists; pass --project DIR")
    return load_program(d)


# ---- emulated boards -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own exited child) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_state(project: str | Path) -> dict | None:
    p = Path(project) / STATE_FILE
    try:
        st = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return st if isinstance(st, dict) and _alive(int(st.get("pid", 0) or 0)) else None


def stop(project: str | Path) -> dict | None:
    """Stop the emulator started for ``project`` (None when none runs)."""
    st = read_state(project)
    p = Path(project) / STATE_FILE
    if st is not None:
        pid = int(st["pid"])
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        p.unlink()
    except OSError:
        pass
    return st


def start_emulator(prog: Program, board, *, port: int | None = None, icount: bool = True) -> dict:
    """Build ``prog``'s firmware for emulated ``board`` and start it in the background.
    Returns the state: url, port, pid, elf, log, board."""
    from ..compiler.codegen import firmware as fw

    stop(prog.dir)
    elf = fw.build_image(prog.gen, board, prog.dir / "build")
    log = prog.dir / "qemu.log"
    for attempt in range(5):
        p = port or free_port()
        cmd = fw.qemu_command(board, elf, p, icount=icount)
        with open(log, "wb") as lf:
            proc = subprocess.Popen(cmd, cwd=prog.dir, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        if _wait_listening(p, proc):
            st = {"pid": proc.pid, "port": p, "url": f"socket://127.0.0.1:{p}", "board": board.name,
                  "elf": str(elf), "log": str(log), "hash": prog.gen.hash, "command": cmd}
            (prog.dir / STATE_FILE).write_text(json.dumps(st, indent=1) + "\n")
            return st
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        proc.wait()
        if port is not None:
            break
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise DeviceSetupError(f"{board.name}: the emulator did not start ({' '.join(tail) or 'no output'}); "
                           f"command: {' '.join(cmd)}")
