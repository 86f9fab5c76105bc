"""A fault-injecting TCP proxy for link tests: bridge <-> proxy <-> device (QEMU's UART socket).

Every byte crossing the proxy, in both directions, is dropped with probability ``drop`` or
replaced by a different random byte with probability ``corrupt`` (seeded, so a failing run
repeats). When the upstream side closes (the emulator was killed) the client connection is
closed too, and the next client connection dials upstream again (the restarted emulator).

    python tests/faultproxy.py LISTEN_PORT UPSTREAM_PORT [--drop 0.01] [--corrupt 0.01] [--seed 0]
"""
from __future__ import annotations

import argparse
import socket
import threading
import time

import numpy as np


class FaultProxy:
    def __init__(self, upstream_port: int, drop: float = 0.0, corrupt: float = 0.0, seed: int = 0,
                 listen_port: int = 0, host: str = "127.0.0.1"):
        self.upstream = (host, int(upstream_port))
        self.drop, self.corrupt = float(drop), float(corrupt)
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.stats = {"bytes": 0, "dropped": 0, "corrupted": 0, "connections": 0}
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind((host, listen_port))
        self._srv.listen(4)
        self.port = self._srv.getsockname()[1]
        self.url = f"socket://{host}:{self.port}"
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _mangle(self, data: bytes) -> bytes:
        a = np.frombuffer(data, np.uint8)
        with self._lock:
            u = self.rng.random((2, a.size))
            flip = self.rng.integers(1, 256, a.size, dtype=np.uint8)
        out = a.copy()
        bad = u[1] < self.corrupt
        out[bad] ^= flip[bad]
        keep = u[0] >= self.drop
        with self._lock:
            self.stats["bytes"] += a.size
            self.stats["dropped"] += int((~keep).sum())
            self.stats["corrupted"] += int((bad & keep).sum())
        return out[keep].tobytes()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(4096)
                if not data:
                    break
                data = self._mangle(data)
                if data:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            up = None
            for _ in range(100):  # the upstream may be restarting
                try:
                    up = socket.create_connection(self.upstream, timeout=1.0)
                    break
                except OSError:
                    time.sleep(0.05)
            if up is None:
                client.close()
                continue
            up.settimeout(None)
            for s in (client, up):  # no Nagle: a frame is a few small writes
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.stats["connections"] += 1
            self._conns += [client, up]
            threading.Thread(target=self._pump, args=(client, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        try:
            self._srv.close()
        except OSError:
            pass
        for s in self._conns:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("listen_port", type=int)
    ap.add_argument("upstream_port", type=int)
    ap.add_argument("--drop", type=float, default=0.01)
    ap.add_argument("--corrupt", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    p = FaultProxy(a.upstream_port, a.drop, a.corrupt, a.seed, a.listen_port)
    print(p.url, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        p.close()


if __name__ == "__main__":
    main()
