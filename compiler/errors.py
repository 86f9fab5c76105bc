"""User-facing errors. Each carries one line: what went wrong, where, and what is supported.

The CLI prints ``error: <message>`` and exits with code 2 for any MicrotrainError; anything else
is a bug (shown with a traceback only under ``--debug``).
"""
from __future__ import annotations


class MicrotrainError(Exception):
    """Base of every error meant for the user (exit code 2)."""

    exit_code = 2


class ModelFormatError(MicrotrainError):
    """The model file is unreadable: truncated, corrupt, wrong format, inconsistent."""


class UnsupportedOpError(MicrotrainError):
    """The model uses an op (or an op configuration) microtrain does not support."""

    def __init__(self, op_type: str, node_name: str, supported: list[str] | tuple[str, ...], detail: str = ""):
        self.op_type, self.node_name = op_type, node_name
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"unsupported op {op_type!r} at node {node_name!r}{extra}; supported: {', '.join(sorted(supported))}"
        )


class DataError(MicrotrainError):
    """Training/evaluation data does not fit the model or task (shape, dtype, labels, file)."""


class BoardError(MicrotrainError):
    """Unknown board or invalid board description."""
