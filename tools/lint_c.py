#!/usr/bin/env python3
"""Firmware rules, checked in `make test` (`make lint`): kernels, engine and generated programs use
no heap (malloc/calloc/realloc/free), no stdio (printf family, <stdio.h>) and no floating point
(float/double, <math.h>). Comments and string literals are ignored; board ports (paths containing
``/port``) are exempt: they may use the FPU or a UART printf.

    python tools/lint_c.py [PATH ...]     (default: firmware/)
    exit 0 clean, 1 with one line per violation (file:line: what)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

BANNED = {
    "heap": re.compile(r"\b(malloc|calloc|realloc|free)\s*\("),
    "stdio": re.compile(r"\b(printf|sprintf|snprintf|fprintf|puts|putchar|fopen)\s*\(|#\s*include\s*<stdio\.h>"),
    "float": re.compile(r"\b(float|double)\b|#\s*include\s*<math\.h>|\b\d+\.\d*(e[+-]?\d+)?f?\b"),
}
_COMMENT_OR_STRING = re.compile(r"//[^\n]*|/\*.*?\*/|\"(\\.|[^\"\\])*\"|'(\\.|[^'\\])*'", re.S)


def _blank(m: re.Match) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))


def violations(text: str, name: str = "<text>") -> list[str]:
    """One 'name:line: rule: code' string per banned construct in C source ``text``."""
    code = _COMMENT_OR_STRING.sub(_blank, text)
    out = []
    for lineno, line in enumerate(code.splitlines(), 1):
        for rule, rx in BANNED.items():
            m = rx.search(line)
            if m:
                out.append(f"{name}:{lineno}: {rule}: {m.group(0).strip()}")
    return out


def lint_paths(paths: list[Path]) -> list[str]:
    out = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in (".c", ".h"))
        for f in files:
            if "/port" in f.as_posix():
                continue
            out += violations(f.read_text(errors="replace"), str(f))
    return out


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [Path(__file__).resolve().parents[1] / "firmware"]
    bad = lint_paths(paths)
    for b in bad:
        print(b)
    if bad:
        print(f"firmware lint: {len(bad)} violation(s): no heap, stdio or floating point in kernels and engine")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
