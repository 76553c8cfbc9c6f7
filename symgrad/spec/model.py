"""The model spec: plain validated data read from ``net.yaml``. It knows nothing about SymPy.

Every validation error is a :class:`~symgrad.errors.SpecError` naming the YAML path
(``layers[1].activation``) and what was expected.

Longer than 400 lines on purpose: the models, the safe YAML loader and the cross-checks are
the one description of what a valid spec is.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import keyword
import math
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_serializer,
)

from ..errors import SpecError
from . import graph as graph_compiler
from . import registry

#: Built-in activations and losses: live views of the registry (see :mod:`.registry`), filled
#: where the calculus defines each one.
BUILTIN_ACTIVATIONS = registry.Names("activation")
BUILTIN_LOSSES = registry.Names("loss")

#: Stated limits (documented in the README and tested).
MAX_UNITS = 65_536
MAX_INPUTS = 1_000_000
MAX_LAYERS = 64
MAX_NAME_LENGTH = 64
MAX_SPEC_BYTES = 1_000_000
#: hessian() refuses above this many parameters (P * P floats); use hvp().
MAX_HESSIAN_PARAMS = 20_000
#: Newton steps use the exact Hessian up to this many parameters, conjugate gradients above.
NEWTON_EXACT_MAX = 2_000

#: A name: a letter, then letters, digits or underscores (ASCII). Always used with ``fullmatch``:
#: ``$`` would also match before a final newline (``"xor\\n"``).
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: A YAML path component written bare (others are quoted).
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Most digits in an integer of the spec (the largest accepted value, 2**32 - 1, has 10; Python
#: itself refuses to convert more than 4,300).
MAX_INT_DIGITS = 100
_INT_TAG = "tag:yaml.org,2002:int"
#: Class-like names the generated module defines itself.
_GENERATED_GLOBALS = {"DivergenceError"}
_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | {"np", "numpy"}


def _check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{what} must be a letter followed by letters, digits or underscores, got {value!r}"
        )
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} must be at most {MAX_NAME_LENGTH} characters long")
    if value in _RESERVED:
        raise ValueError(f"{what} {value!r} is a Python keyword or built-in name; choose another")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=False)
    #: the fields typed bool (they alone take YAML's true/false)
    _BOOLS: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools(cls, v: Any, info) -> Any:
        # YAML's true/false are not numbers; only the fields typed bool may take them.
        if isinstance(v, bool) and info.field_name not in cls._BOOLS:
            raise ValueError(f"expected a number or a name, got {str(v).lower()}")
        return v


class Layer(_Strict):
    """One dense layer: ``units`` outputs, an activation and its optional parameter, and
    whether its units add a bias (``bias: false``: z = W a, no bias parameters)."""

    _BOOLS: ClassVar[frozenset[str]] = frozenset({"bias"})

    units: StrictInt = Field(ge=1, le=MAX_UNITS)
    activation: str
    alpha: float | None = Field(default=None, gt=0, le=10)
    bias: StrictBool = True
    #: skip connections: the layer's name (others' ``from`` may use it), the earlier layers it
    #: reads (names, ``input``, or indices: 0 the input, i layer i; default: the layer below)
    #: and how their outputs are merged (``concat`` in the listed order, or ``add``)
    name: str | None = None
    sources: list[StrictInt | str] | None = Field(default=None, alias="from", max_length=MAX_LAYERS)
    merge: Literal["concat", "add"] = "concat"

    @field_validator("name")
    @classmethod
    def _layer_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v == "input":
            raise ValueError("'input' names the network's input; choose another")
        return _check_identifier(v, "name")

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        # ``bias`` appears only where it is false, ``name``, ``from`` and ``merge`` only where set:
        # a spec without them keeps the canonical form (and so the digests) it had before the
        # keys existed.
        data = handler(self)
        if self.bias:
            data.pop("bias", None)
        if self.name is None:
            data.pop("name", None)
        sources = data.pop("sources", None)
        if self.sources is not None:
            data["from"] = sources
        if self.merge == "concat":
            data.pop("merge", None)
        return data


class Regularization(_Strict):
    """L2 (``lambda/(2n) sum w^2``) and L1 (``lambda/n sum |w|``) penalties on the weights."""

    l2: float = Field(default=0.0, ge=0)
    l1: float = Field(default=0.0, ge=0)


class Optimizer(_Strict):
    """The optimiser and its settings; unused settings keep their defaults."""

    #: one of the registered optimisers (:func:`symgrad.optimizers.register`)
    name: str = "gd"
    learning_rate: float = Field(default=0.1, gt=0, le=1e6)
    batch_size: StrictInt | None = Field(default=None, ge=1, le=100_000_000)
    epochs: StrictInt = Field(default=100, ge=1, le=10_000_000)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0, le=1)
    rho: float = Field(default=0.9, ge=0, lt=1)
    damping: float = Field(default=1e-4, ge=0, le=1e6)
    #: L-BFGS: the number of (s, y) pairs kept, and the strong Wolfe constants c1 < c2
    history: StrictInt = Field(default=10, ge=1, le=100)
    c1: float = Field(default=1e-4, gt=0, lt=1)
    c2: float = Field(default=0.9, gt=0, lt=1)
    #: trust region: the initial and the largest radius, and the least ratio that accepts a step
    radius: float = Field(default=1.0, gt=0, le=1e6)
    max_radius: float = Field(default=1000.0, gt=0, le=1e12)
    accept: float = Field(default=0.15, ge=0, lt=0.25)

    #: fields added after the canonical form was fixed: dumped only where not at their default,
    #: so the canonical form (and the digests) of a spec that does not set them stays the same
    _OPTIONAL: ClassVar[tuple[str, ...]] = (
        "history",
        "c1",
        "c2",
        "radius",
        "max_radius",
        "accept",
    )

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        if registry.optimizer(v) is None:
            raise ValueError(f"expected one of {_one_of(registry.optimizers())}, got {v!r}")
        return v

    @field_validator("c2")
    @classmethod
    def _wolfe(cls, v: float, info) -> float:
        c1 = info.data.get("c1")
        if c1 is not None and not c1 < v:
            raise ValueError(f"the Wolfe constants need c1 < c2, got c1 = {c1} and c2 = {v}")
        return v

    @field_validator("max_radius")
    @classmethod
    def _radii(cls, v: float, info) -> float:
        radius = info.data.get("radius")
        if radius is not None and v < radius:
            raise ValueError(f"must be at least radius ({radius}), got {v}")
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        data = handler(self)
        defaults = type(self).model_fields
        for key in self._OPTIONAL:
            if getattr(self, key) == defaults[key].default:
                data.pop(key, None)
        return data


class Init(_Strict):
    """Parameter initialisation: the scheme and the seed of NumPy's generator."""

    scheme: Literal["normal", "xavier", "he"] = "normal"
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)


class Preprocess(BaseModel):
    """Input preprocessing done by the CLI; its statistics are saved with the model."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: Standardise each input feature with the training data's mean and standard deviation.
    standardize: bool = False


class GraphNode(_Strict):
    """A node of a node graph written as a mapping: its activation, the activation's parameter
    and whether it adds a bias (default: the graph's ``bias``)."""

    _BOOLS: ClassVar[frozenset[str]] = frozenset({"bias"})

    activation: str
    alpha: float | None = Field(default=None, gt=0, le=10)
    bias: StrictBool | None = None


class Graph(_Strict):
    """A network node by node (seed 002's style; :mod:`.graph` compiles it into layers):
    ``inputs`` and ``outputs`` list node numbers in the order of X's and Y's columns, ``nodes``
    maps every other node to its activation (a name, or a :class:`GraphNode` mapping), ``edges``
    lists ``[i, j]`` pairs (node i feeds node j) and ``bias`` is the nodes' default."""

    _BOOLS: ClassVar[frozenset[str]] = frozenset({"bias"})

    inputs: list[StrictInt] = Field(max_length=MAX_INPUTS)
    nodes: dict[int, str | GraphNode]
    outputs: list[StrictInt]
    edges: list[tuple[StrictInt, StrictInt]]
    bias: StrictBool = True

    @field_validator("nodes", mode="before")
    @classmethod
    def _nodes(cls, v: Any) -> Any:
        """Node numbers (integers from 1 to 10^9) -> an activation name or a node mapping,
        each refused with the node it is about."""
        if not isinstance(v, dict):
            return v  # pydantic says what a mapping should be
        out: dict[int, Any] = {}
        for key, node in v.items():
            j = key
            if isinstance(key, str) and key.isdigit() and len(key) <= 10:
                j = int(key)
            if isinstance(j, bool) or not isinstance(j, int) or not 1 <= j <= 10**9:
                raise ValueError(f"node numbers are integers from 1 to 10^9, got {key!r}")
            if isinstance(node, dict):
                try:
                    node = GraphNode.model_validate(node)
                except ValidationError as exc:
                    where, msg = _describe(exc.errors()[0])
                    raise ValueError(f"node {j}: {where}: {msg}") from None
            elif not isinstance(node, str):
                raise ValueError(
                    f"node {j}: expected an activation name or a mapping "
                    f"{{activation, alpha, bias}}, got {node!r}"
                )
            out[j] = node
        return out

    @field_validator("inputs", "outputs", "edges")
    @classmethod
    def _numbers(cls, v: list) -> list:
        for item in v:
            for j in item if isinstance(item, tuple) else (item,):
                if not 1 <= j <= 10**9:
                    raise ValueError(f"node numbers are integers from 1 to 10^9, got {j}")
        return v

    def facts(self) -> dict[int, graph_compiler.NodeFacts]:
        out = {}
        for j, node in self.nodes.items():
            if isinstance(node, str):
                node = GraphNode(activation=node)
            bias = self.bias if node.bias is None else node.bias
            out[j] = graph_compiler.NodeFacts(node.activation, node.alpha, bias)
        return out

    def compile(self) -> graph_compiler.Compiled:
        return graph_compiler.compile_graph(
            list(self.inputs), self.facts(), list(self.outputs), [tuple(e) for e in self.edges]
        )


class Spec(_Strict):
    """A validated model spec (see the README for every key)."""

    name: str
    inputs: StrictInt = Field(ge=1, le=MAX_INPUTS)
    layers: list[Layer] = Field(min_length=1, max_length=MAX_LAYERS)
    loss: str
    regularization: Regularization = Regularization()
    optimizer: Optimizer = Optimizer()
    init: Init = Init()
    dtype: Literal["float32", "float64"] = "float64"
    activations: dict[str, str] = Field(default_factory=dict)
    losses: dict[str, str] = Field(default_factory=dict)
    task: Literal["classification", "regression"] | None = None
    description: str = Field(default="", max_length=2000)
    preprocess: Preprocess = Preprocess()
    #: a node graph (seed 002's style); ``inputs`` and ``layers`` are then compiled from it
    graph: Graph | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = _check_identifier(v, "name")
        class_name = "".join(p[:1].upper() + p[1:] for p in v.split("_") if p)
        if class_name in _GENERATED_GLOBALS:
            raise ValueError(
                f"name {v!r} would shadow a name of the generated module; choose another"
            )
        if class_name in _RESERVED:  # "true" -> class True, "value_error" -> class ValueError
            raise ValueError(
                f"name {v!r} would name the generated class {class_name!r}, a Python keyword or "
                "built-in name; choose another"
            )
        return v

    @field_validator("activations", "losses")
    @classmethod
    def _custom_names(cls, v: dict[str, str], info) -> dict[str, str]:
        builtin = registry.activation if info.field_name == "activations" else registry.loss
        for key, text in v.items():
            _check_identifier(key, f"custom name {key!r}:")
            if builtin(key) is not None:
                raise ValueError(f"{key!r} is a built-in name; choose another")
            if not isinstance(text, str):
                raise ValueError(f"{key!r} must be an expression string")
        return v

    # -- derived facts -------------------------------------------------------------------
    @property
    def sizes(self) -> list[int]:
        """Widths from the input to the output: ``[inputs, units_1, ..., units_L]``."""
        return [self.inputs] + [layer.units for layer in self.layers]

    @property
    def outputs(self) -> int:
        return self.layers[-1].units

    @property
    def class_name(self) -> str:
        """The generated class name: ``xor`` gives ``Xor``, ``seed_002`` gives ``Seed002``."""
        parts = [p for p in self.name.split("_") if p]
        return "".join(p[:1].upper() + p[1:] for p in parts) or "Model"

    @property
    def is_classifier(self) -> bool:
        if self.task is not None:
            return self.task == "classification"
        out = registry.activation(self.layers[-1].activation)
        loss = registry.loss(self.loss)
        return bool((loss and loss.classifier) or (out and out.classifier))

    @property
    def n_params(self) -> int:
        return sum(
            layer.units * fan_in + (layer.units if layer.bias else 0)
            for layer, fan_in in zip(self.layers, self.fan_ins, strict=True)
        )

    # -- skip connections ----------------------------------------------------------------
    @property
    def sources(self) -> list[tuple[int, ...]]:
        """What each layer reads: ``sources[l - 1]`` holds the indices (0 the input, i layer i)
        of layer l's sources, in the order ``from`` lists them (default: ``(l - 1,)``)."""
        names = {"input": 0} | {
            layer.name: i for i, layer in enumerate(self.layers, 1) if layer.name is not None
        }
        out = []
        for l, layer in enumerate(self.layers, 1):
            if layer.sources is None:
                out.append((l - 1,))
            else:
                out.append(
                    tuple(names.get(s, -1) if isinstance(s, str) else s for s in layer.sources)
                )
        return out

    @property
    def fan_ins(self) -> list[int]:
        """Each layer's fan-in: the sum of its sources' widths (``concat``), or their common
        width (``add``)."""
        sizes = self.sizes
        return [
            sizes[src[0]] if layer.merge == "add" else sum(sizes[s] for s in src)
            for layer, src in zip(self.layers, self.sources, strict=True)
        ]

    @property
    def is_graph(self) -> bool:
        """Whether some layer reads anything but the layer below (a skip connection)."""
        return any(src != (l - 1,) for l, src in enumerate(self.sources, 1))

    def blocks(self, l: int) -> list[tuple[int, int, int]]:
        """The columns of W_l that read each of layer l's sources, in ``from`` order:
        ``(source, lo, hi)``; a concatenation gives each source its own block, ``add`` the
        whole fan-in to every source."""
        out, lo = [], 0
        for s in self.sources[l - 1]:
            if self.layers[l - 1].merge == "add":
                out.append((s, 0, self.fan_ins[l - 1]))
            else:
                out.append((s, lo, lo + self.sizes[s]))
                lo += self.sizes[s]
        return out

    # -- node graphs ---------------------------------------------------------------------
    @property
    def node_groups(self) -> tuple[tuple[int, ...], ...] | None:
        """For a node graph, its node numbers per layer (input nodes first, outputs last)."""
        return None if self.graph is None else self.graph.compile().groups

    @property
    def node_numbers(self) -> list[list[int]]:
        """Node numbers per layer, inputs first: a node graph's own, else seed 002's count from
        the inputs up (``sizes [1, 2, 2, 1]`` give ``[[1], [2, 3], [4, 5], [6]]``)."""
        groups = self.node_groups
        if groups is not None:
            return [list(g) for g in groups]
        out, k = [], 1
        for n in self.sizes:
            out.append(list(range(k, k + n)))
            k += n
        return out

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        # a node graph dumps the graph, not the layers compiled from it; a layer spec keeps the
        # canonical form (and so the digest) it had before ``graph`` existed
        data = handler(self)
        if self.graph is None:
            data.pop("graph", None)
        else:
            data.pop("inputs", None)
            data.pop("layers", None)
            graph = data["graph"]
            graph["nodes"] = {
                int(j): (v if isinstance(v, str) else {k: x for k, x in v.items() if x is not None})
                for j, v in sorted(graph["nodes"].items(), key=lambda kv: int(kv[0]))
            }
            graph["edges"] = [list(e) for e in graph["edges"]]
        return data

    def canonical(self) -> dict[str, Any]:
        """The spec as plain data with every default filled in (stable key order)."""
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """A SHA-256 of the canonical spec: keys generated trainers and checkpoints."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def model_identity(self) -> dict[str, Any]:
        """What defines the model: the function it computes, its cost and its parameter file.

        The input width, the layers (units, activation, alpha), the custom expressions the
        layers and the loss use, the loss, the dtype and the task. Not the name, description,
        optimiser, epochs, regulariser, initialisation or preprocessing: those say how the
        parameters were trained, so changing them keeps a saved model usable.
        """
        used = {layer.activation for layer in self.layers}
        return {
            "inputs": self.inputs,
            "layers": [layer.model_dump(mode="json") for layer in self.layers],
            "activations": {k: v for k, v in sorted(self.activations.items()) if k in used},
            "loss": self.loss,
            "losses": {k: v for k, v in self.losses.items() if k == self.loss},
            "dtype": self.dtype,
            "task": "classification" if self.is_classifier else "regression",
        }

    def model_digest(self) -> str:
        """A SHA-256 of :meth:`model_identity`: saved models and checkpoints carry it."""
        text = json.dumps(self.model_identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# Loading


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses aliases (no billion-laughs) and duplicate keys."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError("", f"YAML aliases are not allowed (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def _check_nodes(node: yaml.Node, path: str = "", depth: int = 0) -> None:
    """Walk the composed YAML: refuse non-scalar and duplicate keys, naming the full path."""
    if depth > 100:
        raise SpecError(path, "nested too deeply (more than 100 levels)")
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(path, f"keys must be plain strings (line {line})")
            key = key_node.value
            child = f"{path}.{_format_loc((key,))}" if path else _format_loc((key,))
            _check_int(key_node, child)
            if key in seen:
                raise SpecError(child, f"duplicate key (line {line})")
            seen.add(key)
            _check_nodes(value, child, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_nodes(item, f"{path}[{i}]", depth + 1)
    else:
        _check_int(node, path)


def _check_int(node: yaml.Node, path: str) -> None:
    """Refuse an integer too long to be a spec's number (before Python refuses to convert it)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
        digits = sum(ch.isdigit() for ch in node.value)
        if digits > MAX_INT_DIGITS:
            raise SpecError(
                path,
                f"an integer of {digits} digits (line {node.start_mark.line + 1}); "
                f"at most {MAX_INT_DIGITS} digits are accepted",
            )


def _format_loc(loc: tuple) -> str:
    """``('layers', 1, 'units')`` -> ``layers[1].units``; odd keys are quoted (one line)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if len(text) > 60 or not _BARE_KEY.fullmatch(text):
                text = ascii(text if len(text) <= 60 else text[:57] + "...")
            out += ("." if out else "") + text
    return out


def _describe(err: dict) -> tuple[str, str]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    kind = err["type"]
    path = _format_loc(loc)
    msg = err["msg"]
    if kind == "missing":
        msg = "required key is missing"
    elif kind == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif kind in ("too_short", "too_long", "list_type", "dict_type", "string_type"):
        msg = msg[:1].lower() + msg[1:]
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        msg = f"expected one of {expected}, got {err.get('input')!r}"
    elif kind in ("finite_number",):
        msg = "expected a finite number, got NaN or infinity"
    else:
        got = err.get("input")
        if not isinstance(got, (dict, list)):
            msg = f"{msg[:1].lower()}{msg[1:]}, got {got!r}"
    return path, msg


def _known(names) -> str:
    return ", ".join(names)


def _one_of(names) -> str:
    """``'a', 'b' or 'c'`` (as pydantic lists a Literal's choices)."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _and(names) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _graph_checks(spec: Spec) -> None:
    """Skip connections: names unique, every ``from`` entry an earlier layer, ``add`` on equal
    widths, and every layer but the output read by a later one (no dangling layer)."""
    names: dict[str, int] = {}
    for i, layer in enumerate(spec.layers):
        if layer.name is None:
            continue
        if layer.name in names:
            raise SpecError(
                f"layers[{i}].name",
                f"duplicate layer name {layer.name!r} (layers[{names[layer.name]}] has it)",
            )
        names[layer.name] = i
    known = ["input", *names]
    sizes = spec.sizes
    read = set()
    for i, layer in enumerate(spec.layers):
        if layer.sources is None:
            read.add(i)
            continue
        if not layer.sources:
            raise SpecError(f"layers[{i}].from", "expected at least one layer to read")
        seen: set[int] = set()
        resolved: list[tuple] = []
        for k, src in enumerate(layer.sources):
            path = f"layers[{i}].from[{k}]"
            if isinstance(src, str):
                if src != "input" and src not in names:
                    raise SpecError(path, f"unknown layer {src!r}; known: {_known(known)}")
                index = 0 if src == "input" else names[src] + 1
            else:
                index = src
                if index < 0:
                    raise SpecError(path, f"expected 0 (the input) or a layer number, got {src}")
            if index == i + 1:
                raise SpecError(path, f"layer {i + 1} cannot read itself")
            if index > i + 1:
                raise SpecError(
                    path,
                    f"layer {i + 1} cannot read a later layer ({src!r} is layer {index}); "
                    "a layer reads the input or earlier layers only",
                )
            if index in seen:
                raise SpecError(path, f"{src!r} is listed twice")
            seen.add(index)
            resolved.append((src, index))
            read.add(index)
        if layer.merge == "add":
            widths = {sizes[s] for s in seen}
            if len(widths) > 1:
                shown = ", ".join(f"{src!r} has {sizes[index]}" for src, index in resolved)
                raise SpecError(f"layers[{i}].merge", f"add needs sources of equal widths: {shown}")
    if 0 not in read:
        raise SpecError("inputs", "no layer reads the input (every 'from' leaves it out)")
    for i, layer in enumerate(spec.layers[:-1]):
        if i + 1 not in read:
            shown = f"layer {i + 1}" + (f" ({layer.name!r})" if layer.name else "")
            raise SpecError(
                f"layers[{i}]",
                f"dangling: no later layer reads {shown}; only the output layer may be unread",
            )


def _cross_checks(spec: Spec) -> None:
    """Rules that involve more than one key; the facts of each name come from the registry."""
    _graph_checks(spec)
    custom_acts = set(spec.activations)
    last = len(spec.layers) - 1
    for i, layer in enumerate(spec.layers):
        act = layer.activation
        path = f"layers[{i}].activation"
        facts = registry.activation(act)
        if facts is None and act not in custom_acts:
            raise SpecError(
                path,
                f"unknown activation {act!r}; known: "
                + _known(list(registry.activations()) + sorted(custom_acts)),
            )
        if facts is not None and facts.output_only and i != last:
            raise SpecError(path, f"{act} is allowed on the output layer only")
        for key in registry.PARAMETERS:
            if getattr(layer, key) is not None and (facts is None or facts.parameter != key):
                takers = [
                    n for n in registry.activations() if registry.activation(n).parameter == key
                ]
                raise SpecError(
                    f"layers[{i}].{key}",
                    f"{key} applies to {_and(takers) if takers else 'no activation'} only, "
                    f"not {act!r}",
                )
    loss = registry.loss(spec.loss)
    if loss is None and spec.loss not in spec.losses:
        raise SpecError(
            "loss",
            f"unknown loss {spec.loss!r}; known: "
            + _known(list(registry.losses()) + sorted(spec.losses)),
        )
    out = spec.layers[-1]
    out_facts = registry.activation(out.activation)
    if out_facts is not None and out_facts.needs_loss and spec.loss not in out_facts.needs_loss:
        raise SpecError(
            "loss",
            f"a {out.activation} output layer needs loss {' or '.join(out_facts.needs_loss)}",
        )
    for i, layer in enumerate(spec.layers):
        facts = registry.activation(layer.activation)
        if facts is not None and layer.units < facts.min_units:
            raise SpecError(
                f"layers[{i}].units", f"{layer.activation} needs at least {facts.min_units} units"
            )
    if loss is not None and (loss.outputs or loss.custom_outputs):
        custom_ok = loss.custom_outputs and out.activation in custom_acts
        if out.activation not in loss.outputs and not custom_ok:
            raise SpecError(
                "loss", f"{spec.loss} " + loss.output_error.format(activation=out.activation)
            )


def _long_int(value: Any) -> bool:
    """An integer with more than :data:`MAX_INT_DIGITS` digits (too long even to print)."""
    return isinstance(value, int) and abs(value) >= 10**MAX_INT_DIGITS


def _check_limits(raw: Any) -> None:
    """Refuse numbers that are not finite (NaN, inf) or absurdly long anywhere in the document."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, float) and not math.isfinite(node):
            raise SpecError(path, f"expected a finite number, got {node!r}")
        if _long_int(node) and not isinstance(node, bool):
            raise SpecError(
                path, f"an integer of more than {MAX_INT_DIGITS} digits is not accepted"
            )
        if isinstance(node, dict):
            for k, v in node.items():
                key = "<a long integer>" if _long_int(k) else str(k)
                walk(v, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(raw, "")


def spec_from_dict(raw: Any) -> Spec:
    """Validate plain data (as read from YAML) into a :class:`Spec`."""
    if not isinstance(raw, dict):
        names = {bool: "true or false", int: "a number", float: "a number", str: "a string"}
        kind = "empty document" if raw is None else names.get(type(raw), f"a {type(raw).__name__}")
        raise SpecError("", f"the spec must be a mapping of keys (name, inputs, ...), got {kind}")
    for key in raw:
        if not isinstance(key, str):
            shown = "<a long integer>" if _long_int(key) else str(key)
            raise SpecError(shown, "keys must be strings")
    _check_limits(raw)
    groups = None
    if "graph" in raw:
        raw, groups = _compile_graph(raw)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        path, msg = _describe(exc.errors()[0])
        raise _on_nodes(SpecError(path, msg), groups) from None
    try:
        _cross_checks(spec)
    except SpecError as exc:
        raise _on_nodes(exc, groups) from None
    return spec


def _compile_graph(raw: dict) -> tuple[dict, tuple[tuple[int, ...], ...]]:
    """``raw`` with ``inputs`` and ``layers`` compiled from its ``graph`` (see :mod:`.graph`)."""
    for key in ("inputs", "layers"):
        if key in raw:
            raise SpecError(key, f"a spec with a graph compiles its {key} from it; remove {key}")
    if not isinstance(raw["graph"], dict):
        raise SpecError("graph", "expected a mapping {inputs, nodes, outputs, edges, bias}")
    try:
        graph = Graph.model_validate(raw["graph"])
    except ValidationError as exc:
        path, msg = _describe(exc.errors()[0])
        raise SpecError(f"graph.{path}" if path else "graph", msg) from None
    compiled = graph.compile()
    return (
        {**raw, "inputs": len(graph.inputs), "layers": [dict(layer) for layer in compiled.layers]},
        compiled.groups,
    )


def _on_nodes(exc: SpecError, groups: tuple[tuple[int, ...], ...] | None) -> SpecError:
    """An error about compiled layer i named by the graph's key: ``graph.nodes.J`` (J the
    layer's first node) for ``layers[i]...``."""
    match = re.fullmatch(r"layers\[(\d+)\](\..*)?", exc.path)
    if groups is None or match is None:
        return exc
    nodes = groups[int(match.group(1)) + 1]
    what = f"node {nodes[0]}" if len(nodes) == 1 else f"nodes {', '.join(map(str, nodes))}"
    return SpecError(f"graph.nodes.{nodes[0]}", f"{exc.message} ({what})")


def load_spec(source: str | os.PathLike[str] | dict) -> Spec:
    """Load and validate a spec from a YAML file path, a YAML string, or a dict.

    Raises:
        SpecError: with the YAML path and what was expected.
    """
    if isinstance(source, dict):
        return spec_from_dict(source)
    text: str
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))
    ):
        path = Path(source)
        try:
            # Read at most one byte past the limit: the size a special file (/dev/zero, a pipe)
            # reports says nothing about how much it holds.
            with open(path, "rb") as fh:
                data = fh.read(MAX_SPEC_BYTES + 1)
            if len(data) > MAX_SPEC_BYTES:
                raise SpecError("", f"{path}: the spec is larger than {MAX_SPEC_BYTES} bytes")
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise SpecError("", f"{path}: no such file") from None
        except IsADirectoryError:
            raise SpecError("", f"{path}: is a directory, expected a YAML file") from None
        except UnicodeDecodeError:
            raise SpecError("", f"{path}: not UTF-8 text") from None
        except OSError as exc:
            raise SpecError("", f"{path}: cannot read ({exc.strerror})") from None
    else:
        text = str(source)
    return spec_from_dict(parse_yaml(text))


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely (no tags, no aliases, no duplicate keys)."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError("", f"the spec is larger than {MAX_SPEC_BYTES} bytes")
    try:
        node = yaml.compose(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
        if node is None:
            return None
        _check_nodes(node)
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
    except SpecError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError("", f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise SpecError("", "invalid YAML: nested too deeply") from None
