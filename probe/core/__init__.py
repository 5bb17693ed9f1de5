"""The foundation every package builds on. Nothing here knows about a particular method.

- :mod:`probe.core.errors`: the exception hierarchy (every error neurospec raises on purpose);
- :mod:`probe.core.artifacts`: atomic safetensors + JSON artifacts with one version stamp;
- :mod:`probe.core.paths`: the data root and the cache folder;
- :mod:`probe.core.validate`: argument checks shared by the public functions;
- :mod:`probe.core.device`: resolving a ``device`` argument;
- :mod:`probe.core.training`: the learning-rate schedule and optimizer checkpoints shared by the training
  loops.
- :mod:`probe.core.cluster`: independent tasks in parallel on a Ray cluster (``connect``, ``session``,
  ``run_tasks``), each result handed back as soon as it finishes.

Example:
    >>> from probe.core.errors import NeurospecError, DataNotFoundError
    >>> issubclass(DataNotFoundError, NeurospecError)
    True
"""
