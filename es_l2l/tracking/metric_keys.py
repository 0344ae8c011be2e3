"""MLflow metric keys: the status dict's and the held-out reports' names, grouped by prefix.

The outer loops and the progress display keep the status dict's short, readable names
(``fitness_mean``, ``val_mse_late``: the *internal* names); :class:`es_l2l.tracking.run.MlflowRun` maps
them here, in one place, to the keys MLflow stores. The families' held-out reports emit the stored
keys themselves (:func:`test_key`). Every key's first segment is a group, so that the MLflow UI
(a chart section per key up to its last ``/``) shows the groups apart:

* ``train/<name>``: per-generation training (``train/fitness_mean``, ``train/grad_norm``,
  ``train/elapsed_s``, ...; a leading ``train_`` is dropped: ``train_mse_mean`` -> ``train/mse_mean``);
* ``val/<name>``: validation (``val_mse_late`` -> ``val/mse_late``, ``best_val_mse_late`` ->
  ``val/best_mse_late``, ``best_generation`` -> ``val/best_generation``);
* ``test/<predictor>/<name>``: the held-out report, one predictor per middle segment; the trained
  network is ``model`` whatever its kind (so runs of LSNNs, LSTMs and LIF networks share keys),
  the same network at generation 0 is ``untrained``, the baselines keep their slugs
  (``test/running_mean/mse_late``, ``test/chance/accuracy``);
* ``system/<name>``: CPU, memory, disk and network, logged by MLflow's own system-metrics monitor.

Keys that already start with a group (``test/...``) pass unchanged. ``grouped`` turns the flat
names of runs logged before the grouping (and a plug-in family's flat report names) into today's
keys, for scripts that read old stores (:func:`pick`, :func:`history`).
"""

from __future__ import annotations

GROUPS = ("train", "val", "test", "system")

# Report slugs whose predictor has another name under test/.
PREDICTORS = {
    "lsnn_meta_trained": "model",  # the trained network (reports that name it "LSNN meta-trained")
    "lsnn_generation_0": "untrained",  # the same network at generation 0
    "minus_running_mean": "model_minus_running_mean",  # the paired per-episode difference to the running mean
}
TRAINED = "model"  # the trained network's predictor (bare test_* keys of a report)

# Report keys that name no predictor (the task distribution's statistics, a reward mark).
RENAMED = {
    "family_within_task_share": "test/family/within_task_share",
    "family_linear_fit_share": "test/family/linear_fit_share",
    "test_halfway_random_explorer": "test/halfway_random_explorer/reward",
}


def is_grouped(key: str) -> bool:
    return "/" in key and key.split("/", 1)[0] in GROUPS


def grouped(key: str, default: str = "train") -> str:
    """The MLflow key of an internal metric name (see the module docstring).

    ``default`` is the group of a name that says nothing of its own: ``train`` for the status
    dict, ``test`` for a held-out report's extra scalars."""
    if is_grouped(key):
        return key
    if key in RENAMED:
        return RENAMED[key]
    if key.startswith("val_"):
        return "val/" + key.removeprefix("val_")
    if key.startswith("best_val_"):
        return "val/best_" + key.removeprefix("best_val_")
    if key == "best_generation":
        return "val/best_generation"
    if key.startswith("group."):  # a held-out split by group: group.<group>[.network_k].<predictor slug>.<metric>
        return _group_key(key)
    if "." in key:  # a report's <predictor slug>.<metric>
        who, metric = key.split(".", 1)
        return f"test/{PREDICTORS.get(who, who)}/{metric.removeprefix('test_')}"
    if key.startswith("test_"):  # a report's metric of the trained network
        return f"test/{TRAINED}/{key.removeprefix('test_')}"
    if default == "test":
        return "test/" + key
    return f"{default}/{key.removeprefix('train_')}"


def _group_key(key: str) -> str:
    """``group.frequent.lsnn_meta_trained.test_mse_late.lo`` -> ``test/model/frequent_mse_late.lo``
    (the group joins the metric, so each predictor's groups chart side by side); ``group.episodes``
    -> ``test/groups/episodes``."""
    parts = key.split(".")[1:]
    if len(parts) == 1:
        return f"test/groups/{parts[0]}"
    where, rest = parts[0], parts[1:]
    if rest[0].startswith("network_") and len(rest) > 1:
        where, rest = f"{where}_{rest[0]}", rest[1:]
    who = PREDICTORS.get(rest[0], rest[0])
    metric = ".".join(rest[1:]).removeprefix("test_")
    return f"test/{who}/{where}_{metric}"


def status_key(key: str) -> str:
    """The MLflow key of a status-dict entry (per generation: ``train/...`` or ``val/...``)."""
    return grouped(key, "train")


def report_key(key: str) -> str:
    """The MLflow key of a held-out report's flat metric (``test/...``; grouped keys pass)."""
    return grouped(key, "test")


def predictor(name: str) -> str:
    """The ``test/<predictor>/`` segment of a predictor's printed name (``running mean`` -> ``running_mean``)."""
    slug = name.split(" (")[0].lower().replace(" ", "_").replace("-", "_")
    return PREDICTORS.get(slug, slug)


def test_key(name: str, metric: str) -> str:
    """The key of one held-out fact: ``test/<predictor>/<metric>``, the predictor given by its printed
    name (``test_key("running mean", "mse_late")`` -> ``test/running_mean/mse_late``)."""
    return f"test/{predictor(name)}/{metric}"


def key_name(name: str) -> str:
    """A config name as one segment of a metric key: ``/`` and characters MLflow refuses become ``_``, so
    a name never adds a level or points elsewhere (``../x``); plain names are kept as they are."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-. :]+", "_", name).strip(" .") or "_"


def comparison_key(who: str, key: str) -> str:
    """A parent run's key (``es-l2l compare``, ``es-l2l tune``) for one child's or baseline's value:
    ``test_mse_late`` -> ``test/<who>/mse_late``, ``best_val_mse_late`` -> ``val/<who>/best_mse_late``,
    ``final_val_reward`` -> ``val/<who>/final_reward``, ``train_s`` -> ``train/<who>/elapsed_s``."""
    if key == "train_s":
        key = "elapsed_s"
    if key.startswith("final_val_"):
        return f"val/{who}/final_{key.removeprefix('final_val_')}"
    group, name = grouped(key).split("/", 1)
    if group == "test":
        name = name.split("/", 1)[-1]  # no predictor: <who> is the predictor
    return f"{group}/{who}/{name}"


def pick(metrics: dict[str, float], key: str, default=None):
    """``metrics[key]`` under today's key or the flat name it had before (a run from an older store)."""
    if key in metrics:
        return metrics[key]
    for old, new in ((k, grouped(k)) for k in metrics):
        if new == key:
            return metrics[old]
    return default


def history(client, run_id: str, key: str) -> list:
    """``client.get_metric_history`` of today's ``key``, or of its old flat name in a run that has only that."""
    found = client.get_metric_history(run_id, key)
    if found:
        return found
    for old in client.get_run(run_id).data.metrics:
        if old != key and grouped(old) == key:
            return client.get_metric_history(run_id, old)
    return []
