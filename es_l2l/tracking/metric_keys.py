"""MLflow metric keys: the status dict's and the held-out reports' names, grouped by prefix.

The outer loops and the progress display keep the status dict's short, readable names
(``fitness_mean``, ``val_mse_late``: the *internal* names); :class:`es_l2l.tracking.run.MlflowRun` maps
them here, in one place, to the keys MLflow stores. The families' held-out reports emit the stored
keys themselves (:func:`withheld_key`, :func:`withheld`). Every key's first segment is a group, so that the MLflow UI
(a chart section per key up to its last ``/``) shows the groups apart:

* ``train/<name>``: per-generation training (``train/fitness_mean``, ``train/grad_norm``,
  ``train/elapsed_s``, ...; a leading ``train_`` is dropped: ``train_mse_mean`` -> ``train/mse_mean``);
* ``val/<name>``: validation (``val_mse_late`` -> ``val/mse_late``, ``best_val_mse_late`` ->
  ``val/best_mse_late``, ``best_generation`` -> ``val/best_generation``);
* ``withheld/<predictor>/<name>``: the held-out report (tasks withheld from training), one
  predictor per middle segment; the trained network is ``model`` whatever its kind (so runs of
  LSNNs, LSTMs and LIF networks share keys), the same network at generation 0 is ``untrained``,
  the baselines keep their slugs (``withheld/running_mean/mse_late``, ``withheld/chance/accuracy``);
* ``system/<name>``: CPU, memory, disk and network, logged by MLflow's own system-metrics monitor.

The held-out group's name (:data:`HELD_OUT`) sorts after ``train`` and ``val``: the MLflow run page
orders its chart sections by sorting the keys, so the learning curves come first. It was ``test`` before
(:data:`OLD_HELD_OUT`); :func:`renamed` gives an old key's new name, :func:`refuse_old` the one-line
refusal of an old key a user names.

Keys that already start with a group (``withheld/...``) pass unchanged. ``grouped`` turns the flat
names of runs logged before the grouping, the ``test/...`` keys of runs logged before the held-out
group's rename (and a plug-in family's flat report names) into today's keys, for scripts that read
old stores (:func:`pick`, :func:`history`).
"""

from __future__ import annotations

HELD_OUT = "withheld"  # the held-out report's group: after "train" and "val" in the run page's order
OLD_HELD_OUT = "test"  # its name before (stores logged before the rename)
GROUPS = ("train", "val", HELD_OUT, "system")

# Report slugs whose predictor has another name under withheld/.
PREDICTORS = {
    "lsnn_meta_trained": "model",  # the trained network (reports that name it "LSNN meta-trained")
    "lsnn_generation_0": "untrained",  # the same network at generation 0
    "minus_running_mean": "model_minus_running_mean",  # the paired per-episode difference to the running mean
}
TRAINED = "model"  # the trained network's predictor (bare test_* keys of a report)

# Report keys that name no predictor (the task distribution's statistics, a reward mark).
RENAMED = {
    "family_within_task_share": f"{HELD_OUT}/family/within_task_share",
    "family_linear_fit_share": f"{HELD_OUT}/family/linear_fit_share",
    "test_halfway_random_explorer": f"{HELD_OUT}/halfway_random_explorer/reward",
}


def withheld(*segments: str) -> str:
    """A held-out key from its segments: ``withheld("running_mean", "mse_late")`` -> ``withheld/running_mean/mse_late``."""
    return "/".join((HELD_OUT, *segments))


def renamed(key: str) -> str | None:
    """Today's name of a key of the old held-out group (``test/model/mse_late`` -> ``withheld/model/mse_late``), else None."""
    if key.startswith(OLD_HELD_OUT + "/"):
        return withheld(key.removeprefix(OLD_HELD_OUT + "/"))
    return None


def old_name(key: str) -> str | None:
    """The name a held-out key had before the rename (``withheld/model/mse_late`` -> ``test/model/mse_late``), else None."""
    if key.startswith(HELD_OUT + "/"):
        return f"{OLD_HELD_OUT}/{key.removeprefix(HELD_OUT + '/')}"
    return None


def refuse_old(key: str, where: str = "metric key") -> str:
    """``key`` unchanged, or ValueError in one line naming the new key when it is an old held-out key a user typed."""
    new = renamed(key)
    if new is not None:
        raise ValueError(f"{where} '{key}' names the old held-out group '{OLD_HELD_OUT}/', now '{HELD_OUT}/': use '{new}'")
    return key


def is_grouped(key: str) -> bool:
    return "/" in key and key.split("/", 1)[0] in GROUPS


def grouped(key: str, default: str = "train") -> str:
    """The MLflow key of an internal metric name (see the module docstring).

    ``default`` is the group of a name that says nothing of its own: ``train`` for the status
    dict, ``withheld`` for a held-out report's extra scalars."""
    if is_grouped(key):
        return key
    if (new := renamed(key)) is not None:
        return new
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
        return withheld(PREDICTORS.get(who, who), metric.removeprefix("test_"))
    if key.startswith("test_"):  # a report's metric of the trained network
        return withheld(TRAINED, key.removeprefix("test_"))
    if default == HELD_OUT:
        return withheld(key)
    return f"{default}/{key.removeprefix('train_')}"


def _group_key(key: str) -> str:
    """``group.frequent.lsnn_meta_trained.test_mse_late.lo`` -> ``withheld/model/frequent_mse_late.lo``
    (the group joins the metric, so each predictor's groups chart side by side); ``group.episodes``
    -> ``withheld/groups/episodes``."""
    parts = key.split(".")[1:]
    if len(parts) == 1:
        return withheld("groups", parts[0])
    where, rest = parts[0], parts[1:]
    if rest[0].startswith("network_") and len(rest) > 1:
        where, rest = f"{where}_{rest[0]}", rest[1:]
    who = PREDICTORS.get(rest[0], rest[0])
    metric = ".".join(rest[1:]).removeprefix("test_")
    return withheld(who, f"{where}_{metric}")


def status_key(key: str) -> str:
    """The MLflow key of a status-dict entry (per generation: ``train/...`` or ``val/...``)."""
    return grouped(key, "train")


def report_key(key: str) -> str:
    """The MLflow key of a held-out report's flat metric (``withheld/...``; grouped keys pass)."""
    return grouped(key, HELD_OUT)


def predictor(name: str) -> str:
    """The ``withheld/<predictor>/`` segment of a predictor's printed name (``running mean`` -> ``running_mean``)."""
    slug = name.split(" (")[0].lower().replace(" ", "_").replace("-", "_")
    return PREDICTORS.get(slug, slug)


def withheld_key(name: str, metric: str) -> str:
    """The key of one held-out fact: ``withheld/<predictor>/<metric>``, the predictor given by its printed
    name (``withheld_key("running mean", "mse_late")`` -> ``withheld/running_mean/mse_late``)."""
    return withheld(predictor(name), metric)


def key_name(name: str) -> str:
    """A config name as one segment of a metric key: ``/`` and characters MLflow refuses become ``_``, so
    a name never adds a level or points elsewhere (``../x``); plain names are kept as they are."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-. :]+", "_", name).strip(" .") or "_"


def comparison_key(who: str, key: str) -> str:
    """A parent run's key (``es-l2l compare``, ``es-l2l tune``) for one child's or baseline's value:
    ``test_mse_late`` -> ``withheld/<who>/mse_late``, ``best_val_mse_late`` -> ``val/<who>/best_mse_late``,
    ``final_val_reward`` -> ``val/<who>/final_reward``, ``train_s`` -> ``train/<who>/elapsed_s``."""
    if key == "train_s":
        key = "elapsed_s"
    if key.startswith("final_val_"):
        return f"val/{who}/final_{key.removeprefix('final_val_')}"
    group, name = grouped(key).split("/", 1)
    if group == HELD_OUT:
        name = name.split("/", 1)[-1]  # no predictor: <who> is the predictor
    return f"{group}/{who}/{name}"


def pick(metrics: dict[str, float], key: str, default=None):
    """``metrics[key]`` under today's key or the name it had before (a run from an older store); an old
    held-out key (``test/...``) as ``key`` is refused in one line naming today's (:func:`refuse_old`)."""
    refuse_old(key)
    if key in metrics:
        return metrics[key]
    for old, new in ((k, grouped(k)) for k in metrics):
        if new == key:
            return metrics[old]
    return default


def history(client, run_id: str, key: str) -> list:
    """``client.get_metric_history`` of today's ``key``, or of its old name in a run that has only that."""
    refuse_old(key)
    found = client.get_metric_history(run_id, key)
    if found:
        return found
    for old in client.get_run(run_id).data.metrics:
        if old != key and grouped(old) == key:
            return client.get_metric_history(run_id, old)
    return []
