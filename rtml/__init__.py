"""rtml: real-time AI predictions on Kafka, Feast, Kubeflow Pipelines and KServe.

This package is the top of the import graph: the CLI, the local runtime (a real Kafka broker
and the stages as local processes) and the demo. Stages never import it.
"""

import rtml_common.prometheus  # noqa: F401,E402  (before any Feast import: see that module)
__version__ = "0.1.0"
