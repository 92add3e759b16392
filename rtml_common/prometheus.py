"""Keep prometheus_client in its normal in-process mode, whatever Feast does on import.

Feast (0.67) creates a temporary directory when its ``feast.metrics`` module is imported and sets
``PROMETHEUS_MULTIPROC_DIR`` for the whole process. prometheus_client picks its value class once,
when ``prometheus_client.values`` is first imported: imported after Feast, every metric of the
process (rtml's too) becomes file-backed, and child processes inherit a directory that vanishes
when its parent exits, so they crash on their first metric. rtml exposes its metrics from
explicit in-process registries, so the value class is fixed here first, before any Feast import,
and a directory inherited from a Feast parent is dropped from the environment.
"""

from __future__ import annotations

import os
import tempfile

_FEAST_PREFIX = os.path.join(tempfile.gettempdir(), "feast_metrics_")
_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR", "prometheus_multiproc_dir")


def use_in_process_metrics() -> None:
    """Drop Feast-made multiprocess directories from the environment and load prometheus_client's values."""
    for var in _VARIABLES:
        if os.environ.get(var, "").startswith(_FEAST_PREFIX):
            del os.environ[var]
    import prometheus_client.values  # noqa: F401  (chooses the value class now)


use_in_process_metrics()
