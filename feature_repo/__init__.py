"""The fraud use case's feature repository: Feast objects, window declarations and model inputs.

A new use case is a new feature repo like this one; the streaming engine, the training
components and the transformer read everything use-case specific from here.
"""

import rtml_common.prometheus  # noqa: F401,E402  (before any Feast import: see that module)
