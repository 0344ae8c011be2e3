"""The multi-node loopback cluster lives in :mod:`es_l2l.bench.loopback` (the scaling benchmark starts one too)."""

from es_l2l.bench.loopback import BIN, LoopbackCluster, Node, free_port  # noqa: F401
