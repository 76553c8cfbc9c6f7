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


def _is_scalar_matrix(expr: sp.Basic) -> bool:
    """A 1 x 1 matrix expression (an inner product, a sum or inverse of them): a scalar."""
    return expr.is_Matrix and expr.shape == (1, 1)


def scalarise(expr: sp.Basic) -> sp.Basic:
    """A matrix expression over P x 1 vectors as a scalar expression: each vector a symbol of its
    name, each inner product ``u^T v`` (``u^T H v``) a symbol ``u.v`` (``u.H*v``), a 1 x 1
    inverse a reciprocal, ``H v`` a symbol ``H*v`` (the Hessian-vector product).

    A P x P sum in a product is distributed over it, so the product is one of H and I only:
    ``u^T (H + mu I) v = u^T H v + mu u^T v`` and ``(H + mu I) v = H v + mu v``. The inverse of
    a P x P matrix has no code here (ValueError): the step solves that system itself."""
    if isinstance(expr, sp.MatrixSymbol):
        return sp.Symbol(expr.name)
    if isinstance(expr, sp.Identity):
        return sp.Integer(1)
    if isinstance(expr, sp.MatAdd):
        return sp.Add(*(scalarise(a) for a in expr.args))
    if isinstance(expr, sp.MatPow):  # an Inverse too
        if not _is_scalar_matrix(expr.base):
            raise ValueError(f"no code for the power {expr} of a {expr.base.shape} matrix")
        return sp.Pow(scalarise(expr.base), expr.exp)
    if isinstance(expr, sp.MatMul):
        factors, chain = [], []
        for arg in expr.args:
            if not arg.is_Matrix:
                factors.append(scalarise(arg))
            elif isinstance(arg, sp.MatAdd) and not _is_scalar_matrix(arg):
                chain.append(arg)  # a P x P sum: distributed by _chain
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
    for i, link in enumerate(chain):
        if isinstance(link, sp.MatAdd):  # distributed: one product per term of the sum
            head, tail = chain[:i], chain[i + 1 :]
            return sp.Add(*(scalarise(sp.MatMul(*head, term, *tail)) for term in link.args))
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


#: the Hessian-vector products as calls of the template's ``hvp`` (one R-operator sweep)
HVP_NAMES = {f"H*{k}": f"hvp({v})" for k, v in VECTOR_NAMES.items() if k.endswith("_v")}


def print_vector(expr: sp.Basic, values: dict | None = None, names: dict | None = None) -> str:
    """``expr`` (vectors and 1 x 1 matrices) as NumPy code over the template's names (``names``
    instead of :data:`VECTOR_NAMES` where given)."""
    printer = VectorPrinter(VECTOR_NAMES if names is None else names)
    return printer.doprint(scalarise(expr).subs(values or {}))


def quadratic_form(expr: sp.Basic) -> sp.MatrixExpr | None:
    """The 1 x 1 matrix ``expr`` divides by (the first inverse of a 1 x 1 matrix in it), or None."""
    for part in sp.preorder_traversal(expr):
        if isinstance(part, sp.MatPow) and part.exp == -1 and _is_scalar_matrix(part.base):
            return part.base
    return None


def matrix_vector_product(expr: sp.Basic) -> sp.MatMul | None:
    """The first product ``M v`` in ``expr`` of a P x P sum M and a vector (``(H + mu I) d``)."""
    for part in sp.preorder_traversal(expr):
        if isinstance(part, sp.MatMul):
            mats = [a for a in part.args if a.is_Matrix]
            for M, v in zip(mats, mats[1:], strict=False):
                if isinstance(M, sp.MatAdd) and not _is_scalar_matrix(M) and v.shape[1] == 1:
                    return sp.MatMul(M, v)
    return None


def _same(a: sp.Basic, b: sp.Basic) -> bool:
    """Equal, a sum's terms in any order (``H + mu I`` is ``mu I + H``)."""
    if isinstance(a, sp.MatAdd) and isinstance(b, sp.MatAdd):
        return set(a.args) == set(b.args)
    return a == b


def with_names(expr: sp.Basic, named: dict) -> sp.Basic:
    """``expr`` with each product of ``named`` (a run of a MatMul's factors) replaced by its
    symbol: ``d^T (H + mu I) d`` -> ``d^T Ad``."""
    if not isinstance(expr, sp.MatrixExpr) or not expr.args:
        return expr
    if isinstance(expr, sp.MatMul):
        args = list(expr.args)
        for product, sym in named.items():
            k = len(product.args)
            for i in range(len(args) - k + 1):
                if all(_same(a, b) for a, b in zip(args[i : i + k], product.args, strict=True)):
                    args[i : i + k] = [sym]
                    break
        if len(args) == 1:
            return args[0]
        return sp.MatMul(*(with_names(a, named) for a in args))
    return expr.func(*(with_names(a, named) for a in expr.args))


#: (P,) products the loop computes once, by name, and the equation they are read from: A d,
#: the damped Hessian times the search direction (``H d + mu d``, H d a call of the template's
#: ``hvp``: one R-operator sweep), which the step length's curvature ``d^T A d`` and the
#: residual's update both read
NAMED_VECTORS = {"Ad": (("newton.cg.r", "newton.cg.alpha"), matrix_vector_product)}

#: scalars the loop has computed already, by the name it reads them by: Newton's step length
#: divides by the curvature ``d^T A d`` the loop tests first (the stopping rule of
#: ``newton.cg.rho``'s prose), and the next direction's beta reads the new ``r^T r``
#: (``newton.cg.rho``'s right side) the loop's tolerance test reads first. Each (and each named
#: vector) is printed once, as ``<prefix>.<name>`` (``newton.cg.curvature``,
#: ``newton.cg.rho_new``, ``newton.cg.Ad``).
NAMED_PARTS = {
    "newton.cg.alpha": {"curvature": lambda d, rhs: quadratic_form(rhs)},
    "newton.cg.beta": {"rho_new": lambda d, rhs: d.equation("newton.cg.rho").rhs},
}


def _named_vectors(d, step: Step, hyper: dict) -> dict:
    """The products of :data:`NAMED_VECTORS` in ``d``, each printed as ``<prefix>.<name>``."""
    out = {}
    for name, (keys, find) in NAMED_VECTORS.items():
        found = (find(d.equation(key).rhs) for key in keys if key in d)
        product = next((p for p in found if p is not None), None)
        if product is not None:
            code = print_vector(product, hyper, {**VECTOR_NAMES, **HVP_NAMES})
            step.code[f"{keys[0].rsplit('.', 1)[0]}.{name}"] = code
            out[product] = sp.MatrixSymbol(name, *product.shape)
    return out


def print_inplace(
    lhs: sp.MatrixSymbol, rhs: sp.MatrixExpr, values: dict | None = None, names: dict | None = None
) -> list:
    """The update ``lhs <- rhs`` of a (P,) vector as statements that write into it: ``x += v``
    where ``rhs = x + v``, ``x *= c`` then ``x += v`` where ``rhs = c x + v`` (c a scalar),
    else ``x[:] = rhs`` (a lowering: the same arithmetic, with no new vector for x)."""
    printer = VectorPrinter(VECTOR_NAMES if names is None else names)
    x = sp.Symbol(lhs.name)
    name = printer.doprint(x)
    value = scalarise(rhs).subs(values or {})
    scale = value.coeff(x)
    rest = value - scale * x
    if scale == 0 or x in rest.free_symbols:
        return [f"{name}[:] = {printer.doprint(value)}"]
    lines = [] if scale == 1 else [f"{name} *= {printer.doprint(scale)}"]
    if rest == 0:
        return lines
    if rest.could_extract_minus_sign():
        return [*lines, f"{name} -= {printer.doprint(-rest)}"]
    return [*lines, f"{name} += {printer.doprint(rest)}"]


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
    vectors = _named_vectors(d, step, hyper)
    for eq in d.equations:
        if not eq.key.startswith(("newton", "lbfgs", "trust")):
            continue
        rhs, names = eq.rhs, None
        if eq.key.startswith("newton.cg"):  # its loop has no Hd: H v is a call of hvp
            rhs, names = with_names(eq.rhs, vectors), {**VECTOR_NAMES, **HVP_NAMES}
        named = {}
        for name, part in NAMED_PARTS.get(eq.key, {}).items():
            part = part(d, rhs)
            if part is not None:
                code = print_vector(part, hyper, names)
                step.code[f"{eq.key.rsplit('.', 1)[0]}.{name}"] = code
                named[scalarise(part)] = sp.Symbol(name)
        try:
            step.code[eq.key] = print_vector(rhs, {**hyper, **named}, names)
        except ValueError:
            pass  # what the step computes otherwise (the inverse in Newton's exact solve)
        if eq.key.startswith("newton.cg") and isinstance(eq.lhs, sp.MatrixSymbol):
            step.code[f"{eq.key}.inplace"] = print_inplace(eq.lhs, rhs, hyper, names)
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
