"""C code generation: a planned int8 training program -> ``mt_model.h`` / ``mt_model.c``.

:func:`~microtrain.compiler.codegen.emit.generate` emits the program; :mod:`.native` builds it
with the host compiler and drives it from Python (``simulate --engine c``); :mod:`.project`
writes a buildable folder for a board (``microtrain compile``).
"""
from .emit import GENERATOR, CodegenError, Generated, generate, model_hash  # noqa: F401
