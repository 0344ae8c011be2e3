"""An evotorch searcher's state as plain data (tensors, numbers, strings), and back.

Resuming used to pickle the whole searcher, so loading ``resume.pkl`` could run any code the file
named. Now the resumed driver builds a fresh searcher from the config (:func:`es_l2l.outer.es.make_searcher`,
a pure function of it) and :func:`restore_searcher` overwrites what evolves during a search:

* the searcher's own numbers and tensors (step count, CMA-ES paths and covariance, ...),
* the search distribution's parameters (centre, stdev),
* the optimizer (ClipUp's velocity; Adam's or SGD's ``state_dict``),
* the last evaluated population (PGPE, SNES and CEM update from it at the start of the next step),
* the problem's random generator.

Everything else on a searcher (hooks, status reporters, bound methods, classes) comes from the
config. The same optimizer state (:func:`optimizer_state`, :func:`restore_optimizer`) also carries
the centre optimizer of guided ES (:mod:`es_l2l.outer.guided`), whose own state is its centre and
gradient history. :func:`searcher_state` refuses an attribute it does not know, so an evotorch upgrade that
adds state fails the resume tests instead of resuming silently wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FORMAT = 1
# Built from the config or recomputed by evotorch at every step: never saved.
_REBUILT = {
    "DISTRIBUTION_TYPE",
    "DISTRIBUTION_PARAMS",
    "_LazyReporter__getters",
    "_LazyReporter__computed",
    "_before_step_hook",
    "_after_step_hook",
    "_log_hook",
    "_end_of_run_hook",
    "_step",
    "_first_step_datetime",
    "_SinglePopulationAlgorithmMixin__exclude",
}
_SPECIAL = {"_problem", "_distribution", "_optimizer", "_population"}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, torch.Tensor, np.generic))


def _tensor_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().clone()


def optimizer_state(opt: Any) -> dict | None:
    """An evotorch optimizer's state (ClipUp's velocity; Adam's or SGD's ``state_dict``) as plain data."""
    if opt is None:
        return None
    if hasattr(opt, "_optim") and hasattr(opt, "_data"):  # evotorch.optimizers.TorchOptimizer (Adam, SGD)
        return {"kind": type(opt).__name__, "data": _tensor_copy(opt._data), "torch": _clone_tree(opt._optim.state_dict())}
    fields = {}
    for k, v in vars(opt).items():  # ClipUp: stepsize, momentum, max_speed, velocity
        if k in ("_param_groups", "_dtype", "_device"):
            continue
        if not _plain(v):
            raise TypeError(f"cannot save the state of optimizer {type(opt).__name__}: attribute {k} is {type(v).__name__}")
        fields[k] = _tensor_copy(v) if isinstance(v, torch.Tensor) else v
    return {"kind": type(opt).__name__, "fields": fields}


def _clone_tree(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return _tensor_copy(o)
    if isinstance(o, dict):
        return {k: _clone_tree(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return type(o)(_clone_tree(v) for v in o)
    return o


def searcher_state(searcher: Any) -> dict:
    """What evolves in ``searcher``, as plain data (a snapshot: tensors are copied)."""
    attrs: dict[str, Any] = {}
    for name, value in vars(searcher).items():
        if name in _REBUILT or name in _SPECIAL:
            continue
        if not _plain(value):
            raise TypeError(
                f"cannot save {type(searcher).__name__}.{name} ({type(value).__name__}): es_l2l.outer.evo.state does not "
                "know this evotorch attribute; teach it (and the resume tests) about it"
            )
        attrs[name] = _tensor_copy(value) if isinstance(value, torch.Tensor) else value
    state: dict[str, Any] = {"format": FORMAT, "class": type(searcher).__name__, "attrs": attrs}
    dist = getattr(searcher, "_distribution", None)
    if dist is not None:
        params = {k: _tensor_copy(v) if isinstance(v, torch.Tensor) else v for k, v in dist.parameters.items()}
        bad = [k for k, v in params.items() if not _plain(v)]
        if bad:
            raise TypeError(f"cannot save distribution parameters {bad} of {type(dist).__name__}")
        state["distribution"] = {"class": type(dist).__name__, "parameters": params}
    if hasattr(searcher, "_optimizer"):
        state["optimizer"] = optimizer_state(searcher._optimizer)
    pop = getattr(searcher, "_population", None)
    state["population"] = None if pop is None else {
        "values": _tensor_copy(pop.access_values(keep_evals=True)),
        "evals": _tensor_copy(pop.evals),
    }
    problem = searcher.problem
    state["problem"] = {
        "generator": problem._generator.get_state().clone(),
        "rng_state": None if problem._rng_state is None else problem._rng_state.clone(),
        "seed_keys": list(problem.seed_keys),
    }
    return state


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"resume state does not fit this searcher: {message}")


def restore_optimizer(opt: Any, opt_state: dict) -> None:
    """Overwrite a freshly built centre optimizer with ``opt_state`` from :func:`optimizer_state`."""
    _check(opt is not None and type(opt).__name__ == opt_state["kind"], "different optimizer")
    if "torch" in opt_state:
        opt._data.copy_(opt_state["data"])
        opt._optim.load_state_dict(opt_state["torch"])
    else:
        for k, v in opt_state["fields"].items():
            _check(k in vars(opt), f"unknown optimizer field {k}")
            setattr(opt, k, v.clone() if isinstance(v, torch.Tensor) else v)


def restore_searcher(searcher: Any, state: dict) -> None:
    """Overwrite a freshly built ``searcher`` (same config) with ``state`` from :func:`searcher_state`."""
    from evotorch import SolutionBatch

    _check(isinstance(state, dict) and state.get("format") == FORMAT, "unknown searcher state format")
    _check(state["class"] == type(searcher).__name__, f"it is a {state['class']}, the config builds a {type(searcher).__name__}")
    current = vars(searcher)
    for name, value in state["attrs"].items():
        _check(name in current and name not in _REBUILT | _SPECIAL, f"unknown attribute {name}")
        old = current[name]
        _check(_plain(value), f"attribute {name} is not plain data")
        if isinstance(old, torch.Tensor) and isinstance(value, torch.Tensor):
            _check(old.shape == value.shape, f"{name} has shape {tuple(value.shape)}, expected {tuple(old.shape)}")
            value = value.to(old.device, old.dtype)
        setattr(searcher, name, value)
    if "distribution" in state:
        dist = searcher._distribution
        _check(state["distribution"]["class"] == type(dist).__name__, "different search distribution")
        params = dict(dist.parameters)
        for k, v in state["distribution"]["parameters"].items():
            _check(k in params, f"unknown distribution parameter {k}")
            if isinstance(v, torch.Tensor):
                old = params[k]
                _check(isinstance(old, torch.Tensor) and old.shape == v.shape, f"distribution parameter {k} has the wrong shape")
                v = v.to(old.device, old.dtype)
            params[k] = v
        searcher._distribution = type(dist)(parameters=params, dtype=dist.dtype, device=dist.device)
    opt_state = state.get("optimizer")
    if opt_state is not None:
        restore_optimizer(searcher._optimizer, opt_state)
    pop = state.get("population")
    if pop is not None:
        batch = SolutionBatch(searcher.problem, popsize=int(pop["values"].shape[0]), empty=True)
        batch.access_values(keep_evals=True)[:] = pop["values"]
        batch.access_evals()[:] = pop["evals"]
        searcher._population = batch
    problem = searcher.problem
    problem._generator.set_state(state["problem"]["generator"])
    problem._rng_state = state["problem"]["rng_state"]
    problem.seed_keys = tuple(state["problem"]["seed_keys"])


def state_problem(searcher: dict, dim: int, popsize: int) -> str | None:
    """What in a loaded evotorch searcher state (:func:`searcher_state`, read back from a file) cannot be
    true of a search over ``dim`` coordinates with ``popsize`` members, naming the field; None when it fits."""
    dist = searcher.get("distribution") or {}
    params = dist.get("parameters") if isinstance(dist, dict) else None
    if dist and not isinstance(params, dict):
        return "searcher.distribution.parameters is not a mapping"
    for key, value in (params or {}).items():
        if isinstance(value, torch.Tensor):
            if tuple(value.shape) != (dim,) or not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                return f"searcher.distribution.parameters.{key} has shape {tuple(value.shape)}, expected ({dim},) finite floats"
            if key == "sigma" and not bool((value > 0).all()):
                return f"searcher.distribution.parameters.sigma has {int((value <= 0).sum())} value(s) <= 0; a step size is positive"
    attrs = searcher.get("attrs")
    if not isinstance(attrs, dict):
        return "searcher.attrs is not a mapping"
    for key, value in attrs.items():
        number = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value)) if isinstance(value, (int, float)) else None
        if number is not None and not bool(torch.isfinite(number).all()):
            return f"searcher.attrs.{key} is not finite"
        if key in ("sigma", "_popsize") and number is not None and not bool((number > 0).all()):
            return f"searcher.attrs.{key} is {_short(value)}; it must be positive"
    if isinstance(attrs.get("_popsize"), int) and attrs["_popsize"] != popsize:
        return f"searcher.attrs._popsize is {attrs['_popsize']}, but es.popsize is {popsize}"
    pop = searcher.get("population")
    if pop is not None:
        values, evals = (pop.get("values"), pop.get("evals")) if isinstance(pop, dict) else (None, None)
        if not isinstance(values, torch.Tensor) or values.ndim != 2 or values.shape[1] != dim or values.shape[0] > 4 * popsize:
            return f"searcher.population.values is not a (members <= {4 * popsize}, {dim}) tensor"
        if not isinstance(evals, torch.Tensor) or evals.shape[:1] != values.shape[:1]:
            return "searcher.population.evals does not have one row per member"
    generator = (searcher.get("problem") or {}).get("generator") if isinstance(searcher.get("problem"), dict) else None
    expected = torch.Generator().get_state()
    if not isinstance(generator, torch.Tensor) or generator.dtype != expected.dtype or generator.shape != expected.shape:
        return "searcher.problem.generator is not a torch CPU generator state"
    return None


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxdict = 6
    short.maxlevel = 2
    return short.repr(value)
