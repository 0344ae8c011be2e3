"""Tracking: everything that talks to MLflow or keeps a run's files.

``run`` (the MLflow run a status-dict subscriber logs into), ``spool`` (metrics kept through a
tracking outage and synced after), ``redact`` (passwords out of every printed URI), ``end_state``
(signals and the run's final state: FINISHED, FAILED, KILLED), ``metric_keys`` (the grouped metric
names and the rename table for old stores), ``checkpoint`` and ``tensor_files`` (checkpoints and
resume states as safetensors), ``network_model`` and ``pyfunc_entry`` (the trained network as an
MLflow pyfunc model), ``preflight`` (the store answers before a run starts).
"""
