"""Bottom package shared by every rtml stage: settings base, errors, Kafka client wrappers.

Nothing here imports a stage (``streaming``, ``inference``, ``components``) or the ``rtml`` CLI.
"""
