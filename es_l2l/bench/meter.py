"""Serialized bytes through Ray's actor calls, ``ray.put`` and ``ray.get`` (shared by
``benchmarks/traffic.py`` and the ES-generation benchmark)."""

from __future__ import annotations

import ray


class Meter:
    """Counts serialized bytes through ActorMethod._remote, ray.put and ray.get."""

    def __init__(self):
        self.sent = self.received = 0
        self._orig = {}

    def size(self, obj) -> int:
        return len(ray.cloudpickle.dumps(obj, protocol=5))

    def install(self):
        from ray.actor import ActorMethod

        orig_remote, orig_put, orig_get = ActorMethod._remote, ray.put, ray.get
        self._orig = {"remote": orig_remote, "put": orig_put, "get": orig_get}
        meter = self

        def _remote(self_, args=None, kwargs=None, **opts):
            meter.sent += meter.size((args or (), kwargs or {}))
            return orig_remote(self_, args=args, kwargs=kwargs, **opts)

        def put(value, *a, **k):
            meter.sent += meter.size(value)
            return orig_put(value, *a, **k)

        def get(refs, *a, **k):
            out = orig_get(refs, *a, **k)
            meter.received += meter.size(out)
            return out

        ActorMethod._remote, ray.put, ray.get = _remote, put, get

    def uninstall(self):
        from ray.actor import ActorMethod

        ActorMethod._remote, ray.put, ray.get = self._orig["remote"], self._orig["put"], self._orig["get"]
