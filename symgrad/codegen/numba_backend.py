"""The Numba backend: the NumPy trainer plus one compiled epoch function that ``fit`` uses.

The module is the NumPy module (everything but training is shared) followed by a section that
defines ``_epoch``: the batch loop of a run in one ``@numba.njit(cache=True)`` function, matrix
products through ``np.dot`` (BLAS), and the element-wise chain of each layer (activation, output
delta, f', the optimiser's update) as fused loops whose bodies are printed by
:class:`NumbaPrinter` from the same kernels the NumPy trainer prints. The class's
``_make_runner`` is replaced by one that calls ``_epoch``; without Numba at import time the
module is the NumPy trainer unchanged.

Supported: dense chains with element-wise activations (no softmax), optimisers gd, sgd,
momentum and adam, no regulariser. Anything else gets the NumPy module and a one-line notice.
"""

from __future__ import annotations

import sympy as sp

from .. import optimizers
from ..derivation import derive
from ..optimizers.base import Update, eta, g, t, theta
from ..printers.numpy import NumPyPrinter, stable_rewrite
from ..printers.pylayout import layout
from ..spec import Spec, load_spec
from . import kernels
from .generate import check_compiles, render
from .step import _hyper_values

#: optimisers the compiled epoch lays out
SUPPORTED_OPTIMIZERS = ("gd", "sgd", "momentum", "adam")
#: the per-element symbols a layer's kernels may read
_UNIT_SYMBOLS = {"z", "a", "y"}


class NumbaPrinter(NumPyPrinter):
    """Scalar expressions for the body of a compiled loop: ``np.`` scalar functions (Numba
    compiles them), a Piecewise as a conditional expression (only the chosen branch runs)."""

    def _print_Piecewise(self, expr):
        parts = [(self._print(e), self._print(c)) for e, c in expr.args]
        code = parts[-1][0] if expr.args[-1][1] == sp.true else "np.nan"
        for e, c in reversed(parts[:-1] if expr.args[-1][1] == sp.true else parts):
            code = f"(({e}) if ({c}) else ({code}))"
        return code

    def _print_StrictLessThan(self, expr):
        return "(%s < %s)" % (self._print(expr.lhs), self._print(expr.rhs))

    def _print_GreaterThan(self, expr):
        return "(%s >= %s)" % (self._print(expr.lhs), self._print(expr.rhs))

    def _print_LessThan(self, expr):
        return "(%s <= %s)" % (self._print(expr.lhs), self._print(expr.rhs))

    def _print_sign(self, expr):
        return "np.sign(%s)" % self._print(expr.args[0])

    def scalar(self, expr: sp.Expr) -> str:
        """``expr`` after the stable rewrites, on one line."""
        return " ".join(self.doprint(stable_rewrite(expr)).split())


class Unsupported(Exception):
    """The spec needs something the compiled epoch does not lay out (the message says what)."""


def _unit_kernel(d, key: str) -> sp.Expr:
    expr = kernels.kernel(d, key)
    if expr is None:
        raise Unsupported(f"no kernel {key!r}")
    if expr.has(sp.Function("logsumexp")) or "logsumexp" in str(expr):
        raise Unsupported(f"{key} needs the softmax's logsumexp")
    extra = {s.name for s in expr.free_symbols} - _UNIT_SYMBOLS
    if extra:
        raise Unsupported(f"{key} reads {sorted(extra)}")
    return expr


def _check(spec: Spec) -> None:
    if spec.optimizer.name not in SUPPORTED_OPTIMIZERS:
        raise Unsupported(f"optimizer {spec.optimizer.name!r} (supported: gd, sgd, momentum, adam)")
    if spec.regularization.l2 or spec.regularization.l1:
        raise Unsupported("a regulariser (l2/l1)")
    for layer in spec.layers:
        if layer.activation == "softmax":
            raise Unsupported("a softmax layer")
        if not layer.bias:
            raise Unsupported("a layer without bias (bias: false)")


def _epoch_source(d, context: dict) -> str:
    spec = d.spec
    L = d.depth
    sizes = spec.sizes
    p = NumbaPrinter({"z": "z", "a": "a", "y": "y"})
    opt = optimizers.get(spec.optimizer.name)
    step = context["step"]
    kept = context["out"].track_names.split(", ")
    layout_ = context["layout"]
    state = [name for name, _ in step.state]
    args = ["store", "grad", *state, "X", "Y_all", "kept_z", "kept_a", "order", "shuffled"]
    args += ["track", "start", "count", "m", "lr", "t"]
    o = [f"def _epoch_py({', '.join(args)}):"]
    o.append(
        '    """A run of ``count`` batches of m (see ``_make_runner``); returns the step count."""'
    )
    o.append(f"    scale = {'lr / m' if step.fold else '1.0 / m'}")
    for l in range(1, L + 1):
        units, fan_in, w0, _ = layout_[l - 1]
        lo = w0
        if l == 1:
            o.append(f"    W_1 = store[{lo}:{lo + units * fan_in}].reshape(({units}, {fan_in}))")
            o.append(f"    b_1 = store[{lo + units * fan_in}:{lo + units * (fan_in + 1)}]")
            o.append(f"    gW_1 = grad[{lo}:{lo + units * fan_in}].reshape(({units}, {fan_in}))")
            o.append(f"    gb_1 = grad[{lo + units * fan_in}:{lo + units * (fan_in + 1)}]")
        else:
            hi = lo + units * (fan_in + 1)
            o.append(f"    Wb_{l} = store[{lo}:{hi}].reshape(({units}, {fan_in + 1}))")
            o.append(f"    gWb_{l} = grad[{lo}:{hi}].reshape(({units}, {fan_in + 1}))")
        cols = units + 1 if l < L else units
        o.append(f"    Z_{l} = np.empty((m, {units}), dtype=store.dtype)")
        o.append(f"    A_{l} = np.ones((m, {cols}), dtype=store.dtype)")
        o.append(f"    D_{l} = np.empty((m, {units}), dtype=store.dtype)")
    o.append("    for i in range(count):")
    o.append("        lo = start + i * m")
    o.append("        if shuffled:")
    o.append("            idx = order[lo : lo + m]")
    o.append("            x = X[idx]")
    o.append("            Y = Y_all[idx]")
    o.append("        else:")
    o.append("            x = X[lo : lo + m]")
    o.append("            Y = Y_all[lo : lo + m]")
    for l in range(1, L + 1):
        units = sizes[l]
        f = p.scalar(_unit_kernel(d, f"act.{l}.f"))
        o.append(f"        # act.{l}.f: z_{l} = a_{l - 1} W_{l}^T + b_{l}, a_{l} = f_{l}(z_{l})")
        if l == 1:
            o.append("        P = np.dot(x, W_1.T)")
        else:
            o.append(f"        P = np.dot(A_{l - 1}, Wb_{l}.T)")
        o.append("        for r in range(m):")
        o.append(f"            for j in range({units}):")
        o.append("                z = P[r, j]" + (" + b_1[j]" if l == 1 else ""))
        o.append(f"                Z_{l}[r, j] = z")
        o.append(f"                A_{l}[r, j] = {f}")
    o.append("        if track:")
    if "z_" + str(L) in kept:
        o.append(f"            kept_z[lo : lo + m] = Z_{L}")
    o.append(f"            kept_a[lo : lo + m] = A_{L}")
    delta = p.scalar(_unit_kernel(d, "delta.out"))
    o.append("        # delta.out, times scale")
    o.append("        for r in range(m):")
    o.append(f"            for j in range({sizes[L]}):")
    o.append(f"                z = Z_{L}[r, j]")
    o.append(f"                a = A_{L}[r, j]")
    o.append("                y = Y[r, j]")
    o.append(f"                D_{L}[r, j] = ({delta}) * scale")
    for l in range(L, 0, -1):
        if l == 1:
            o.append("        gW_1[:, :] = np.dot(D_1.T, x)")
            o.append(f"        for j in range({sizes[1]}):")
            o.append("            s = 0.0")
            o.append("            for r in range(m):")
            o.append("                s += D_1[r, j]")
            o.append("            gb_1[j] = s")
        else:
            o.append(f"        gWb_{l}[:, :] = np.dot(D_{l}.T, A_{l - 1})")
            df = p.scalar(_unit_kernel(d, f"act.{l - 1}.df"))
            o.append(f"        # act.{l - 1}.df: delta_{l - 1} = f'_{l - 1} * (delta_{l} W_{l})")
            o.append(f"        P = np.dot(D_{l}, Wb_{l})")
            o.append("        for r in range(m):")
            o.append(f"            for j in range({sizes[l - 1]}):")
            o.append(f"                z = Z_{l - 1}[r, j]")
            o.append(f"                a = A_{l - 1}[r, j]")
            o.append(f"                D_{l - 1}[r, j] = P[r, j] * ({df})")
    # the optimiser's update, fused over the parameters
    values = _hyper_values(opt, spec.optimizer)
    updates = [Update(up.target, up.value.subs(values)) for up in opt.updates]
    if step.fold:
        updates = [Update(up.target, up.value.subs(g, g / eta)) for up in updates]
    names = {theta.name: "th", g.name: "gk", eta.name: "lr", t.name: "t"}
    for sym in opt.state:
        names[sym.name] = f"s_{opt.key(sym)}"
    q = NumbaPrinter(names)
    if step.counts_steps:
        o.append("        t += 1")
    o.append(f"        # opt.{opt.name}: the update, one fused loop over the parameters")
    o.append("        for k in range(store.shape[0]):")
    o.append("            th = store[k]")
    o.append("            gk = grad[k]")
    for name, key in step.state:
        o.append(f"            s_{key} = {name}[k]")
    for up in updates:
        o.append(f"            {names[up.target.name]} = {q.scalar(up.value)}")
    o.append("            store[k] = th")
    for name, key in step.state:
        o.append(f"            {name}[k] = s_{key}")
    o.append("    return t")
    return "\n".join(o) + "\n"


_TAIL = '''

# -- the compiled epoch (symgrad --backend numba) ------------------------------------------
try:
    import numba as _numba
except ImportError:  # the NumPy trainer as it is
    _numba = None

{epoch}

# cached on disk beside this file; a module that is not in sys.modules (exec'd by hand) cannot
# be found again by Numba's cache, so it compiles in memory instead
_CACHE = getattr(__import__("sys").modules.get(__name__), "__dict__", None) is globals()
_epoch = _numba.njit(cache=_CACHE)(_epoch_py) if _numba is not None else None
_NO_ROWS = np.empty((0, {n_out}))
_NO_ORDER = np.empty(0, dtype=np.int64)


def _compiled_make_runner(self, m, n, track):
    """Train on batches of m of n samples in one compiled call per run (``_epoch``)."""
    store, grad = self._store, self._scratch["grad"]
    state = self._opt_state
    vectors = [state[key] for key in {state_keys}]
    lr = self.learning_rate

    def run(X, Y_all, kept, order, start, count):
        kz = ka = _NO_ROWS.astype(store.dtype)
        if kept:
            {kept_unpack}
        shuffled = order is not None
        o = order if shuffled else _NO_ORDER
        t = _epoch(
            store, grad, *vectors, X, Y_all, kz, ka, o, shuffled, bool(kept), start, count, m, lr,
            state["t"],
        )
        state["t"] = int(t)

    return run


if _epoch is not None:
    {cls}._make_runner = _compiled_make_runner
'''


def numba_source(spec: Spec | str, spec_file: str | None = None) -> tuple[str, str | None]:
    """The Numba trainer module of ``spec`` and a one-line notice (None when compiled)."""
    if not isinstance(spec, Spec):
        spec_file = spec_file or str(spec)
        spec = load_spec(spec)
    spec_file = spec_file or f"{spec.name}.yaml"
    d = derive(spec)
    source, context = render(d, spec_file)
    try:
        import numba  # noqa: F401
    except ImportError:
        return source, "numba is not installed: wrote the NumPy trainer"
    try:
        _check(spec)
        epoch = _epoch_source(d, context)
    except Unsupported as exc:
        return source, f"the numba backend does not support {exc}: wrote the NumPy trainer"
    kept = context["out"].track_names.split(", ")
    unpack = "(ka,) = kept" if len(kept) == 1 else "kz, ka = kept"
    tail = _TAIL.format(
        epoch=epoch,
        n_out=spec.sizes[-1],
        state_keys=list(context["step"].state_keys),
        kept_unpack=unpack,
        cls=spec.class_name,
    )
    full = source + tail
    check_compiles(full, spec.name)
    return layout(full), None


__all__ = ["SUPPORTED_OPTIMIZERS", "NumbaPrinter", "Unsupported", "numba_source"]
