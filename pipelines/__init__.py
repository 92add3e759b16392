import rtml_common.prometheus  # noqa: F401,E402  (before any Feast import: see that module)
