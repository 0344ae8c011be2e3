"""Typed experiment configuration: the one schema that YAML files mirror one to one.

``load_config(path, overrides)`` is the only loader. Every problem (unknown key, wrong type,
out-of-range value) raises :class:`ConfigError` with one sentence naming the key and what is
allowed, before anything (Ray, MLflow) is started.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from es_l2l.families import default_family, get_family
from es_l2l.models import MODELS, default_model, get_model
from es_l2l.outer import OUTER_LOOPS, default_loop, get_loop
from es_l2l.schema import BLOCKS, MAX_DEPTH, ConfigError, Strict, TaskSection, allowed_keys, check_tree, parse_yaml

MAX_TASKS = 100_000  # held-out tasks (validation, evaluate --tasks): each is simulated every validation
MAX_NAME = 200  # characters of a run's, an experiment's name: they are printed on every line of a run's output

# The ``model:`` section: each model kind's own (es_l2l.models), discriminated by ``kind``.
ModelConfig = Annotated[Union[tuple(m.config for m in MODELS.values())], Field(discriminator="kind")]  # type: ignore[misc]


def model_section(value: Any) -> Any:
    """A ``model:`` tree with its ``kind`` set (the default kind where it names none), or one
    sentence naming an unknown kind or a key of another kind."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return value  # pydantic's own message names the section
    kind = value.get("kind", default_model())
    if not isinstance(kind, str) or kind not in MODELS:
        raise PydanticCustomError("model_section", "invalid config value for 'model.kind': unknown model kind {got}; allowed: {allowed}",
                                  {"got": short_repr(kind), "allowed": ", ".join(MODELS)})
    mine = MODELS[kind].config.model_fields
    for key in value:
        if key in mine:
            continue
        owners = [name for name, m in MODELS.items() if key in m.config.model_fields]
        if owners:
            raise PydanticCustomError("model_section", "config key 'model.{key}' belongs to model.kind {owner}, not {kind}; "
                                      "remove it or set model.kind={owner}", {"key": str(key)[:60], "owner": owners[0], "kind": kind})
        raise PydanticCustomError("model_section", "unknown config key 'model.{key}'; allowed keys in model (kind {kind}): {allowed}",
                                  {"key": str(key)[:60], "kind": kind, "allowed": allowed_keys(MODELS[kind].config)})
    return {**value, "kind": kind}


def stored_model(tree: Any) -> Any:
    """A stored config tree (checkpoint, resume file) whose ``model:`` section an older es-l2l wrote
    with every kind's keys (one section for all kinds): its kind's keys only, the other kinds' keys
    (which never applied to it) dropped; unknown keys stay, for the config check to name."""
    model = tree.get("model") if isinstance(tree, dict) else None
    if not isinstance(model, dict) or model.get("kind", default_model()) not in MODELS:
        return tree
    mine = MODELS[model.get("kind", default_model())].config.model_fields
    others = {k for m in MODELS.values() for k in m.config.model_fields} - set(mine)
    return {**tree, "model": {k: v for k, v in model.items() if k not in others}}


class GenomeConfig(Strict):
    """Which parameter blocks ES searches; the others stay frozen at their initial value."""

    search: list[Literal[BLOCKS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["w_in", "w_rec", "w_out", "b_out", "tau_m", "tau_a", "b0", "beta"],
        description="searched blocks; any of " + ", ".join(BLOCKS),
    )
    tau_m_bounds: tuple[float, float] = Field((2.0, 200.0), description="tau_m bounds (ms)")
    tau_a_bounds: tuple[float, float] = Field((20.0, 5000.0), description="tau_a bounds (ms)")
    b0_bounds: tuple[float, float] = Field((1e-3, 1.0), description="b0 bounds")
    beta_bounds: tuple[float, float] = Field((0.0, 10.0), description="beta bounds")
    weight_bound: float = Field(10.0, gt=0, description="weights are clipped to [-w, w]")
    mirror: bool = Field(
        False,
        description="a left-right mirror-symmetric network (weight tying, es_l2l.genome), for task families that "
        "have a mirror symmetry: mirroring the task mirrors the network's neurons and swaps its left and right "
        "outputs, so no member prefers one side",
    )

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.search)) != len(self.search):
            raise ValueError("genome.search lists a block twice")
        for name in ("tau_m", "tau_a", "b0"):
            lo, hi = getattr(self, f"{name}_bounds")
            if not 0 < lo < hi:
                raise ValueError(f"genome.{name}_bounds must satisfy 0 < low < high, got ({lo}, {hi})")
        lo, hi = self.beta_bounds
        if not 0 <= lo < hi:
            raise ValueError(f"genome.beta_bounds must satisfy 0 <= low < high, got ({lo}, {hi})")
        return self


class RunConfig(Strict):
    seed: int = Field(0, ge=0, description="run seed: every random draw derives from it")
    generations: int = Field(1000, ge=1, description="outer-loop generations")
    max_seconds: float | None = Field(None, gt=0, description="stop once training has taken this wall time (s)")
    max_neuron_steps: int | None = Field(None, gt=0, description="stop once this many neuron-steps are simulated")
    workers: int = Field(2, ge=0, le=4096, description="Ray evaluation actors (0: evaluate in the driver)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each actor reserves")
    address: str | None = Field(None, description="Ray address to attach to; None starts Ray locally")
    validate_every: int = Field(50, ge=1, description="held-out validation every k generations")
    validation_tasks: int = Field(128, ge=1, le=MAX_TASKS, description="fixed held-out tasks")
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int | None = Field(
        None, ge=1, le=1024,
        description="torch intra-op threads in the driver (gradient steps, validation); None: torch's default. "
        "1 avoids thread hand-offs that dominate small per-step ops, and on a busy machine",
    )
    gpus_per_worker: float = Field(
        1.0, gt=0, le=64, description="with device=cuda: GPUs each actor reserves (a fraction shares one GPU)"
    )
    gpu_fallback: bool = Field(
        False, description="with device=cuda on a cluster without enough GPUs: run on CPU (logged) instead of stopping"
    )
    checkpoint_every: int = Field(
        10, ge=1, description="log the resumable search state (resume.pt) every k generations"
    )

    @model_validator(mode="after")
    def _whole_or_fraction(self):
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError(
                f"run.gpus_per_worker must be a fraction of one GPU or a whole number, got {self.gpus_per_worker}"
            )
        return self


class TrackingConfig(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI (default sqlite:///./mlflow.db)")
    artifact_root: str = Field("mlruns", description="artifact folder for a new local experiment")
    experiment: str = Field("es-l2l", min_length=1, max_length=MAX_NAME, description="MLflow experiment name")
    system_metrics: bool = Field(True, description="log CPU and memory use (system/...) while a run trains, where psutil is installed")
    run_name: str | None = Field(None, max_length=MAX_NAME, description="MLflow run name (default: the config's name)")


class _Root(Strict):
    """The experiment: the sections every run has; each outer loop adds its own (see :data:`ExperimentConfig`)."""

    name: str = Field(None, min_length=1, max_length=MAX_NAME, description="run name (default: FAMILY-OUTER, e.g. the default config's)")  # type: ignore[assignment]
    outer: str = Field(default_factory=default_loop, description="outer loop: " + ", ".join(OUTER_LOOPS) + ", or package.module:attribute")
    model: ModelConfig = Field(default_factory=lambda: get_model(default_model()).config())
    task: SerializeAsAny[TaskSection] = Field(default_factory=lambda: get_family(default_family()).config())
    genome: GenomeConfig = Field(default_factory=GenomeConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, tree: Any) -> Any:
        """Keys that moved into a family's section fail with one line naming the new place."""
        if isinstance(tree, dict):
            family = tree.get("task", {}).get("family", default_family()) if isinstance(tree.get("task"), dict) else None
            try:
                moved = get_family(family).moved_keys if family else {}
            except ValueError:
                moved = {}
            for old, new in moved.items():
                if old in tree:
                    raise PydanticCustomError("moved_key", "the '{old}' section moved to '{new}'; put its keys there",
                                              {"old": old, "new": new})
        return tree

    @field_validator("outer")
    @classmethod
    def _known_outer(cls, value: str) -> str:
        try:
            get_loop(value)
        except ValueError as exc:
            raise PydanticCustomError("unknown_outer", "{message}", {"message": str(exc)}) from None
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model_section(cls, value: Any) -> Any:
        return model_section(value)

    @field_validator("task", mode="before")
    @classmethod
    def _family_section(cls, value: Any) -> Any:
        """Validate ``task`` with the model of the family it names (the default family when it names none)."""
        if isinstance(value, TaskSection):
            return value
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise PydanticCustomError("task_section", "invalid config value for 'task': the task section must be a mapping of keys, got {got}",
                                      {"got": short_repr(value)})
        name = value.get("family", default_family())
        try:
            family = get_family(str(name))
        except ValueError as exc:
            raise PydanticCustomError("task_section", "{message}", {"message": str(exc)}) from None
        try:
            return family.config.model_validate({**value, "family": name})
        except ValidationError as exc:
            raise PydanticCustomError("task_section", "{message}", {"message": _describe(exc.errors()[0], family.config, ("task",))}) from None

    @property
    def family(self) -> str:
        return self.task.family

    @model_validator(mode="after")
    def _plug_ins_agree(self):
        if self.name is None:
            object.__setattr__(self, "name", f"{self.task.family}-{self.outer}")
        family = get_family(self.task.family)
        if self.genome.mirror and family.mirror_permutations(self.task) is None:
            raise ValueError(f"genome.mirror ties the network to a left-right mirror that the {self.task.family} family does not have; "
                             "set genome.mirror=false or use a family with a mirror symmetry")
        from es_l2l.outer.shell import check_config, loop_of, setting_of

        model = get_model(self.model.kind)
        model.check(self.model, self.genome)
        # the model kind against the outer loop's settings: DEEP R rewiring in a section the loop reads,
        # the blocks it trains by gradient, the blocks it also searches without gradients (the hybrid)
        setting, loop = setting_of(self), loop_of(self)
        searched, trained = loop.blocks(setting)
        deep_r = any(getattr(getattr(setting.sections.get(k), "deep_r", None), "enabled", False) for k in loop.sections)
        why = model.incompatible(deep_r=deep_r, trained=list(trained) if trained else None,
                                 es_blocks=list(searched) if trained and searched else None)
        if why is not None:
            raise ValueError(why)
        family.check(self.task, self.run_context())

        check_config(self)  # the outer loop's checks (and data-parallel BPTT's: bptt.workers > 1)
        return self

    def run_context(self):
        """The run context plug-ins receive (:class:`es_l2l.context.RunContext`; ``RunContext.of(cfg)`` calls this)."""
        from es_l2l.context import RunContext
        from es_l2l.outer.shell import loop_of

        model = get_model(self.model.kind)
        return RunContext(seed=self.run.seed, device=self.run.device, validation_tasks=self.run.validation_tasks,
                          model=model, model_cfg=self.model, sim=model.sim_options(self.model), name=self.name,
                          step_label=loop_of(self).step_label)

    def changed_blocks(self) -> tuple[list[str], list[str]]:
        """(the genome blocks the outer loop searches without gradients, those it trains by gradient)."""
        from es_l2l.outer.shell import loop_of, setting_of

        return loop_of(self).blocks(setting_of(self))

    def flat(self) -> dict[str, Any]:
        """Dotted-key view, e.g. for MLflow params."""
        return flatten(self.model_dump())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# The root schema: the common sections, then each outer loop's own (es, bptt, hybrid, ...).
ExperimentConfig = create_model(
    "ExperimentConfig",
    __base__=_Root,
    __module__=__name__,
    **{loop.section: (loop.config, Field(default_factory=loop.config)) for loop in OUTER_LOOPS.values() if loop.section},
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _apply_override(tree: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form dotted.key=value, e.g. es.popsize=32")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) > MAX_DEPTH:
        raise ConfigError(f"override '{item[:60]}...' names a key {len(parts)} levels deep; config keys have a few, e.g. es.popsize")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
    try:
        node[parts[-1]] = parse_yaml(raw, f"--set {key.strip()[:60]}") if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key.strip()[:60]}: the value is not valid YAML ({exc.__class__.__name__}); quote it") from None


def _describe(err: dict[str, Any], schema: type, prefix: tuple = ()) -> str:
    """One sentence for the first validation error, naming the dotted key and what is allowed."""
    if err["type"] in ("task_section", "moved_key", "model_section"):  # already one sentence
        return err["msg"]
    loc = (*prefix, *err["loc"])
    if len(loc) > 1 and loc[0] == "model" and loc[1] in MODELS:  # the union's tag: model.lsnn.n_lif -> model.n_lif
        loc = (loc[0], *loc[2:])
    key = ".".join(str(p) for p in loc) or "<top level>"
    if err["type"] == "unknown_outer":
        return f"invalid config value for '{key}': {err['msg']}"
    if err["type"] == "extra_forbidden":
        section: Any = schema
        for part in [str(p) for p in err["loc"]][:-1]:
            section = section.model_fields[part].annotation if section is not None and part in getattr(section, "model_fields", {}) else None
        where = ".".join(str(p) for p in loc[:-1]) or "top level"
        return f"unknown config key '{key}'; allowed keys in {where}: {allowed_keys(section)}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error":
        return f"invalid config: {msg}"
    return f"invalid config value for '{key}': {msg} (got {short_repr(err.get('input'))})"


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error line stays one short line whatever the input."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxdict = 6
    short.maxlevel = 2
    text = short.repr(value)
    return text if len(text) <= limit + 20 else text[:limit] + f"... ({len(text):,} characters)"


def build_config(tree: dict[str, Any] | None, overrides: list[str] | tuple[str, ...] = (), where: str = "the config") -> ExperimentConfig:
    """Validate a config tree (from YAML, a checkpoint or a resume file), bounded first (es_l2l.schema.check_tree)."""
    check_tree(tree, where)
    tree = dict(tree or {})
    for item in overrides:
        _apply_override(tree, item)
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], ExperimentConfig)) from None


def read_yaml(path: str | Path, example: str = "one of configs/*.yaml") -> dict[str, Any]:
    """A YAML file's top-level mapping; ConfigError (naming ``example``) when it is missing or not one."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a directory; pass a YAML file such as {example}")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass a YAML file such as {example}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not a text file (not UTF-8); pass a YAML file such as {example}") from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read ({exc.strerror or type(exc).__name__})") from None
    if "\x00" in text:
        raise ConfigError(f"config file '{path}' is a binary file, not YAML; pass a YAML file such as {example}")
    try:
        tree = parse_yaml(text, f"config file '{path}'")  # bounded: depth, aliases, sizes (es_l2l.schema)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML ({exc.__class__.__name__}); fix its syntax") from None
    if tree is None:
        raise ConfigError(f"config file '{path}' is empty; write at least one section (or leave CONFIG out for the defaults)")
    if not isinstance(tree, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections (model, task, es, ...)")
    return tree


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read YAML (or defaults when ``path`` is None), apply ``dotted.key=value`` overrides, validate."""
    tree = read_yaml(path) if path is not None else {}
    return build_config(tree, overrides)
