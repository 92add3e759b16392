"""Serving: the KServe V2 fraud transformer (Feast online features) and PyTorch predictor; ``python -m inference --help``."""

import rtml_common.prometheus  # noqa: F401,E402  (before any Feast import: see that module)
