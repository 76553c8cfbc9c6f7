"""The Numba backend: the NumPy trainer plus one compiled epoch function that ``fit`` uses.

The module is the NumPy module (everything but training is shared) followed by a section that
defines ``_epoch``: the batch loop of a run in one ``@numba.njit(cache=True)`` function, matrix
products through ``_gemm`` (the ``cblas_?gemm`` of the OpenBLAS NumPy's wheel ships, called by
name; Numba's ``np.dot`` where NumPy has another BLAS), and the element-wise chain of each layer
(activation, output delta, f', the optimiser's update) as fused loops whose bodies are printed by
:class:`NumbaPrinter` from the same kernels the NumPy trainer prints. The class's
``_make_runner`` is replaced by one that calls ``_epoch``; without Numba at import time the
module is the NumPy trainer unchanged.

Why NumPy's BLAS: Numba's ``np.dot`` calls SciPy's, a second OpenBLAS with its own thread pool.
Its idle threads spin while the NumPy code around the trainer runs, and NumPy's while the trainer
runs: on two cores, interleaved epochs of the two took up to twice their time.

An affine step ``theta <- beta theta + alpha g`` with constant coefficients (gd and SGD without a
penalty, read off the optimiser's SymPy update by :func:`_affine_update`) is applied by the
weight gradient's own product (``C <- alpha A B + beta C``, C the weights), after the backprop
product has read them: no gradient is written and no pass over the parameters is left but b_1's.

Supported: dense chains (any layer with or without bias) with element-wise activations and a
softmax output layer (its row's logsumexp shifted by the row maximum, then the kernel
``exp(z - logsumexp(z))``), every registered first-order optimiser whose update is element-wise
(gd, sgd, momentum, nesterov, adam, rmsprop, adagrad), the L2 penalty (its gradient kernel) and
the L1 one (the ``reg.prox`` soft threshold, then the optimiser's ``after_prox``), all printed
in the one fused loop over the parameters from the kernels :mod:`.step` prints for NumPy.
Optimisers that need curvature (Newton) train on the NumPy path. Anything unsupported gets the
NumPy module and a one-line notice.
"""

from __future__ import annotations

import sympy as sp

from .. import optimizers
from ..calculus import logsumexp
from ..derivation import derive
from ..derivation import notation as nt
from ..optimizers.base import Update, eta, g, t, theta, u
from ..printers.matrix_numpy import text
from ..printers.numpy import NumPyPrinter, stable_rewrite
from ..printers.pylayout import layout
from ..spec import Spec, load_spec
from . import kernels
from .generate import _environment, check_compiles, render
from .layers.dense import AUGMENTED
from .products import SCALE, LoweringError, Products
from .regulariser import smooth_gradient
from .step import _hyper_values

#: the module's compiled section (the BLAS binding, the epoch, the runner), after the NumPy module
SECTION = "numba/epoch.py.jinja"


#: optimisers the compiled epoch lays out: every registered first-order one with an
#: element-wise update (Newton trains on the NumPy trainer's path)
def supported_optimizers() -> tuple[str, ...]:
    out = []
    for name in optimizers.names():
        try:
            _check_optimizer(name)
        except Unsupported:
            continue
        out.append(name)
    return tuple(out)


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

    def _print_Pow(self, expr, rational=False):
        # a reciprocal as a division (``x ** -1.0`` would call pow in the compiled loop)
        if expr.exp == -1:
            return "1 / (%s)" % self._print(expr.base)
        return super()._print_Pow(expr, rational=rational)

    def _print_sign(self, expr):
        return "np.sign(%s)" % self._print(expr.args[0])

    def _print_Max(self, expr):
        return self._fold("max", expr.args)

    def _print_Min(self, expr):
        return self._fold("min", expr.args)

    def _fold(self, name, args):
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"{name}({code}, {self._print(arg)})"
        return code

    def scalar(self, expr: sp.Expr) -> str:
        """``expr`` after the stable rewrites but the sigmoid's (``1/(1 + e^{-x})`` is exact at
        both ends in compiled code: e^{-x} = inf gives 0, without NumPy's overflow warning; and
        a scalar exp costs a fifth of a scalar tanh without SIMD maths), on one line."""
        return " ".join(self.doprint(stable_rewrite(expr, sigmoid=False)).split())


class Unsupported(Exception):
    """The spec needs something the compiled epoch does not lay out (the message says what)."""


def _unit_kernel(d, key: str, vector: bool = False) -> sp.Expr:
    """The per-element kernel ``key``; only a softmax layer's (``vector``) reads its row's
    logsumexp."""
    expr = kernels.kernel(d, key)
    if expr is None:
        raise Unsupported(f"no kernel {key!r}")
    if not vector and expr.has(logsumexp):
        raise Unsupported(f"{key} needs the softmax's logsumexp")
    extra = {s.name for s in expr.free_symbols} - _UNIT_SYMBOLS
    if extra:
        raise Unsupported(f"{key} reads {sorted(extra)}")
    return expr


def _check_optimizer(name: str) -> None:
    """First-order optimisers whose update is element-wise (it reads one coordinate of theta,
    g and the state vectors, the step count and hyperparameters): a fused loop applies them."""
    opt = optimizers.get(name)
    if not opt.first_order:
        raise Unsupported(f"optimizer {name!r} (it needs curvature: it trains on the NumPy path)")
    allowed = {theta, g, eta, t, u, *opt.state, *opt.hyper}
    for up in (*opt.updates, *opt.after_prox):
        extra = up.value.free_symbols - allowed
        if extra or up.target not in {theta, *opt.state}:
            raise Unsupported(f"optimizer {name!r} (its update is not element-wise)")


def _check(spec: Spec) -> None:
    if spec.is_graph:
        raise Unsupported("skip connections (from/merge)")
    _check_optimizer(spec.optimizer.name)
    for layer in spec.layers[:-1]:
        if layer.activation == "softmax":
            raise Unsupported("a softmax hidden layer")


def _scalar_update(opt, step, spec, d) -> list[str]:
    """The body of the fused parameter loop: the regulariser's gradient, the optimiser's
    update, the L1 soft threshold and ``after_prox``, each printed from its SymPy kernel (as
    :func:`.step.step_code` prints them over vectors), over one element ``k``."""
    values = _hyper_values(opt, spec.optimizer)
    updates = [Update(up.target, up.value.subs(values)) for up in opt.updates]
    if step.fold:
        updates = [Update(up.target, up.value.subs(g, g / eta)) for up in updates]
    names = {theta.name: "th", g.name: "gk", eta.name: "lr", t.name: "t", u.name: "uk"}
    names.update({"lambda_2": "l2k", "lambda_1": "l1k", "N": "n"})
    for sym in opt.state:
        names[sym.name] = f"s_{opt.key(sym)}"
    q = NumbaPrinter(names)
    o = ["th = store[k]", "gk = grad[k]"]
    o += [f"s_{key} = {name}[k]" for name, key in step.state]
    if step.l2:
        reg = smooth_gradient(d).subs(kernels.w, theta)
        if step.fold:
            reg = eta * reg
        o.append("l2k = wmask[k] * l2")
        o.append(f"# reg.grad: the regulariser's gradient{' (times eta)' if step.fold else ''}")
        o.append(f"gk = {q.scalar(g + reg)}")
    o.append(f"# opt.{opt.name}: {opt.title}")
    o += [f"{names[up.target.name]} = {q.scalar(up.value)}" for up in updates]
    if step.l1:
        prox = kernels.kernel(d, "reg.prox").subs(values)
        o.append("# reg.prox: L1, the weights' soft threshold")
        o.append("l1k = wmask[k] * l1")
        o.append("uk = th")
        o.append(f"th = {q.scalar(prox)}")
        for up in opt.after_prox:
            o.append(f"# opt.{opt.name}.{up.target.name}.prox: after the threshold")
            o.append(f"{names[up.target.name]} = {q.scalar(up.value.subs(values))}")
    o.append("store[k] = th")
    o += [f"{name}[k] = s_{key}" for name, key in step.state]
    return o


def _pass_names(d, l: int) -> dict[str, str]:
    """Matrix symbol name -> the array of ``_epoch`` that holds it, for layer l."""
    names = {nt.A(0).name: "x", nt.W(l).name: f"W_{l}", nt.Delta(l).name: f"D_{l}"}
    names.update({nt.A(s).name: f"A_{s}" for s in range(1, l)})
    if d.layers[l - 1].bias:
        names[nt.B(l).name] = f"b_{l}"
    return names


def _affine_update(opt, step, spec) -> tuple[str, str, str] | None:
    """``(alpha, beta, text)`` when the step is ``theta <- beta theta + alpha g`` with constant
    coefficients (SGD and gd; no state, no penalty): the weight gradient's product then updates
    the weights itself (``?gemm``'s ``C <- alpha A B + beta C``), with no gradient written and no
    pass over the parameters. The coefficients are read off the optimiser's SymPy update."""
    if step.state or step.l1 or step.l2 or opt.after_prox or len(opt.updates) != 1:
        return None
    (up,) = opt.updates
    value = up.value.subs(_hyper_values(opt, spec.optimizer))
    if step.fold:
        value = value.subs(g, g / eta)
    alpha, beta = sp.diff(value, g), sp.diff(value, theta)
    if (
        up.target != theta
        or sp.expand(value - alpha * g - beta * theta) != 0
        or (alpha.free_symbols | beta.free_symbols) - {eta}
    ):
        return None
    q = NumbaPrinter({eta.name: "lr"})
    codes = [repr(float(c)) if c.is_number else q.scalar(c) for c in (alpha, beta)]
    said = f"opt.{opt.name}: {text(up.target)} <- {text(value)}"
    return codes[0], codes[1], said


def _gradient_lines(prod, c, l: int, sizes, fused=None) -> list[str]:
    """grad.W.l and grad.b.l's data terms (times m scale) into the gradient, or, ``fused``, the
    affine step applied by the same product to the parameters (b_1 is summed into its gradient
    and stepped after the batch)."""
    o, step = [], None
    if fused is None:
        o.append(f"        # grad.W.{l}, grad.b.{l}: the data terms, times m*scale")
        into = f"gWb_{l}" if c.bias and l > 1 else f"gW_{l}"
    else:
        alpha, beta, said = fused
        step = (alpha, beta)
        o.append(f"        # grad.W.{l}, grad.b.{l}: the data terms, times m*scale, and {said}:")
        o.append(
            f"        # the product adds alpha = {alpha} times them to beta = {beta} times the"
            " parameters"
        )
        into = f"Wb_{l}" if c.bias and l > 1 else f"W_{l}"  # the parameters themselves
    if c.bias and l > 1:  # [gW_l | gb_l] = D_l^T [a_{l-1} | 1]
        pair = (f"A_{l - 1}", into)
        lines = prod.gradients(l, ("", ""), augmented=pair, step=step)
    else:
        lines = prod.gradients(l, (into, None), step=step)
    o += [f"        {line}" for line in lines]
    if c.bias and l == 1:
        # grad.b.1's data term, 1^T D_1, is a sum over the batch (add.reduce in NumPy)
        pb = prod.scaled(prod.data_term("grad.b.1", 1), nt.m * SCALE)
        if not prod.into("gb_1", pb).startswith("np.add.reduce(D_1,"):
            raise LoweringError(f"grad.b.1 is not a sum over the batch: {pb}")
        # the column sums row by row, as NumPy's add.reduce over axis 0 adds them (and
        # along memory: summing one column at a time strides and cost 25x)
        o.append("        gb_1[:] = 0")
        o.append("        for r in range(m):")
        o.append(f"            for j in range({sizes[1]}):")
        o.append("                gb_1[j] += D_1[r, j]")
    return o


def _epoch_source(d, context: dict) -> str:
    spec = d.spec
    L = d.depth
    sizes = spec.sizes
    p = NumbaPrinter({"z": "z", "a": "a", "y": "y", "logsumexp": "lse"})
    opt = optimizers.get(spec.optimizer.name)
    step = context["step"]
    kept = context["out"].track_names.split(", ")
    ctxs = context["layers"]
    bias = [c.bias for c in ctxs]
    state = [name for name, _ in step.state]
    fused = _affine_update(opt, step, spec)
    args = ["store", "grad", *state, "wmask", "X", "Y_all", "kept_z", "kept_a", "order"]
    args += ["shuffled", "track", "start", "count", "m", "lr", "l2", "l1", "n", "t"]
    o = [f"def _epoch_py({', '.join(args)}):"]
    o.append(
        '    """A run of ``count`` batches of m (see ``_make_runner``); returns the step count."""'
    )
    o.append("    dt = store.dtype")
    o.append(f"    scale = {'lr / m' if step.fold else '1.0 / m'}")
    o.append(f"    xg = np.empty((m, {sizes[0]}), dtype=dt)  # shuffled batches are gathered here")
    o.append(f"    yg = np.empty((m, {sizes[L]}), dtype=dt)")
    for l, c in enumerate(ctxs, start=1):
        units, fan_in, lo = c.units, c.fan_in, c.w0
        if c.bias and l == 1:
            o.append(f"    W_1 = store[{lo}:{lo + units * fan_in}].reshape(({units}, {fan_in}))")
            o.append(f"    b_1 = store[{lo + units * fan_in}:{lo + units * (fan_in + 1)}]")
            if fused is None:  # else the product writes into W_1 itself
                shape = f"({units}, {fan_in})"
                o.append(f"    gW_1 = grad[{lo}:{lo + units * fan_in}].reshape({shape})")
            o.append(f"    gb_1 = grad[{lo + units * fan_in}:{lo + units * (fan_in + 1)}]")
        else:
            cols = fan_in + 1 if c.bias else fan_in
            hi = lo + units * cols
            name = f"Wb_{l}" if c.bias else f"W_{l}"
            o.append(f"    {name} = store[{lo}:{hi}].reshape(({units}, {cols}))")
            if fused is None:
                o.append(f"    g{name} = grad[{lo}:{hi}].reshape(({units}, {cols}))")
        # [a_l | 1] when the next layer has a bias (one product gives its weights and bias)
        cols = units + 1 if l < L and bias[l] else units
        o.append(f"    Z_{l} = np.empty((m, {units}), dtype=dt)")
        o.append(f"    A_{l} = np.ones((m, {cols}), dtype=dt)")
        o.append(f"    D_{l} = np.empty((m, {units}), dtype=dt)")
        if l > 1:
            o.append(f"    B_{l} = np.empty((m, {fan_in + 1 if c.bias else fan_in}), dtype=dt)")
    o.append("    for i in range(count):")
    o.append("        lo = start + i * m")
    # element by element: Numba compiles a row assignment (xg[r] = X[k]) many times slower
    o.append("        if shuffled:")
    o.append("            for r in range(m):")
    o.append("                k = order[lo + r]")
    o.append(f"                for c in range({sizes[0]}):")
    o.append("                    xg[r, c] = X[k, c]")
    o.append(f"                for c in range({sizes[L]}):")
    o.append("                    yg[r, c] = Y_all[k, c]")
    o.append("            x = xg")
    o.append("            Y = yg")
    o.append("        else:")
    o.append("            x = X[lo : lo + m]")
    o.append("            Y = Y_all[lo : lo + m]")
    gemm = {"dot": "_gemm"}
    prods = [
        Products(d, _pass_names(d, l), lambda name: gemm.get(name, f"np.{name}"))
        for l in range(1, L + 1)
    ]
    for l, c in enumerate(ctxs, start=1):
        units = c.units
        prod = prods[l - 1]
        lhs, rhs = d.equation(f"forward.{l}").matrix
        then = f"then {text(nt.A(l))} = f_{l}({text(lhs)})"
        if c.bias and l > 1:  # the rows [W_l | b_l] on [a_{l-1} | 1]: one product
            eq = f"{text(lhs)} = {text(rhs)}{AUGMENTED % (l - 1, l, l)}"
            o.append(f"        # forward.{l}, act.{l}.f: {eq}, {then}")
            line = prod.folded_forward(l, (f"A_{l - 1}", f"Wb_{l}")).format(target=f"Z_{l}")
            plus = ""
        else:  # the bias rows broadcast are added in the activation's loop
            o.append(f"        # forward.{l}, act.{l}.f: {text(lhs)} = {text(rhs)}, {then}")
            product, rows = prod.forward_parts(l)
            line = prod.into(f"Z_{l}", product)
            plus = "".join(f" + {prod.code(r)}[j]" for r in rows)
        o.append(f"        {line}")
        f = p.scalar(_unit_kernel(d, f"act.{l}.f", vector=c.softmax))
        o.append("        for r in range(m):")
        if c.softmax:
            # logsumexp(z) of the row, shifted by its maximum (as the NumPy module's _logsumexp)
            o.append("            top = -np.inf")
            o.append(f"            for j in range({units}):")
            o.append(f"                z = Z_{l}[r, j]{plus}")
            if plus:
                o.append(f"                Z_{l}[r, j] = z")
            o.append("                if z > top:")
            o.append("                    top = z")
            o.append("            s = 0.0")
            o.append(f"            for j in range({units}):")
            o.append(f"                s += np.exp(Z_{l}[r, j] - top)")
            o.append("            lse = top + np.log(s)")
            o.append(f"            for j in range({units}):")
            o.append(f"                z = Z_{l}[r, j]")
            o.append(f"                A_{l}[r, j] = {f}")
        else:
            o.append(f"            for j in range({units}):")
            o.append(f"                z = Z_{l}[r, j]{plus}")
            if plus:
                o.append(f"                Z_{l}[r, j] = z")
            o.append(f"                A_{l}[r, j] = {f}")
    o.append("        if track:")
    o.append("            for r in range(m):")
    o.append(f"                for c in range({sizes[L]}):")
    if f"z_{L}" in kept:
        o.append(f"                    kept_z[lo + r, c] = Z_{L}[r, c]")
    o.append(f"                    kept_a[lo + r, c] = A_{L}[r, c]")
    delta = p.scalar(_unit_kernel(d, "delta.out"))
    o.append("        # delta.out, times scale")
    o.append("        for r in range(m):")
    o.append(f"            for j in range({sizes[L]}):")
    o.append(f"                z = Z_{L}[r, j]")
    o.append(f"                a = A_{L}[r, j]")
    o.append("                y = Y[r, j]")
    o.append(f"                D_{L}[r, j] = ({delta}) * scale")
    for l in range(L, 0, -1):
        c = ctxs[l - 1]
        prod = prods[l - 1]
        if fused is None:
            o += _gradient_lines(prod, c, l, sizes)
        if l > 1:
            df = p.scalar(_unit_kernel(d, f"act.{l - 1}.df"))
            lhs, rhs = prods[l - 2].recurrence(l - 1)
            o.append(f"        # backprop.sum.{l - 1}, backprop.{l - 1}: {text(lhs)} = {text(rhs)}")
            if c.bias:  # B_l = D_l [W_l | b_l] (its last column unused)
                line = prod.folded_backprop(l, l - 1, (f"D_{l}", f"Wb_{l}"), f"B_{l}")
            else:
                line = prod.into(f"B_{l}", prod.backprop(l, l - 1))
            o.append(f"        {line}")
            o.append("        for r in range(m):")
            o.append(f"            for j in range({sizes[l - 1]}):")
            o.append(f"                z = Z_{l - 1}[r, j]")
            o.append(f"                a = A_{l - 1}[r, j]")
            o.append(f"                D_{l - 1}[r, j] = B_{l}[r, j] * ({df})")
        if fused is not None:  # W_l is read above (backprop) before the product updates it
            o += _gradient_lines(prod, c, l, sizes, fused)
    if step.counts_steps:
        o.append("        t += 1")
    if fused is None:
        o.append("        # the step, one fused loop over the parameters")
        o.append("        for k in range(store.shape[0]):")
        o += [f"            {line}" for line in _scalar_update(opt, step, spec, d)]
    elif ctxs[0].bias:  # b_1's update (the other parameters were updated in the products)
        lo = ctxs[0].w0 + ctxs[0].units * ctxs[0].fan_in
        o.append(f"        # the step of b_1 (the weights' is in their products, {fused[2]})")
        o.append(f"        for k in range({lo}, {lo + ctxs[0].units}):")
        o += [f"            {line}" for line in _scalar_update(opt, step, spec, d)]
    o.append("    return t")
    return "\n".join(o) + "\n"


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
    step = context["step"]
    tail = (
        _environment()
        .get_template(SECTION)
        .render(
            epoch=epoch,
            n_out=spec.sizes[-1],
            state_keys=list(context["step"].state_keys),
            kept_unpack=unpack,
            wmask="_NO_MASK" if not (step.l2 or step.l1) else "_WEIGHT_MASK.astype(store.dtype)",
            cls=spec.class_name,
        )
    )
    full = source + tail
    check_compiles(full, spec.name)
    return layout(full), None


def numba_module(spec: Spec | str, spec_file: str | None = None) -> str:
    """:func:`numba_source`'s module alone (``symgrad.load_trainer`` builds it within its time
    budget); a NumPy module it fell back to ends with the line ``# numba backend: <notice>``."""
    source, notice = numba_source(spec, spec_file)
    return source if notice is None else f"{source.rstrip()}\n\n# numba backend: {notice}\n"


__all__ = ["NumbaPrinter", "Unsupported", "numba_module", "numba_source", "supported_optimizers"]
