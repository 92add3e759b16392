"""Serving: the KServe V2 fraud transformer (Feast online features) and PyTorch predictor; ``python -m inference --help``."""
