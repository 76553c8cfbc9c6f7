"""The worked example: the numbers of one sample and a small batch, computed by the trainer.

In the spirit of seed 000's worked cost: every quantity the derivation names (z, a, the output
delta, each backprop term, the gradients, one optimiser step, a Hessian entry) evaluated at the
spec's initial parameters, by the *generated trainer* (never recomputed here), and labelled with
the equation key it instantiates, so a printer can put it under that equation.

Small networks are shown in full; in a large one each vector is cut to its first entries and
says so (``excerpt``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..spec import Spec
from .loader import load_trainer

#: Samples in the worked batch, and entries shown of a long vector.
BATCH = 3
EXCERPT = 6
#: Seed of the worked inputs and targets (fixed: the page is byte-stable).
DATA_SEED = 0


@dataclass(frozen=True)
class Value:
    """One quantity: its LaTeX label (made here, never from user text), its numbers.

    ``array`` is the full value (a scalar, a vector (n,), or a matrix); ``shown`` the part
    printed (``array`` itself unless it is long); ``excerpt`` says what was cut.
    """

    label: str
    array: np.ndarray
    shown: np.ndarray
    excerpt: str = ""
    rows: tuple[str, ...] = ()
    cols: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """The values that instantiate one equation: ``keys`` are the IR keys it may sit under,
    best first (the first one the derivation has wins)."""

    keys: tuple[str, ...]
    title: str
    values: tuple[Value, ...]
    note: str = ""


@dataclass(frozen=True)
class WorkedExample:
    """Inputs, targets and the steps; ``X`` (m, n_0), ``Y`` (m, n_L); sample 1 is row 0."""

    X: np.ndarray
    Y: np.ndarray
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def step(self, title: str) -> Step:
        """The step called ``title`` (for tests)."""
        for s in self.steps:
            if s.title == title:
                return s
        raise KeyError(title)


def _value(label: str, array, limit: int = EXCERPT) -> Value:
    array = np.asarray(array, dtype=np.float64)
    shown, note = array, ""
    if array.ndim == 1 and array.size > limit:
        shown = array[:limit]
        note = f"entries 1-{limit} of {array.size}"
    elif array.ndim == 2 and (array.shape[0] > limit or array.shape[1] > limit):
        shown = array[:limit, :limit]
        r, c = array.shape
        note = f"rows 1-{shown.shape[0]}, columns 1-{shown.shape[1]} of {r} x {c}"
    return Value(label, array, shown, note)


def worked_data(spec: Spec, m: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch for ``spec``: inputs in [-1, 1] with two decimals; targets the classes in
    turn (one-hot for several outputs), or standard normal with two decimals for regression."""
    rng = np.random.default_rng(DATA_SEED)
    X = np.round(rng.uniform(-1.0, 1.0, (m, spec.inputs)), 2)
    k = spec.outputs
    if spec.is_classifier:  # classes 0, 1, 2, ... in turn: every batch shows more than one
        labels = np.arange(m) % max(k, 2)
        Y = np.eye(k)[labels] if k > 1 else labels[:, None].astype(np.float64)
    else:
        Y = np.round(rng.standard_normal((m, k)), 2)
    return X, Y


def param_labels(spec: Spec) -> list[str]:
    """The LaTeX name of every parameter in the trainer's public order (W_1 row-major, b_1, ...);
    i runs over the layer's fan-in (what it reads, concatenated in ``from`` order)."""
    labels = []
    sizes = spec.sizes
    fan_ins = spec.fan_ins
    for l in range(1, len(sizes)):
        labels += [
            f"w^{{({l})}}_{{{j},{i}}}"
            for j in range(1, sizes[l] + 1)
            for i in range(1, fan_ins[l - 1] + 1)
        ]
        if spec.layers[l - 1].bias:  # a layer with bias: false has no b_l
            labels += [f"b^{{({l})}}_{{{j}}}" for j in range(1, sizes[l] + 1)]
    return labels


def worked_example(spec: Spec, X=None, Y=None) -> WorkedExample:
    """Run the generated trainer of ``spec`` (float64, its initial parameters) on a small batch.

    Args:
        spec: the model.
        X, Y: the batch (m, n_0) and (m, n_L); :func:`worked_data` when omitted.
    Returns:
        the values of each step, sample 1 for the per-sample ones and the batch for the cost,
        the gradients, the Hessian entries and the optimiser step.
    """
    if X is None or Y is None:
        X, Y = worked_data(spec)
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    m = len(X)
    model = load_trainer(spec, dtype="float64")
    L = len(spec.layers)
    steps: list[Step] = []

    steps.append(
        Step(
            ("data",),
            "the worked batch",
            (_value(r"x", X[0]), _value(r"y", Y[0]), _value(r"X", X), _value(r"Y", Y)),
            f"{m} samples; x and y are sample 1 (the first row of X and Y).",
        )
    )
    params = {k: np.asarray(v, dtype=np.float64) for k, v in model.params().items()}
    # a_l from the trainer's forward pass ([a_0, z_1, a_1, ..., z_L, a_L]; a z_l kept only in
    # a_l's buffer is overwritten there, so z_l is the product of the trainer's a_{l-1}, W, b)
    cache = model._forward(X)
    acts = [np.asarray(cache[2 * l], dtype=np.float64) for l in range(L + 1)]
    for l in range(1, L + 1):
        a = acts[l]
        z = _reads(spec, acts, l) @ params[f"W_{l}"].T + params.get(f"b_{l}", 0.0)
        steps.append(
            Step(
                (f"forward.{l}", "forward"),
                f"forward, layer {l}",
                (
                    _value(f"z^{{({l})}}", z[0]),
                    _value(f"a^{{({l})}}", a[0]),
                    _value(f"A^{{({l})}}", a),
                ),
                "sample 1 (z, a) and the batch (A, one row per sample).",
            )
        )
    steps.append(
        Step(
            ("cost",),
            "cost",
            (_value("C_x", model.loss(X[:1], Y[:1])), _value("C", model.loss(X, Y))),
            f"C_x for sample 1 (with the regulariser, if any); C over the batch of {m}.",
        )
    )
    # delta^(l) of one sample is its bias gradient: dC_x/db_j = delta_j (biases are not
    # regularised), so the trainer's gradient on sample 1 holds the delta of every layer with a
    # bias; that of a layer with bias: false is the chain rule's of the reference network
    one = model.gradient_flat(X[:1], Y[:1])
    sizes = spec.sizes
    fan_ins = [None, *spec.fan_ins]
    bias = [None] + [layer.bias for layer in spec.layers]
    deltas, offset = {}, 0
    for l in range(1, L + 1):
        offset += sizes[l] * fan_ins[l]
        if bias[l]:
            deltas[l] = one[offset : offset + sizes[l]]
            offset += sizes[l]
    if not all(bias[1:]):
        deltas.update(_reference_deltas(spec, params, X[:1], Y[:1], bias))
    steps.append(
        Step(
            ("delta.out",),
            "output delta",
            (_value(f"\\delta^{{({L})}}", deltas[L]),),
            "sample 1.",
        )
    )
    for l in range(L - 1, 0, -1):
        readers = _readers(spec, l)
        back = sum(params[f"W_{k}"][:, cols].T @ deltas[k] for k, cols in readers)
        if [k for k, _ in readers] == [l + 1] and readers[0][1] == slice(0, spec.fan_ins[l]):
            label = f"\\left((W^{{({l + 1})}})^T \\delta^{{({l + 1})}}\\right)"
            note = f"sample 1: the sum over the units of layer {l + 1}."
        else:
            label = f"\\frac{{\\partial C_x}}{{\\partial a^{{({l})}}}}"
            shown = ", ".join(str(k) for k, _ in readers)
            note = f"sample 1: the sum over the units of the layers reading it ({shown})."
        steps.append(
            Step((f"backprop.sum.{l}",), f"backprop sum, layer {l}", (_value(label, back),), note)
        )
        steps.append(
            Step(
                (f"backprop.{l}",),
                f"backprop, layer {l}",
                (_value(f"\\delta^{{({l})}}", deltas[l]),),
                "sample 1.",
            )
        )
    flat = model.gradient_flat(X, Y)
    offset = 0
    for l in range(1, L + 1):
        nw = sizes[l] * fan_ins[l]
        gW = flat[offset : offset + nw].reshape(sizes[l], fan_ins[l])
        gb = flat[offset + nw : offset + nw + sizes[l]] if bias[l] else None
        gW1 = one[offset : offset + nw].reshape(sizes[l], fan_ins[l])
        offset += nw + (sizes[l] if bias[l] else 0)
        steps.append(
            Step(
                (f"grad.W.{l}", f"grad.{l}"),
                f"gradients, layer {l}",
                (
                    _value(f"\\nabla_{{W^{{({l})}}}} C_x", gW1),
                    _value(f"\\nabla_{{W^{{({l})}}}} C", gW),
                    *((_value(f"\\nabla_{{b^{{({l})}}}} C", gb),) if bias[l] else ()),
                ),
                f"C_x: sample 1; C: the batch of {m} (the mean of the per-sample gradients).",
            )
        )
    theta = model.get_flat()
    labels = param_labels(spec)
    P = theta.size
    # one column of the Hessian by a Hessian-vector product: H e_p (works at any size)
    p = 0
    q = P - sizes[-1] * (fan_ins[L] + (1 if bias[L] else 0))  # the output layer's first weight
    e = np.zeros(P)
    e[p] = 1.0
    col = model.hvp(X, Y, e)
    steps.append(
        Step(
            ("hess.blocks", "hess.closed", "rop.grad", "hess.out"),
            "a Hessian entry",
            (
                _value(f"\\frac{{\\partial^2 C}}{{\\partial {{{labels[p]}}}^2}}", col[p]),
                _value(
                    f"\\frac{{\\partial^2 C}}{{\\partial {labels[q]}\\,\\partial {labels[p]}}}",
                    col[q],
                ),
            ),
            f"over the batch of {m}, from the trainer's Hessian-vector product H e.",
        )
    )
    stepper = load_trainer(spec, dtype="float64")
    stepper.fit(X, Y, epochs=1, batch_size=m, shuffle=False, track=False)
    after = stepper.get_flat()
    k = min(P, EXCERPT)
    table = np.stack([theta, after, after - theta], axis=1)
    steps.append(
        Step(
            _step_keys(spec),
            f"one {spec.optimizer.name} step",
            (
                Value(
                    r"\theta \to \theta'",
                    table,
                    table[:k],
                    f"parameters 1-{k} of {P}" if P > k else "",
                    rows=tuple(labels[:k]),
                    cols=(r"\theta", r"\theta'", r"\theta' - \theta"),
                ),
            ),
            f"one step on the batch of {m} from the initial parameters, learning rate "
            f"{spec.optimizer.learning_rate:g}; parameters in the trainer's public order.",
        )
    )
    return WorkedExample(X, Y, tuple(steps))


def _reads(spec: Spec, acts: list, l: int) -> np.ndarray:
    """What layer l reads: its sources' outputs concatenated in ``from`` order, or added."""
    parts = [acts[s] for s in spec.sources[l - 1]]
    if spec.layers[l - 1].merge == "add":
        return sum(parts[1:], parts[0])
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _readers(spec: Spec, l: int) -> list[tuple[int, slice]]:
    """The layers k reading layer l, each with the columns of W_k that read it."""
    return [
        (k, slice(lo, hi))
        for k in range(l + 1, len(spec.layers) + 1)
        for s, lo, hi in spec.blocks(k)
        if s == l
    ]


def _step_keys(spec: Spec) -> tuple[str, ...]:
    name = spec.optimizer.name
    return (f"opt.{name}", f"opt.{name}.theta", "newton" if name == "newton" else "opt")


def _reference_deltas(spec: Spec, params: dict, X, Y, bias: list) -> dict:
    """The deltas of the layers without bias (bias: false) for the samples of X, by the chain
    rule of the reference network at the trainer's parameters."""
    from .reference import Reference

    ref = Reference(spec)
    L = len(spec.layers)
    W = [None] + [params[f"W_{l}"] for l in range(1, L + 1)]
    b = [None] + [params.get(f"b_{l}", np.zeros(W[l].shape[0])) for l in range(1, L + 1)]
    d = ref.deltas(ref.state(W, b, np.asarray(X, np.float64), np.asarray(Y, np.float64)))
    return {l: d[l][0] for l in range(1, L + 1) if not bias[l]}
