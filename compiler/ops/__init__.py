"""IR ops. Importing this package registers every op (one module per op family)."""
from . import registry  # noqa: F401
from . import conv, fully_connected, elementwise, pool, shape, softmax, quantize  # noqa: F401
from . import batchnorm  # noqa: F401  (frontend-only; folded away by passes.fold_batchnorm)

get = registry.get
all_ops = registry.all_ops
