"""Typed experiment configuration: the one schema that YAML files mirror one to one.

``load_config(path, overrides)`` is the only loader. Every problem (unknown key, wrong type,
out-of-range value) raises :class:`ConfigError` with one sentence naming the key and what is
allowed, before anything (Ray, MLflow) is started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem, described in one actionable sentence."""


class _Strict(BaseModel):
    # allow_inf_nan=False: every float field in every section refuses inf and nan, in one place
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Strict):
    """The LSNN: LIF and ALIF (adaptive threshold) populations, reference defaults."""

    n_lif: int = Field(16, ge=0, le=4096, description="number of LIF neurons (beta = 0)")
    n_alif: int = Field(16, ge=0, le=4096, description="number of adaptive-threshold neurons")
    tau_m: float = Field(20.0, gt=0, description="membrane time constant (ms)")
    tau_a: float = Field(600.0, gt=0, description="threshold-adaptation time constant (ms)")
    b0: float = Field(0.01, gt=0, description="baseline threshold")
    beta: float = Field(1.7, ge=0, description="adaptation strength of ALIF neurons")
    n_ref: int = Field(3, ge=0, le=100, description="refractory period (steps)")
    tau_out: float = Field(20.0, gt=0, description="readout low-pass time constant (ms)")
    gamma: float = Field(0.3, gt=0, description="pseudo-derivative dampening factor")
    dt: float = Field(1.0, gt=0, description="simulation step (ms)")
    w_in_scale: float = Field(1.0, gt=0, description="input weights ~ scale * N(0,1)/sqrt(n_in)")
    w_rec_scale: float = Field(1.0, ge=0, description="recurrent weights ~ scale * N(0,1)/sqrt(N)")
    p_in: float = Field(1.0, gt=0, le=1, description="initial input connection probability")
    p_rec: float = Field(1.0, gt=0, le=1, description="initial recurrent connection probability")
    rate_target_hz: float = Field(10.0, ge=0, description="firing-rate regulariser target f0")
    rate_reg: float = Field(0.0, ge=0, description="firing-rate regulariser weight")

    @model_validator(mode="after")
    def _some_neurons(self):
        if self.n_lif + self.n_alif < 2:
            raise ValueError("model.n_lif + model.n_alif must be at least 2")
        return self


class TeacherConfig(_Strict):
    """Learning from a teacher: targets are random 2-layer sigmoid networks G(x1, x2)."""

    family: Literal["teacher"] = "teacher"
    n_trials: int = Field(30, ge=2, le=1000, description="trials per episode")
    trial_ms: int = Field(20, ge=2, le=1000, description="steps per trial")
    readout_ms: int = Field(10, ge=1, description="last steps of a trial averaged into the prediction")
    hidden_units: int = Field(8, ge=1, le=1000, description="hidden sigmoid units of G")
    weight_range: float = Field(1.0, gt=0, description="G's weights and biases ~ U[-r, r]")
    input_range: float = Field(6.0, gt=0, description="inputs x1, x2 ~ U[-r, r]")
    output_scale: float = Field(0.5, gt=0, description="G is multiplied by this")
    target_range: float = Field(2.0, gt=0, description="targets are population coded over [-r, r]")
    neurons_per_variable: int = Field(10, ge=2, le=1000, description="input neurons per coded variable")
    max_rate_hz: float = Field(200.0, gt=0, le=1000, description="peak Poisson rate of an input neuron")
    batch_size: int = Field(16, ge=1, description="tasks per generation (same for every member)")

    @model_validator(mode="after")
    def _readout_fits(self):
        if self.readout_ms > self.trial_ms:
            raise ValueError(f"task.readout_ms ({self.readout_ms}) must be at most task.trial_ms ({self.trial_ms})")
        return self


class MazeConfig(_Strict):
    """Learning from rewards: grid mazes with the goal in an unknown corner (meta-RL navigation)."""

    family: Literal["maze"] = "maze"
    rows: int = Field(4, ge=2, le=100, description="grid rows")
    cols: int = Field(5, ge=2, le=100, description="grid columns")
    n_steps: int = Field(100, ge=1, le=10000, description="environment steps (moves) per episode")
    neurons_per_channel: int = Field(4, ge=1, le=1000, description="input neurons per one-hot channel")
    position_code: Literal["cell", "rowcol", "both"] = Field(
        "cell",
        description="how the current position is spike coded: one channel per cell (rows * cols), one per row "
        "plus one per column (rows + cols, two active), or both",
    )
    rate_hz: float = Field(200.0, gt=0, le=1000, description="Poisson rate of an active input neuron")
    ms_per_step: int = Field(10, ge=1, le=1000, description="simulation steps (ms) per environment step")
    batch_size: int = Field(16, ge=1, description="mazes per generation (same for every member)")
    balanced_goals: bool = Field(
        True, description="every batch of mazes holds each corner equally often (each maze's goal is still uniform)"
    )
    policy: Literal["sample", "greedy"] = Field(
        "sample",
        description="how the agent acts on its softmax policy when evaluated (ES fitness, validation, test): "
        "sample an action (shared uniforms, the same for every member) or take the most probable one; "
        "A2C training always samples",
    )
    temperature: float = Field(
        1.0, gt=0, description="softmax temperature of the policy: logits are divided by it (small: nearly greedy)"
    )
    search_curriculum: int = Field(
        0,
        ge=0,
        description="training curriculum: for the first N generations (ES) or steps (A2C, hybrid) the training mazes' goal "
        "moves to a random corner after every find, which rewards searching all four corners; validation and test "
        "always play the task family itself",
    )


BLOCKS = ("w_in", "w_rec", "w_out", "b_out", "tau_m", "tau_a", "b0", "beta", "mask_in", "mask_rec")


class GenomeConfig(_Strict):
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
        description="maze family: a left-right mirror-symmetric network (weight tying, es_l2l.genome): mirroring "
        "the maze mirrors the network's neurons and swaps its left and right actions, so no member prefers one side",
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


DIFFERENTIABLE = ("w_in", "w_rec", "w_out", "b_out", "tau_m", "tau_a", "b0", "beta")


class DeepRConfig(_Strict):
    """DEEP R (Bellec et al., ICLR 2018): sparse, sign-preserving connectivity learned by rewiring."""

    enabled: bool = Field(False, description="rewire the listed weight blocks during BPTT")
    blocks: list[Literal["w_in", "w_rec"]] = Field(default_factory=lambda: ["w_rec"], description="rewired blocks")
    connectivity: float = Field(0.2, gt=0, le=1, description="fraction of possible connections that are active")
    l1: float = Field(1e-4, ge=0, description="l1 pull on active connection strengths, per step (x lr)")
    temperature: float = Field(1e-6, ge=0, description="noise temperature: each step adds N(0, 2 lr T)")
    dale: bool = Field(False, description="Dale's law: every presynaptic neuron is excitatory or inhibitory")
    excitatory_fraction: float = Field(0.8, gt=0, lt=1, description="share of excitatory neurons under Dale's law")


class BPTTConfig(_Strict):
    """Gradient outer loop: Adam through the unrolled spiking dynamics (pseudo-derivative)."""

    train: list[Literal[DIFFERENTIABLE]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["w_in", "w_rec", "w_out", "b_out"],
        description="blocks trained by gradient; any of " + ", ".join(DIFFERENTIABLE),
    )
    batch_size: int | None = Field(None, ge=1, description="tasks per gradient step (None: task.batch_size)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    lr_schedule: Literal["constant", "step", "cosine"] = Field("constant", description="learning-rate schedule")
    lr_decay: float = Field(0.5, gt=0, le=1, description="step schedule: multiply the rate by this ...")
    lr_decay_every: int = Field(500, ge=1, description="... every this many steps")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the gradient's global norm (None: no clipping)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas")
    deep_r: DeepRConfig = Field(default_factory=DeepRConfig)

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.train)) != len(self.train):
            raise ValueError("bptt.train lists a block twice")
        for block in self.deep_r.blocks if self.deep_r.enabled else ():
            if block not in self.train:
                raise ValueError(f"bptt.deep_r rewires '{block}', so bptt.train must include it")
        return self


class A2CConfig(_Strict):
    """Advantage actor-critic through the spiking dynamics (the maze family's gradient outer loop).

    Per episode: returns ``R_t = sum_k discount^k r_{t+k}``, advantage ``A_t = R_t - V_t``, loss
    ``mean_t[-log pi(a_t) A_t + value_weight (R_t - V_t)^2 - entropy_weight H(pi_t)]``; the
    optimiser, learning rate, clipping and trained blocks come from ``bptt``.
    """

    discount: float = Field(0.9, ge=0, le=1, description="reward discount per environment step")
    value_weight: float = Field(0.5, ge=0, description="weight of the value (critic) loss")
    entropy_weight: float = Field(0.01, ge=0, description="weight of the policy-entropy bonus")
    normalize_advantages: bool = Field(True, description="scale advantages to unit variance over the batch")


class HybridConfig(_Strict):
    """Interleaved hybrid: one ES step on ``es_blocks``, then ``bptt_steps`` gradient steps on ``bptt.train``."""

    es_blocks: list[Literal[BLOCKS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["tau_m", "tau_a", "b0", "beta"],
        description="blocks ES searches; bptt.train lists the blocks gradient steps train",
    )
    bptt_steps: int = Field(2, ge=1, le=1000, description="gradient steps after each ES step")


ALGORITHMS = ("pgpe", "snes", "cem", "cmaes")


class ESConfig(_Strict):
    """Evolution strategy (evotorch). ``None`` means the algorithm's own default."""

    algorithm: Literal[ALGORITHMS] = "pgpe"  # type: ignore[valid-type]
    popsize: int = Field(64, ge=4, description="population size P (even for antithetic PGPE)")
    stdev_init: float = Field(0.05, gt=0, description="initial search stdev (search space)")
    stdev_blocks: dict[Literal[BLOCKS], float] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="initial stdev of chosen genome blocks, overriding stdev_init there, e.g. {w_out: 0.3, b_out: 0.3}: "
        "wider search on the readout varies behaviour without upsetting the recurrent memory (pgpe, snes, cem)",
    )
    center_lr: float | None = Field(0.1, gt=0, description="PGPE/SNES center learning rate (None: SNES default)")
    stdev_lr: float | None = Field(None, gt=0, description="PGPE/SNES stdev learning rate")
    optimizer: Literal["clipup", "adam", "sgd"] = Field("clipup", description="PGPE center optimizer")
    max_speed: float | None = Field(None, gt=0, description="ClipUp max speed (default 2 * center_lr)")
    stdev_max_change: float = Field(0.2, gt=0, description="PGPE: max relative stdev change per step")
    parenthood_ratio: float = Field(0.25, gt=0, lt=1, description="CEM elite fraction")
    separable: bool = Field(True, description="CMA-ES: separable (diagonal) covariance")
    nan_policy: Literal["error", "worst"] = Field(
        "error", description="a NaN fitness stops the run (error) or ranks last (worst)"
    )
    traffic: Literal["seeds", "vectors"] | None = Field(
        None,
        description="what Ray workers receive: the distribution and the sampler's RNG state, from which they "
        "regenerate their members (seeds: O(P + D) bytes a generation), or the members themselves (vectors: "
        "O(P x D)); None: seeds for pgpe, snes and cem, vectors for cmaes",
    )

    @model_validator(mode="after")
    def _even(self):
        if self.algorithm == "pgpe" and self.popsize % 2:
            raise ValueError(f"es.popsize must be even for pgpe (antithetic pairs), got {self.popsize}")
        bad = {k: v for k, v in self.stdev_blocks.items() if not v > 0}
        if bad:
            raise ValueError(f"es.stdev_blocks must be positive, got {bad}")
        if self.algorithm == "cmaes" and self.stdev_blocks:
            raise ValueError("es.stdev_blocks needs a per-coordinate stdev (pgpe, snes, cem); CMA-ES takes one scalar stdev_init")
        if self.algorithm == "cmaes" and self.traffic == "seeds":
            raise ValueError("es.traffic=seeds needs a Gaussian search distribution (pgpe, snes, cem); set es.traffic=vectors for cmaes")
        return self

    @property
    def seed_traffic(self) -> bool:
        """Whether Ray workers regenerate their members from the sampler's state."""
        return self.traffic == "seeds" or (self.traffic is None and self.algorithm != "cmaes")


class RunConfig(_Strict):
    seed: int = Field(0, ge=0, description="run seed: every random draw derives from it")
    generations: int = Field(1000, ge=1, description="outer-loop generations")
    max_seconds: float | None = Field(None, gt=0, description="stop once training has taken this wall time (s)")
    max_neuron_steps: int | None = Field(None, gt=0, description="stop once this many neuron-steps are simulated")
    workers: int = Field(2, ge=0, le=4096, description="Ray evaluation actors (0: evaluate in the driver)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each actor reserves")
    address: str | None = Field(None, description="Ray address to attach to; None starts Ray locally")
    validate_every: int = Field(50, ge=1, description="held-out validation every k generations")
    validation_tasks: int = Field(128, ge=1, description="fixed held-out tasks")
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


class TrackingConfig(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI (default sqlite:///./mlflow.db)")
    artifact_root: str = Field("mlruns", description="artifact folder for a new local experiment")
    experiment: str = Field("es-l2l", min_length=1, description="MLflow experiment name")
    run_name: str | None = None


OUTER_LOOPS = ("es", "bptt", "hybrid")


class ExperimentConfig(_Strict):
    name: str = Field("teacher-es", min_length=1)
    outer: Literal[OUTER_LOOPS] = Field("es", description="outer loop: es, bptt or hybrid")  # type: ignore[valid-type]
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TeacherConfig | MazeConfig = Field(default_factory=TeacherConfig, discriminator="family")
    genome: GenomeConfig = Field(default_factory=GenomeConfig)
    es: ESConfig = Field(default_factory=ESConfig)
    bptt: BPTTConfig = Field(default_factory=BPTTConfig)
    hybrid: HybridConfig = Field(default_factory=HybridConfig)
    a2c: A2CConfig = Field(default_factory=A2CConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_family(cls, tree: Any) -> Any:
        """A ``task`` section without ``family`` is the teacher family (the default)."""
        if isinstance(tree, dict) and isinstance(tree.get("task"), dict) and "family" not in tree["task"]:
            tree = {**tree, "task": {"family": "teacher", **tree["task"]}}
        return tree

    @property
    def family(self) -> str:
        return self.task.family

    @model_validator(mode="after")
    def _outer_blocks(self):
        searched = set(self.genome.search)
        if self.genome.mirror and self.task.family != "maze":
            raise ValueError("genome.mirror ties the network to the maze's left-right mirror; set task.family=maze or genome.mirror=false")
        for block in self.es.stdev_blocks:
            if block not in searched:
                raise ValueError(f"es.stdev_blocks lists '{block}' but genome.search does not; add it to genome.search")
        if self.task.family == "maze" and self.outer == "hybrid":
            raise ValueError("outer=hybrid supports the teacher family only; use outer=es or outer=bptt (A2C) for mazes")
        if self.outer in ("bptt", "hybrid"):
            for block in self.bptt.train:
                if block not in searched:
                    raise ValueError(f"bptt.train lists '{block}' but genome.search does not; add it to genome.search")
            if self.bptt.deep_r.enabled and (self.model.p_in < 1 or self.model.p_rec < 1):
                raise ValueError("bptt.deep_r sets the connectivity itself; set model.p_in=1 and model.p_rec=1")
            if self.bptt.deep_r.enabled and self.genome.mirror:
                raise ValueError("bptt.deep_r rewires connections one by one and breaks genome.mirror's symmetry; "
                                 "set genome.mirror=false or bptt.deep_r.enabled=false")
            if self.bptt.deep_r.enabled and {"mask_in", "mask_rec"} & searched:
                raise ValueError("bptt.deep_r sets the connectivity itself; remove mask_in and mask_rec from genome.search")
        if self.outer == "hybrid":
            for block in self.hybrid.es_blocks:
                if block not in searched:
                    raise ValueError(f"hybrid.es_blocks lists '{block}' but genome.search does not; add it to genome.search")
            both = sorted(set(self.hybrid.es_blocks) & set(self.bptt.train))
            if both:
                raise ValueError(f"hybrid.es_blocks and bptt.train both list {', '.join(both)}; give each block to one side")
            if not self.hybrid.es_blocks:
                raise ValueError("hybrid.es_blocks is empty; list the blocks ES searches, e.g. [tau_m, tau_a, b0, beta]")
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted-key view, e.g. for MLflow params."""
        return flatten(self.model_dump())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


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
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


FAMILIES: dict[str, type[BaseModel]] = {"teacher": TeacherConfig, "maze": MazeConfig}


def _describe(err: dict[str, Any], schema: type[BaseModel]) -> str:
    family = None
    if len(err["loc"]) > 1 and err["loc"][0] == "task" and err["loc"][1] in FAMILIES:
        family = err["loc"][1]  # the tagged union puts the family into the location: drop it
        err = {**err, "loc": ("task", *err["loc"][2:])}
    if err["type"] == "union_tag_invalid":
        return f"unknown task family {err.get('input', {}).get('family')!r}; allowed: {', '.join(FAMILIES)}"
    loc = [str(p) for p in err["loc"] if not str(p).isdigit() or err["type"] != "literal_error"]
    key = ".".join(str(p) for p in err["loc"]) or "<top level>"
    if err["type"] == "extra_forbidden":
        section: Any = schema
        for part in loc[:-1]:
            section = FAMILIES[family] if family and section is schema and part == "task" else section.model_fields[part].annotation
        allowed = ", ".join(section.model_fields) if isinstance(section, type) else "?"
        where = ".".join(loc[:-1]) or "top level"
        return f"unknown config key '{key}'; allowed keys in {where}: {allowed}"
    got = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error":
        return f"invalid config: {msg}"
    return f"invalid config value for '{key}': {msg} (got {got!r})"


def build_config(tree: dict[str, Any] | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    tree = dict(tree or {})
    for item in overrides:
        _apply_override(tree, item)
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], ExperimentConfig)) from None


def read_yaml(path: str | Path, example: str = "configs/teacher_es.yaml") -> dict[str, Any]:
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
        tree = yaml.safe_load(text)
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
