"""Bottom package shared by every rtml stage: settings base, errors, Kafka client wrappers.

Nothing here imports a stage (``streaming``, ``inference``, ``components``) or the ``rtml`` CLI.
"""

from rtml_common import prometheus as _prometheus  # noqa: F401,E402  (first, before Feast)
