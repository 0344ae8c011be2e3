"""Module paths that moved when the top level was grouped by role, and the import hook that keeps the
old paths importable (so that scripts, pickles and MLflow models logged by an earlier es-l2l, whose
stored entry file imports ``es_l2l.mlflow_model``, still load). One table; nothing else aliases."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {  # old module -> where it lives now (es_l2l.tracking, once a module, is now the package)
    "es_l2l.spool": "es_l2l.tracking.spool",
    "es_l2l.redact": "es_l2l.tracking.redact",
    "es_l2l.lifecycle": "es_l2l.tracking.end_state",
    "es_l2l.metric_keys": "es_l2l.tracking.metric_keys",
    "es_l2l.mlflow_model": "es_l2l.tracking.network_model",
    "es_l2l.pyfunc_entry": "es_l2l.tracking.pyfunc_entry",
    "es_l2l.checkpoint": "es_l2l.tracking.checkpoint",
    "es_l2l.safe_io": "es_l2l.tracking.tensor_files",
    "es_l2l.distributed": "es_l2l.cluster.evaluators",
    "es_l2l.traffic": "es_l2l.cluster.seed_traffic",
    "es_l2l.submit": "es_l2l.cluster.submit",
    "es_l2l.tables": "es_l2l.reporting.tables",
    "es_l2l.plots": "es_l2l.reporting.plots",
    "es_l2l.stats": "es_l2l.reporting.stats",
    "es_l2l.progress": "es_l2l.reporting.progress",
}


class _OldPath(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module that now holds it (the same module object)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, _OldPath) for f in sys.meta_path):
        sys.meta_path.append(_OldPath())
