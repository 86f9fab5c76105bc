"""microtrain.compiler: model -> IR -> int8 -> training program -> C."""
