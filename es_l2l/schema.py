"""The pieces every config section is made of: the strict base model and the one error type.

Kept apart from :mod:`es_l2l.config` (the root schema, which composes the sections that task
families and outer loops contribute) so that a family's or an outer loop's own section can be
declared beside its code without importing the root.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem, described in one actionable sentence."""


class Strict(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: every float field in every section refuses inf and nan, in one place
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TaskSection(Strict):
    """What every family's ``task:`` section has (the family's own model adds the rest)."""

    # Fields that shape training only, never the validation or test tasks: runs compared by
    # ``es-l2l compare`` may differ in them (a family adds e.g. its gradient loss's weights).
    training_only: ClassVar[tuple[str, ...]] = ("batch_size",)

    family: str
    batch_size: int


def allowed_keys(section: Any) -> str:
    return ", ".join(section.model_fields) if isinstance(section, type) and issubclass(section, BaseModel) else "?"


# The genome's parameter blocks (es_l2l.genome), by name: what config sections may list.
BLOCKS = ("w_in", "w_rec", "w_out", "b_out", "tau_m", "tau_a", "b0", "beta", "mask_in", "mask_rec")
DIFFERENTIABLE = ("w_in", "w_rec", "w_out", "b_out", "tau_m", "tau_a", "b0", "beta")  # what gradients can train


# --- bounds on what a loader accepts -------------------------------------------------------------
# A config is a few KB nested three or four levels deep; these limits are far above any real file
# and far below what hangs or crashes the loader (an alias bomb expands 1 KB into 10^9 values,
# 100,000 nested brackets overflow Python's recursion, a 200 KB string stalls the terminal).
MAX_TEXT = 1_000_000  # characters of YAML text
MAX_DEPTH = 32  # nested sections or lists, aliases expanded
MAX_VALUES = 100_000  # values, aliases expanded
MAX_STRING = 2_048  # characters in one string (a name has its own, shorter limit); rich wraps a long word in quadratic time


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with the bounds above checked before anything is built.

    The composer (which recurses once per nesting level) counts the levels before it descends, so
    a deep file is refused at level :data:`MAX_DEPTH` + 1; aliases are then expanded on the composed
    node graph by counting (memoised per node), never by building. Raises :class:`ConfigError`
    naming ``where`` (e.g. "config file 'x.yaml'") and the limit; a syntax error raises ``yaml.YAMLError``.
    """
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{where} is {len(text):,} characters long (at most {MAX_TEXT:,}); a config is a few KB, so pass the right file")
    loader = _bounded_loader()(text)
    loader.where = where
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(node, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _bounded_loader() -> type:
    import yaml

    class Bounded(yaml.SafeLoader):
        depth, where = 0, "the YAML"

        def compose_node(self, parent, index):
            event = self.peek_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_STRING:
                raise ConfigError(f"{self.where} holds a {len(event.value):,}-character value (line {line}; at most {MAX_STRING:,}); shorten it")
            if not isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                return super().compose_node(parent, index)
            if self.depth >= MAX_DEPTH:
                raise ConfigError(f"{self.where} nests more than {MAX_DEPTH} levels deep (line {line}); a config has a few levels of "
                                  "sections, so flatten it")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Bounded


def _check_aliases(root: Any, where: str) -> None:
    """Refuse a node graph whose aliases expand beyond :data:`MAX_VALUES` values or :data:`MAX_DEPTH`
    levels, or refer to themselves; counted per distinct node (memoised), so a bomb costs microseconds."""
    import yaml

    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    open_: set[int] = set()

    def size(node) -> tuple[int, int]:  # recursion depth <= MAX_DEPTH: the composer bounded the written nesting
        key = id(node)
        if key in memo:
            return memo[key]
        if key in open_:
            raise ConfigError(f"{where} has an alias inside its own anchor (line {node.start_mark.line + 1}); write the value out")
        if isinstance(node, yaml.ScalarNode):
            return 1, 0
        open_.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        values, depth = 1, 0
        for child in children:
            v, d = size(child)
            values, depth = values + v, max(depth, d + 1)
            if values > MAX_VALUES or depth > MAX_DEPTH:
                what = f"more than {MAX_VALUES:,} values" if values > MAX_VALUES else f"more than {MAX_DEPTH} levels deep"
                raise ConfigError(f"{where} expands its aliases (*name) to {what} (line {node.start_mark.line + 1}); a config "
                                  "holds a few hundred values, so write it out without the alias chain")
        open_.discard(key)
        memo[key] = (values, depth)
        return values, depth

    size(root)


def check_tree(tree: Any, where: str, error: type[Exception] = ConfigError) -> None:
    """The same bounds on an already-loaded tree (a checkpoint's config, a resume file's JSON), walked
    without recursion (a cycle ends at the depth limit): at most :data:`MAX_DEPTH` levels, :data:`MAX_VALUES` values (tensors count as
    one) and strings of :data:`MAX_STRING` characters. Raises ``error`` naming ``where``."""
    stack, count = [(tree, 0)], 0  # shared references are counted every time (pickle's memo can build a bomb too)
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise error(f"{where} holds more than {MAX_VALUES:,} values; it is not one es-l2l wrote")
        if isinstance(node, str) and len(node) > MAX_STRING:
            raise error(f"{where} holds a {len(node):,}-character string (at most {MAX_STRING:,}); it is not one es-l2l wrote")
        if isinstance(node, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                raise error(f"{where} nests more than {MAX_DEPTH} levels deep; it is not one es-l2l wrote")
            items = [x for kv in node.items() for x in kv] if isinstance(node, dict) else node
            stack.extend((x, depth + 1) for x in items)
