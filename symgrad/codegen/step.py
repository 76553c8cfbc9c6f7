"""The training step: the regulariser's gradient, the optimiser's update, the L1 proximal step.

All three are SymPy assignments (the optimiser object's ``updates``, the Derivation's ``reg.grad``
and ``reg.prox`` kernels) printed in place over the flat parameter vector by one
:class:`~symgrad.printers.numpy.InplaceEmitter`; nothing here knows an optimiser by name.

Conventions: g is the gradient of the smooth part of the cost on the mini-batch,
``(1/m) sum_x dC_x/dtheta + (lambda_2/N) w`` with N the training set's size. When the update reads
g only through ``eta g`` (gd, sgd, momentum, Nesterov) eta is folded into the output delta's
scale, so the backward pass yields ``eta g`` directly. With an L1 penalty each step ends with the
soft threshold ``w <- sign(w) max(|w| - s lambda_1/N, 0)``, s the optimiser's per-coordinate
``step_size``, then the optimiser's ``after_prox`` corrections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .._paths import template_root
from ..optimizers.base import Optimizer, Update, eta, g, t, theta, u
from ..printers.inplace import InplaceEmitter
from ..printers.numpy import NumPyPrinter, ScalarPrinter
from . import kernels
from .cite import Citations
from .regulariser import smooth_gradient

#: the step's symbols as the runner names them (state vectors are ``opt_<key>``)
NAMES = {
    "theta": "store",
    "g": "grad",
    "eta": "lr",
    "t": "t",
    "u": "before",
    "lambda_2": "l2",
    "lambda_1": "l1",
    "N": "n",
    "p": "p",
    "alpha_k": "step",
}
#: constant within one runner (its cache key holds the learning rate, l2, l1 and n)
INVARIANT = ("eta", "lambda_2", "lambda_1", "N")


@dataclass
class Step:
    """The printed training step of one optimiser."""

    name: str
    title: str
    fold: bool = False
    blocks: list[tuple[str, list[str]]] = field(default_factory=list)
    hoisted: list[tuple[str, str]] = field(default_factory=list)
    state: list[tuple[str, str]] = field(default_factory=list)  # (local name, key)
    counts_steps: bool = False
    work: list[str] = field(default_factory=list)
    scratch: list[str] = field(default_factory=list)  # the runner's vectors (P,), by name
    keeps_before: bool = False  # the L1 step's after_prox reads theta before the threshold
    l2: bool = False
    l1: bool = False
    #: the template of a step that needs curvature (``first_order=False``)
    template: str = "numpy/newton.py.jinja"
    #: that step's arithmetic, printed from its equations: equation key -> right side's code
    code: dict[str, str] = field(default_factory=dict)

    @property
    def state_keys(self) -> tuple[str, ...]:
        return tuple(key for _, key in self.state)

    @property
    def scratch_keys(self) -> tuple[str, ...]:
        return tuple(self.scratch)


def _hyper_values(opt: Optimizer, settings) -> dict[sp.Symbol, sp.Rational]:
    """Hyperparameters as exact decimals (1 - 0.9 prints 0.1, not 0.09999999999999998)."""
    hyper = opt.hyper.items()
    return {sym: sp.Rational(repr(float(getattr(settings, field)))) for sym, field in hyper}


def step_code(d, opt: Optimizer, printer: type[NumPyPrinter], cite: Citations) -> Step:
    spec = d.spec
    step = Step(opt.name, opt.title)
    values = _hyper_values(opt, spec.optimizer)
    names = dict(NAMES)
    arrays = {"theta", "g", "u", "lambda_2", "lambda_1", "p"}
    for sym in opt.state:
        names[sym.name] = f"opt_{opt.key(sym)}"
        arrays.add(sym.name)
        step.state.append((names[sym.name], opt.key(sym)))
    em = InplaceEmitter(names, arrays, lambda k: f"work_{k}", invariant=INVARIANT, printer=printer)
    updates = [Update(up.target, up.value.subs(values)) for up in opt.updates]
    step.fold = opt.first_order and all(
        eta not in up.value.subs(g, g / eta).free_symbols for up in updates
    )
    if step.fold:
        updates = [Update(up.target, up.value.subs(g, g / eta)) for up in updates]
    reg_grad = smooth_gradient(d).subs(kernels.w, theta)
    if reg_grad != 0 and opt.first_order:  # Newton's gradient holds it already
        step.l2 = True
        if step.fold:
            reg_grad = eta * reg_grad
        lines = em.assign(g, g + reg_grad)
        step.blocks.append((f"{cite('reg.grad', 'cost')} the regulariser's gradient", lines))
    lines = []
    for up in updates:
        lines += em.assign(up.target, up.value)
    keys = [f"opt.{opt.name}.{up.target.name}" for up in updates] if opt.first_order else ["newton"]
    first, last = cite.maybe(keys[0]), cite.maybe(keys[-1])
    cited = first if first == last else f"{first.strip()}-{last}"
    step.blocks.append((f"{cited}{opt.title}", lines))
    step.counts_steps = any(t in up.value.free_symbols for up in updates)
    prox = kernels.kernel(d, "reg.prox")
    if prox is not None and prox != u:
        # the threshold is the optimiser's step size times lambda_1/N (in the kernel already)
        step.l1 = True
        lines = []
        if opt.after_prox:
            step.keeps_before = True
            lines += em.assign(u, theta)
        lines += em.assign(theta, prox.subs(values).subs(u, theta))
        step.blocks.append((f"{cite('reg.prox', 'cost')} L1: the weights' soft threshold", lines))
        for up in opt.after_prox:
            cited = cite.maybe(f"opt.{opt.name}.{up.target.name}.prox")
            lines = em.assign(up.target, up.value.subs(values))
            step.blocks.append((f"{cited}after the threshold", lines))
    step.hoisted = em.hoisted
    step.work = [f"work_{k}" for k in range(em.scratch_used)]
    step.scratch = (["grad"] if opt.first_order else []) + step.work
    step.scratch += ["before"] if step.keeps_before else []
    if not opt.first_order:
        _curvature_step(d, opt, step, values)
    return step


# ---------------------------------------------------------------------------------------------
# steps that need curvature: the template holds the loops, these lines the arithmetic

#: the vectors and scalars of those steps' equations as the templates name them
VECTOR_NAMES = {
    "g_v": "g",
    "p_v": "p",
    "r_v": "r",
    "d_v": "d",
    "q_v": "q",
    "s_i": "s",
    "y_i": "y",
    "g_next": "g_new",
    "theta_v": "store",
    "H*d_v": "Hd",
    "H*p_v": "Hp",
    "C_B": "cost",
    "C_trial": "trial",
    "alpha": "alpha",
    "alpha_k": "step",
    "Delta": "radius",
    "mu": "damping",
    "mu_s": "shift",
    "s_H": "scale",
    "s_norm": "np.linalg.norm(s)",
    "y_norm": "np.linalg.norm(y)",
}


def _dot_name(u: sp.Basic, v: sp.Basic, H: bool = False) -> sp.Symbol:
    return sp.Symbol(f"{u.name}.{'H*' if H else ''}{v.name}")


def scalarise(expr: sp.Basic) -> sp.Basic:
    """A matrix expression over P x 1 vectors as a scalar expression: each vector a symbol of its
    name, each inner product ``u^T v`` (``u^T H v``) a symbol ``u.v`` (``u.H*v``), a 1 x 1
    inverse a reciprocal, ``H v`` a symbol ``H*v`` (the Hessian-vector product)."""
    if isinstance(expr, sp.MatrixSymbol):
        return sp.Symbol(expr.name)
    if isinstance(expr, sp.Identity):
        return sp.Integer(1)
    if isinstance(expr, sp.MatAdd):
        return sp.Add(*(scalarise(a) for a in expr.args))
    if isinstance(expr, sp.MatPow):
        return sp.Pow(scalarise(expr.base), expr.exp)
    if isinstance(expr, sp.Inverse):
        return sp.Pow(scalarise(expr.arg), -1)
    if isinstance(expr, sp.MatMul):
        factors, chain = [], []
        for arg in expr.args:
            if not arg.is_Matrix:
                factors.append(scalarise(arg))
            elif isinstance(arg, (sp.Inverse, sp.MatAdd, sp.MatPow, sp.Identity, sp.MatMul)):
                factors.append(scalarise(arg))
            else:
                chain.append(arg)
        factors.append(_chain(chain))
        return sp.Mul(*factors)
    if not expr.args:
        return expr
    return expr.func(*(scalarise(a) for a in expr.args))


def _chain(chain: list) -> sp.Basic:
    if not chain:
        return sp.Integer(1)
    if len(chain) == 1 and isinstance(chain[0], sp.MatrixSymbol):
        return sp.Symbol(chain[0].name)
    if len(chain) == 2 and isinstance(chain[0], sp.Transpose):
        return _dot_name(chain[0].arg, chain[1])
    if len(chain) == 2 and chain[0].name == "H":
        return sp.Symbol(f"H*{chain[1].name}")
    if len(chain) == 3 and isinstance(chain[0], sp.Transpose) and chain[1].name == "H":
        return _dot_name(chain[0].arg, chain[2], H=True)
    raise ValueError(f"no code for the product {chain}")


class VectorPrinter(ScalarPrinter):
    """Prints :func:`scalarise`'s expressions: vectors and scalars by their template names, an
    inner product ``u.v`` as ``(u @ v)``, one through H as ``(u @ Hv)``."""

    def _print_Symbol(self, expr):
        if "." in expr.name:
            u, v = expr.name.split(".")
            return f"({self.names.get(u, u)} @ {self.names.get(v, v)})"
        return super()._print_Symbol(expr)


def print_vector(expr: sp.Basic, values: dict | None = None) -> str:
    """``expr`` (vectors and 1 x 1 matrices) as NumPy code over the template's names."""
    return VectorPrinter(VECTOR_NAMES).doprint(scalarise(expr).subs(values or {}))


def _curvature_step(d, opt: Optimizer, step: Step, values: dict) -> None:
    """The arithmetic of Newton's, L-BFGS's or the trust region's step, printed from the
    equations of the derivation (keys ``newton*``, ``lbfgs*``, ``trust*``) and their kernels."""
    own = f"numpy/{opt.name}.py.jinja"
    try:
        template_root(own)
        step.template = own
    except FileNotFoundError:
        pass  # Newton's template
    # state saved with checkpoints: the trust radius (as a vector: every entry the radius).
    # L-BFGS's pairs are not (a saved file holds (P,) vectors, and the ring holds 2 history of
    # them): its template keeps them in memory, and a loaded trainer starts a fresh history
    if "trust.radius" in d:
        step.state.append(("radius", "radius"))
    # settings the templates pass as arguments (Newton's damping) stay names
    hyper = {sym: v for sym, v in values.items() if sym.name not in VECTOR_NAMES}
    for eq in d.equations:
        if not eq.key.startswith(("newton", "lbfgs", "trust")):
            continue
        try:
            step.code[eq.key] = print_vector(eq.rhs, hyper)
        except ValueError:
            pass  # a product the step computes otherwise (Newton's (H + mu I) d)
        if isinstance(eq.rhs, sp.Piecewise):  # as an if/elif/else chain: (test, value) each
            step.code[f"{eq.key}.branches"] = [
                ("" if cond == sp.true else print_vector(cond, hyper), print_vector(e, hyper))
                for e, cond in eq.rhs.args
            ]
        kernel = eq.kernel
        if kernel is not None and kernel != eq.rhs:  # a test (Wolfe's, the ratio's)
            parts = kernel if isinstance(kernel, sp.Tuple) else None
            if parts is None:
                step.code[f"{eq.key}.test"] = print_vector(kernel, hyper)
            else:
                step.code[f"{eq.key}.test"] = [print_vector(part, hyper) for part in parts]
