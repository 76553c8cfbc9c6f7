"""The calculus layer: activations and losses as SymPy expressions, and all derived from them.

Every derivative here comes from ``sympy.diff``. Output forms (``f'(z) = g(f(z))``) are found by
solving ``a = f(z)`` for ``z`` (directly, or for ``u = exp(z)``) and are accepted only once SymPy
proves ``g(f(z)) - f'(z) == 0``.

Longer than 400 lines on purpose: the registry and the searches for output forms, readable
forms and stable losses are one idea (what SymPy derives from an activation and a loss).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy as sp

from ..spec import registry
from .budget import BudgetExceeded, attempt, time_budget
from .exprparse import parse_expression

# The symbols of a representative unit: pre-activation z, activation a, target y.
z = sp.Symbol("z", real=True)
a = sp.Symbol("a", real=True)
y = sp.Symbol("y", real=True)
alpha = sp.Symbol("alpha", positive=True)

#: Seconds SymPy may spend on one search or simplification before we keep the plain form.
#: Every built-in and example expression needs well under 0.5 s, so the output is the same on
#: any machine; only pathological custom expressions reach the budget.
SOLVE_BUDGET = 5.0
SIMPLIFY_BUDGET = 8.0


class softplus(sp.Function):  # noqa: N801 - SymPy function names are lower case
    """``log(1 + exp(x))``, printed as ``np.logaddexp(0, x)`` (never overflows)."""

    nargs = 1

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    def _latex(self, printer, exp=None):
        tex = r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


class logsumexp(sp.Function):  # noqa: N801
    r"""``log sum_k exp(z_k)`` over the output units of one sample (printed row-wise, stably)."""

    nargs = 1

    def _latex(self, printer):
        return r"\log\sum_{k}e^{%s_{k}}" % printer._print(self.args[0])


class sigma(sp.Function):  # noqa: N801
    """The logistic function ``1 / (1 + exp(-x))``, used by the readable forms only."""

    nargs = 1

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def fdiff(self, argindex=1):
        return sigma(self.args[0]) * (1 - sigma(self.args[0]))

    def _latex(self, printer, exp=None):
        tex = r"\sigma\left(%s\right)" % printer._print(self.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)  # a power: sigma(z)^{2}


# ---------------------------------------------------------------------------------------
# Registry: each built-in activation and loss is one call here carrying its SymPy expression and
# the facts the spec checks; it lands in :mod:`symgrad.spec.registry`, which the spec validates
# against and the functions below read. Nothing else names a built-in.


@dataclass(frozen=True)
class ActivationDefinition:
    """What the registry carries for the calculus: ``f(z)`` (in ``z`` and, when it takes the
    parameter, ``alpha``) with the exact default of ``alpha``; or ``derive``, which derives a
    vector activation (softmax) itself."""

    expr: sp.Expr | None
    default: sp.Expr | None = None
    derive: Callable[[], ActivationCalculus] | None = None


@dataclass(frozen=True)
class LossDefinition:
    """What the registry carries for the calculus: ``l(a, y)`` and how prose names the loss."""

    expr: sp.Expr
    title: str


def define_activation(
    name: str,
    expr: sp.Expr | None = None,
    *,
    alpha_default: float | sp.Expr | None = None,
    derive: Callable[[], ActivationCalculus] | None = None,
    **facts,
) -> ActivationDefinition:
    """Define the built-in activation ``name``: all it takes to add one.

    ``expr`` is ``f(z)``; when it holds :data:`alpha`, layers may give ``alpha`` and
    ``alpha_default`` is its value otherwise. A vector activation gives ``derive`` instead.
    ``facts`` are what the spec checks (:class:`symgrad.spec.registry.ActivationFacts`:
    ``output_only``, ``min_units``, ``needs_loss``, ``classifier``). f', f'', the output form,
    the printed equations and the generated code follow from the expression.
    """
    if (expr is None) == (derive is None):
        raise ValueError(f"activation {name!r}: give its expression or derive, not both")
    takes_alpha = expr is not None and expr.has(alpha)
    if takes_alpha != (alpha_default is not None):
        raise ValueError(f"activation {name!r}: alpha_default goes with an expression in alpha")
    default = sp.nsimplify(alpha_default) if takes_alpha else None
    definition = ActivationDefinition(expr, default, derive)
    registry.register_activation(
        name,
        parameter="alpha" if takes_alpha else None,
        default=float(default) if default is not None else None,
        definition=definition,
        **facts,
    )
    return definition


def define_loss(name: str, expr: sp.Expr, *, title: str, **facts) -> LossDefinition:
    """Define the built-in loss ``name``: ``l(a, y)`` per output unit, how prose names it, and
    the facts the spec checks (:class:`symgrad.spec.registry.LossFacts`: ``outputs``,
    ``custom_outputs``, ``output_error``, ``classifier``)."""
    definition = LossDefinition(expr, title)
    registry.register_loss(name, definition=definition, **facts)
    return definition


define_activation("identity", z)
define_activation("sigmoid", 1 / (1 + sp.exp(-z)), classifier=True)
define_activation("tanh", sp.tanh(z))
define_activation("relu", sp.Piecewise((z, z > 0), (0, True)))
define_activation(
    "leaky_relu", sp.Piecewise((z, z > 0), (alpha * z, True)), alpha_default=sp.Rational(1, 100)
)
define_activation("softplus", sp.log(1 + sp.exp(z)))
define_activation("elu", sp.Piecewise((z, z > 0), (alpha * (sp.exp(z) - 1), True)), alpha_default=1)
# softmax is defined with its derivation below (_softmax)

define_loss("mse", (a - y) ** 2 / 2, title="quadratic cost (mean squared error)")
define_loss(
    "log_loss",
    -(y * sp.log(a) + (1 - y) * sp.log(1 - a)),
    title="log loss (binary cross-entropy)",
    outputs=("sigmoid",),
    custom_outputs=True,
    output_error="needs outputs in (0, 1): a sigmoid output layer, not {activation!r}",
    classifier=True,
)
define_loss(
    "cross_entropy",
    -y * sp.log(a),
    title="categorical cross-entropy",
    outputs=("softmax",),
    output_error="needs a softmax output layer; use log_loss with sigmoid",
    classifier=True,
)


class _Titles(Mapping):
    """Built-in loss name -> how prose names it (a live view of the registry)."""

    def __getitem__(self, name: str) -> str:
        entry = registry.loss(name)
        if entry is None:
            raise KeyError(name)
        return entry.definition.title

    def __iter__(self):
        return iter(registry.losses())

    def __len__(self) -> int:
        return len(registry.losses())


#: How each built-in loss is named in prose.
LOSS_TITLES: Mapping[str, str] = _Titles()


#: Functions with kinks: ``simplify`` turns ``sign(x)`` into ``x/|x|`` (0/0 at the kink), so
#: expressions holding them are kept as differentiated.
_KINKS = (sp.Abs, sp.sign, sp.Max, sp.Min)


def _simplify(expr: sp.Expr) -> sp.Expr:
    """``sympy.simplify`` within a time budget; the plain expression when over budget."""
    if expr.has(*_KINKS):
        return expr
    return attempt(SIMPLIFY_BUDGET, sp.simplify, expr, default=expr)


def _is_zero(expr: sp.Expr) -> bool:
    """Prove ``expr == 0`` symbolically (within the budget); False when not proved."""
    if expr == 0:
        return True
    for form in (expr, expr.rewrite(sp.exp)):
        done = attempt(SIMPLIFY_BUDGET, lambda e: sp.simplify(e) == 0, form, default=False)
        if done:
            return True
    return False


def tidy(expr: sp.Expr, var: sp.Symbol = a) -> sp.Expr:
    """A factored product written the way a textbook does: ``(a - y) a (1 - a)``.

    Each factor that is a sum gets a positive coefficient on ``var``; a leftover minus sign is
    absorbed by turning one ``(var - c)`` into ``(c - var)``. The value never changes.
    """
    if not isinstance(expr, sp.Mul):
        return expr
    sign = sp.Integer(1)
    factors = []
    for f in expr.args:
        if f.is_Number:
            sign *= f
            continue
        if isinstance(f, sp.Add) and f.coeff(var).is_Number and f.coeff(var) < 0:
            f, sign = sp.expand(-f), -sign
        factors.append(f)
    if sign < 0:
        for i, f in enumerate(factors):
            const = f.as_independent(var)[0] if isinstance(f, sp.Add) else None
            if const is not None and const.is_Number and const < 0:
                factors[i] = sp.expand(-f)
                sign = -sign
                break
    out = sp.Mul(*factors)
    result = sign * out
    if sp.expand(result - expr) != 0:  # pragma: no cover - a guard, never expected
        return expr
    return result


def pointwise(expr: sp.Expr) -> sp.Expr:
    """The derivative away from kinks, the same in the maths and in the code.

    ``DiracDelta`` terms (from ``abs``, ``max``, ``min``, ``sign``) are 0 wherever the derivative
    exists; the step ``Heaviside(x)`` is 0 at ``x = 0`` (the convention of ReLU's ``f'(0) = 0``);
    pieces that hold only on a set of measure zero (``Eq(z, 0)``) are dropped.
    """

    def drop_points(e):
        pieces = [(v, c) for v, c in e.args if not isinstance(c, sp.Eq)]
        if not pieces:
            return e
        if len(pieces) == 1 or pieces[0][1] == sp.true:
            return pieces[0][0]
        return sp.Piecewise(*pieces)

    expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    expr = expr.replace(
        lambda e: isinstance(e, sp.Heaviside),
        lambda e: sp.Piecewise((1, e.args[0] > 0), (0, True)),
    )
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), drop_points)


def _elementary(expr: sp.Expr) -> bool:
    """True when ``expr`` uses only functions the NumPy printer can write."""
    banned = (sp.LambertW, sp.Integral, sp.Derivative, sp.Sum)
    return not any(expr.has(b) for b in banned) and not expr.has(sp.zoo, sp.nan, sp.oo)


# ---------------------------------------------------------------------------------------
# Readable forms: among equivalent forms, the one with the fewest operations.


def measure(expr: sp.Expr) -> int:
    """How hard a form is to read: SymPy's ``count_ops`` (each operation and function call)."""
    return int(sp.count_ops(expr))


def readable(candidates: list[sp.Expr], reference: sp.Expr, back: dict | None = None) -> sp.Expr:
    """The candidate with the smallest :func:`measure` among those proved equal to ``reference``.

    ``candidates[0]`` is the incumbent: another form replaces it only when strictly simpler, and
    ties go to the earlier candidate. ``back`` maps the candidates' helper symbols to what they
    stand for (``a -> f(z)``; ``sigma(z)`` needs no entry) for the proof.
    """
    incumbent = candidates[0]
    ranked = sorted(
        (
            (measure(c), n, c)
            for n, c in enumerate(candidates)
            if c is not None and not c.has(sp.nan, sp.zoo)
        ),
        key=lambda t: t[:2],
    )
    seen: set = set()
    for score, _, cand in ranked:
        if cand is incumbent or score >= measure(incumbent):
            break
        if cand in seen:
            continue
        seen.add(cand)
        if _proved_equal(cand.subs(back or {}), reference):
            return cand
    return incumbent


def _proved_equal(left: sp.Expr, right: sp.Expr, fast_only: bool = False) -> bool:
    """``left == right``, proved.

    Fast path: with ``u = e^(z/q)`` and every other ``z`` replaced by an independent symbol, the
    difference is a rational function; when it cancels to 0 it is 0 for every ``z``. Otherwise
    ``sympy.simplify`` decides (within the budget), unless ``fast_only``.
    """
    diff = (left - right).rewrite(sp.exp)
    exps = [e for e in diff.atoms(sp.exp) if (e.args[0] / z).is_Rational]
    q = functools.reduce(sp.ilcm, [sp.Rational(e.args[0] / z).q for e in exps], 1)
    u = sp.Symbol("u_", positive=True)
    lone = sp.Symbol("z_", real=True)
    fast = diff.replace(
        lambda x: isinstance(x, sp.exp) and (x.args[0] / z).is_Rational,
        lambda x: u ** (x.args[0] / z * q),
    ).subs(z, lone)
    if not fast.has(sp.exp) and not fast.atoms(sp.Function):
        if attempt(SIMPLIFY_BUDGET, lambda e: sp.cancel(e) == 0, fast, default=False):
            return True
    return False if fast_only else _is_zero(left - right)


def _variants(expr: sp.Expr, *gens: sp.Symbol) -> list[sp.Expr]:
    """``expr`` factored, cancelled, put over one denominator, collected in ``gens``."""
    out = [expr]
    for fn in (sp.factor, sp.cancel, sp.together):
        out.append(attempt(SIMPLIFY_BUDGET, fn, expr, default=None))
    for g in gens:
        out.append(sp.collect(sp.expand(expr), g))
    out = [tidy(e) if e is not None else None for e in out]
    return out


def _exp_substitution(expr: sp.Expr, f: sp.Expr) -> list[sp.Expr]:
    """``expr`` with ``e^z = sigma/(1 - sigma)`` (then ``z`` eliminated through ``a = f(z)``)."""
    s_ = sp.Symbol("s_", positive=True)
    u = s_ / (1 - s_)

    def sub(e: sp.Expr) -> sp.Expr:
        e = e.rewrite(sp.exp)
        return e.replace(
            lambda x: isinstance(x, sp.exp) and (x.args[0] / z).is_Rational,
            lambda x: u ** (x.args[0] / z),
        )

    e = attempt(SIMPLIFY_BUDGET, lambda x: sp.factor(sp.cancel(sub(x))), expr, default=None)
    if e is None or e.has(sp.exp):
        return []
    forms = [e]
    fs = sub(f)
    if fs.has(z) and not fs.has(sp.exp):
        try:
            sols = sp.solve(sp.Eq(a, fs), z)
        except (NotImplementedError, ValueError, TypeError):  # pragma: no cover - SymPy gave up
            sols = []
        if len(sols) == 1 and not sols[0].has(z):
            elim = attempt(SIMPLIFY_BUDGET, sp.factor, e.subs(z, sols[0]), default=None)
            if elim is not None:
                forms.append(elim)
                forms += [sp.collect(sp.expand(elim), g) for g in (s_, a)]
    forms += [tidy(x, s_) for x in forms]
    return [x.subs(s_, sigma(z)) for x in forms]


def _readable_z(f: sp.Expr, d: sp.Expr, d_out: sp.Expr | None) -> sp.Expr:
    """The readable form of a derivative ``d(z)`` of activation ``f`` (``a`` means ``f(z)``).

    Candidates: the output form with ``a`` read as ``f(z)`` (written ``sigma(z)`` or ``tanh(z)``
    when that is what ``f`` is), the exp-substitution ``e^z = sigma/(1 - sigma)``, and ``d``
    factored, cancelled or over one denominator. Each is proved equal to ``d``.
    """
    if isinstance(d, sp.Piecewise) or isinstance(f, sp.Piecewise) or not d.has(z):
        return d
    named = None
    if isinstance(f, sp.tanh):
        named = f
    elif _proved_equal(f, sigma(z), fast_only=True):
        named = sigma(z)
    cands: list[sp.Expr] = [d]
    if d_out is not None:
        out_form = d_out.subs(a, named) if named is not None else d_out
        cands = [out_form, d]
    cands += _variants(d, z)
    cands += _exp_substitution(d, f)
    if named is not None:
        cands = [c.subs(a, named) for c in cands]
    return readable(cands, d, {a: f})


# ---------------------------------------------------------------------------------------
# Activations


@dataclass(frozen=True)
class ActivationCalculus:
    """An activation and its derivatives, with output forms where they exist.

    Attributes:
        name: registry name (``sigmoid``, or a custom name).
        f: ``f(z)``.
        df, d2f: ``f'(z)`` and ``f''(z)`` from ``sympy.diff``.
        df_out, d2f_out: ``g(a)`` and ``h(a)`` with ``f'(z) = g(f(z))``, ``f''(z) = h(f(z))``;
            ``None`` when no output form was found (the trainer then keeps ``z``).
        how: one sentence saying how the output form was found, or why there is none.
        df_z, d2f_z: the most readable form of ``f'(z)``, ``f''(z)`` (see :func:`readable`),
            in ``z``, ``sigma(z)`` and ``a`` standing for ``f(z)``; proved equal to ``df``, ``d2f``.
    """

    name: str
    f: sp.Expr
    df: sp.Expr
    d2f: sp.Expr
    df_out: sp.Expr | None
    d2f_out: sp.Expr | None
    how: str
    custom: bool = False
    vector: bool = False
    df_z: sp.Expr | None = None
    d2f_z: sp.Expr | None = None

    @property
    def has_output_form(self) -> bool:
        return self.df_out is not None


def _candidates_direct(f: sp.Expr) -> list[sp.Expr]:
    return list(sp.solve(sp.Eq(a, f), z))


def _candidates_exp(f: sp.Expr, df: sp.Expr) -> list[sp.Expr]:
    """Solve for ``u = exp(z)`` when ``f`` depends on ``z`` only through ``exp``."""
    u = sp.Symbol("u", positive=True)
    fe = f.rewrite(sp.exp).subs(sp.exp(z), u)
    dfe = df.rewrite(sp.exp).subs(sp.exp(z), u)
    if fe.has(z) or dfe.has(z):
        return []
    # dfe and every solution are rational in u (and in a or e^a): cancelled, then the shortest of
    # its factored (textbook signs) and expanded forms; sympy.simplify took ten times as long
    out = []
    # check=False: SymPy's own check of each root costs more than the solve, and every
    # candidate g is proved (g(f(z)) = f'(z)) before it is used
    for sol in sp.solve(sp.Eq(a, fe), u, check=False):
        g = sp.factor(sp.cancel(dfe.subs(u, sol)))
        out.append(min((tidy(g), sp.expand(g)), key=sp.count_ops))
    return out


def _output_form_smooth(f: sp.Expr, df: sp.Expr) -> sp.Expr | None:
    """Find ``g`` with ``df == g(f)`` for a non-piecewise ``f``; proved or None."""
    if not df.has(z):
        return df  # constant derivative: g is that constant
    found: list[sp.Expr] = []
    for method in ("exp", "direct"):
        try:
            with time_budget(SOLVE_BUDGET):
                if method == "exp":
                    cands = _candidates_exp(f, df)
                else:
                    cands = [_simplify(df.subs(z, sol)) for sol in _candidates_direct(f)]
        except (BudgetExceeded, NotImplementedError, ValueError, TypeError):
            continue
        for g in cands:
            g = sp.factor(g) if sp.count_ops(sp.factor(g)) <= sp.count_ops(g) else g
            if g.has(z) or not _elementary(g) or g.free_symbols - {a, alpha}:
                continue
            if _proved_equal(g.subs(a, f), df):
                found.append(g)
        if found:
            break
    if not found:
        return None
    return min(found, key=sp.count_ops)


def _sign_preserving(f: sp.Piecewise) -> bool:
    """True when ``sign(f(z)) == sign(z)``: f(0) = 0 and f increases (strictly for z > 0)."""
    zp = sp.Symbol("zp", positive=True)
    zn = sp.Symbol("zn", negative=True)
    (e1, c1), (e2, c2) = f.args
    if c1 != (z > 0) or c2 != sp.true:
        return False
    if sp.simplify(e2.subs(z, 0)) != 0:
        return False
    up = sp.diff(e1, z).subs({z: zp, alpha: sp.Symbol("al", positive=True)})
    down = sp.diff(e2, z).subs({z: zn, alpha: sp.Symbol("al", positive=True)})
    return bool(up.is_positive) and bool(down.is_nonnegative)


def _output_form(f: sp.Expr, df: sp.Expr) -> tuple[sp.Expr | None, str]:
    if isinstance(f, sp.Piecewise):
        if len(f.args) != 2 or not _sign_preserving(f):
            return None, "piecewise activation whose pieces do not keep the sign of z"
        pieces = []
        for (expr, cond), (dexpr, _) in zip(f.args, df.args, strict=True):
            g = _output_form_smooth(expr, dexpr)
            if g is None:
                return None, "no output form for one of its pieces"
            pieces.append((g, cond.subs(z, a)))
        g = sp.Piecewise(*pieces)
        return g, "solved piece by piece; f keeps the sign of z, so the conditions carry over to a"
    g = _output_form_smooth(f, df)
    if g is None:
        return None, "SymPy found no g with f'(z) = g(f(z)) (or none it could prove), so z is kept"
    return g, "solved a = f(z) for z, substituted into f'(z) and proved g(f(z)) = f'(z)"


@functools.lru_cache(maxsize=256)
def _activation(name: str, expr: sp.Expr, custom: bool) -> ActivationCalculus:
    df = pointwise(sp.diff(expr, z))
    d2f = pointwise(sp.diff(df, z))
    if isinstance(expr, sp.Piecewise):
        df = sp.piecewise_fold(df)
        d2f = sp.piecewise_fold(d2f)
    else:
        df = pointwise(_simplify(df))
        d2f = pointwise(_simplify(d2f))
    d2f = _collapse_piecewise(d2f)
    df_out, how = _output_form(expr, df)
    d2f_out = None
    if df_out is not None:
        # Chain rule on the output form: d/dz g(f(z)) = g'(a) * g(a); proved against f''.
        h = _collapse_piecewise(sp.piecewise_fold(sp.diff(df_out, a) * df_out))
        if not isinstance(h, sp.Piecewise):
            # exp(-a) - exp(-2a) rather than (e^a - 1) e^{-2a}: the factored form overflows
            h = sp.expand(h) if h.has(sp.exp) else sp.factor(h)
        if isinstance(expr, sp.Piecewise) or _proved_equal(h.subs(a, expr), d2f):
            d2f_out = h
    df_z = _readable_z(expr, df, df_out)
    d2f_z = _readable_z(expr, d2f, d2f_out)
    return ActivationCalculus(
        name, expr, df, d2f, df_out, d2f_out, how, custom, df_z=df_z, d2f_z=d2f_z
    )


def _collapse_piecewise(expr: sp.Expr) -> sp.Expr:
    """``Piecewise((c, cond), (c, True))`` is just ``c``."""
    if isinstance(expr, sp.Piecewise) and len({e for e, _ in expr.args}) == 1:
        return expr.args[0][0]
    return expr


def activation_calculus(
    name: str, custom: dict[str, str] | None = None, alpha_value: float | None = None
) -> ActivationCalculus:
    """The calculus of activation ``name`` (built in, or a custom expression in ``z``)."""
    custom = custom or {}
    if name in custom:
        expr = parse_expression(custom[name], {"z": z}, where=f"activations.{name}")
        return _activation(name, expr, True)
    entry = registry.activation(name)
    if entry is None:
        raise KeyError(name)
    definition: ActivationDefinition = entry.definition
    if definition.derive is not None:
        return definition.derive()
    expr = definition.expr
    if expr.has(alpha):
        value = sp.nsimplify(alpha_value) if alpha_value is not None else definition.default
        expr = expr.subs(alpha, value)
    return _activation(name, expr, False)


# ---------------------------------------------------------------------------------------
# Softmax: a vector activation, derived on representative units k and m != k.

zk, zm = sp.symbols("z_k z_m", real=True)
ak, am = sp.symbols("a_k a_m", positive=True)
yk, ym = sp.symbols("y_k y_m", real=True)
_rest = sp.Symbol("r", positive=True)  # sum of exp over the other units


@functools.lru_cache(maxsize=1)
def _softmax() -> ActivationCalculus:
    denom = sp.exp(zk) + sp.exp(zm) + _rest
    f = sp.exp(zk) / denom
    big_d = sp.Symbol("D", positive=True)

    def to_out(e: sp.Expr) -> sp.Expr:
        # Name the denominator D, then e^{z_k} = a_k D and e^{z_m} = a_m D.
        e = e.subs(denom, big_d)
        e = e.subs({sp.exp(zk): ak * big_d, sp.exp(zm): am * big_d})
        return sp.factor(sp.simplify(e))

    d_kk = to_out(sp.diff(f, zk))
    d_km = to_out(sp.diff(f, zm))
    a_k_of_z, a_m_of_z = f, sp.exp(zm) / denom
    for d, raw in ((d_kk, sp.diff(f, zk)), (d_km, sp.diff(f, zm))):
        if d.has(big_d) or not _is_zero(d.subs({ak: a_k_of_z, am: a_m_of_z}) - raw):
            raise AssertionError("softmax output-form proof failed")  # pragma: no cover
    return ActivationCalculus(
        "softmax",
        f,
        sp.ImmutableMatrix([[d_kk, d_km]]),
        sp.Integer(0),
        sp.ImmutableMatrix([[d_kk, d_km]]),
        None,
        "differentiated a_k = e^{z_k} / sum_j e^{z_j} by z_k and by z_m (m != k)",
        vector=True,
    )


define_activation(
    "softmax",
    derive=_softmax,
    output_only=True,
    min_units=2,
    needs_loss=("cross_entropy",),
    classifier=True,
)


# ---------------------------------------------------------------------------------------
# Losses


@dataclass(frozen=True)
class LossCalculus:
    """A loss paired with the output activation, and the fused output delta.

    Attributes:
        ell: the per-unit loss ``l(a, y)``; the cost is ``C = 1/n sum_x sum_j l``.
        dl_da, d2l_da2: from ``sympy.diff``.
        delta: the fused output delta ``dl/dz`` (in ``a, y``; in ``z, y`` when the output
            activation has no output form), simplified.
        s: ``d(delta)/dz`` — the second derivative of the loss by the output's ``z`` (elementwise
            outputs); for softmax the Jacobian is ``diag(s_diag) + s_outer`` (see ``jac_*``).
        stable: the per-unit loss in a numerically stable form, in ``z, y`` where logs of the
            output activation were rewritten (``log a = -softplus(-z)`` ...), else ``a, y``.
        matching: True when ``delta`` is ``a - y`` (the matching-loss case).
    """

    name: str
    ell: sp.Expr
    dl_da: sp.Expr
    d2l_da2: sp.Expr
    delta: sp.Expr
    delta_in_z: bool
    s: sp.Expr
    stable: sp.Expr
    stable_in_z: bool
    matching: bool
    custom: bool = False
    rewrites: tuple = field(default_factory=tuple)
    jac_diag: sp.Expr | None = None
    jac_outer: sp.Expr | None = None


def loss_expression(name: str, custom: dict[str, str] | None = None) -> tuple[sp.Expr, bool]:
    """The per-unit loss ``l(a, y)`` for a built-in or custom loss."""
    custom = custom or {}
    if name in custom:
        return parse_expression(custom[name], {"a": a, "y": y}, where=f"losses.{name}"), True
    entry = registry.loss(name)
    if entry is None:
        raise KeyError(name)
    return entry.definition.expr, False


def _stable_rewrites(act: ActivationCalculus) -> list[tuple[sp.Expr, sp.Expr]]:
    """Proved identities ``log(a) = ...`` in ``z`` that avoid log(0) for this activation."""
    if act.name != "sigmoid" or act.custom:
        return []
    # log a = -softplus(-z) = z - softplus(z), and log(1 - a) = -softplus(z).
    rules = [(sp.log(a), z - softplus(z)), (sp.log(1 - a), -softplus(z))]
    proved = []
    for lhs, rhs in rules:
        # exp of both sides must agree: exp(log(x)) = x, exp(-softplus(w)) = 1/(1+exp(w)).
        left = sp.exp(lhs.subs(a, act.f))
        right = sp.exp(rhs.rewrite(sp.exp))
        if _is_zero(left - right):
            proved.append((lhs, rhs))
    return proved


def _shifted(expr: sp.Expr) -> list[sp.Expr]:
    """``expr`` simplified in ``d = a - y`` and written back with ``(a - y)`` kept whole."""
    d = sp.Symbol("d_", real=True)
    e = attempt(SIMPLIFY_BUDGET, lambda x: sp.factor(_simplify(x.subs(a, d + y))), expr)
    if e is None or e.has(a):
        return []
    return [tidy(e.subs(d, a - y)), e.subs(d, a - y)]


def _readable_factor(expr: sp.Expr) -> sp.Expr:
    """The most readable of ``expr`` and its ``(a - y)`` form."""
    return readable([expr, *_shifted(expr)], expr)


@functools.lru_cache(maxsize=256)
def _loss(name: str, ell: sp.Expr, custom: bool, act: ActivationCalculus) -> LossCalculus:
    dl_da = pointwise(_simplify(pointwise(sp.diff(ell, a))))
    d2l_da2 = pointwise(_simplify(pointwise(sp.diff(dl_da, a))))
    if act.vector:
        return _softmax_loss(name, ell, custom, act, dl_da, d2l_da2)
    if act.has_output_form:
        delta = tidy(sp.factor(_simplify(dl_da * act.df_out)))
        delta_in_z = False
        s = tidy(sp.factor(_simplify(pointwise(sp.diff(delta, a) * act.df_out))))
        if custom:
            # readable forms: (a - y) kept whole; s = l''(a) f'^2 + l'(a) f'' (the chain rule)
            delta = readable([delta, *_shifted(delta)], delta)
            fpp = act.d2f_out if act.d2f_out is not None else sp.diff(act.df_out, a) * act.df_out
            chain = _readable_factor(d2l_da2) * act.df_out**2 + _readable_factor(dl_da) * fpp
            s = readable([s, *_shifted(s), chain], s)
    else:
        delta = _simplify(dl_da.subs(a, act.f) * act.df)
        delta_in_z = True
        s = _simplify(pointwise(sp.diff(delta, z)))
    if isinstance(s, sp.Piecewise):
        s = _collapse_piecewise(sp.piecewise_fold(s))
    rewrites = _stable_rewrites(act)
    stable, stable_in_z = ell, False
    if rewrites:
        expanded = sp.expand_log(sp.expand(ell), force=True)
        rewritten = expanded.subs(dict(rewrites))
        if not rewritten.has(a):
            stable, stable_in_z = sp.collect(sp.expand(rewritten), y), True
    elif delta_in_z:
        stable, stable_in_z = ell.subs(a, act.f), True
    matching = (not delta_in_z) and sp.expand(delta - (a - y)) == 0
    return LossCalculus(
        name,
        ell,
        dl_da,
        d2l_da2,
        delta,
        delta_in_z,
        s,
        stable,
        stable_in_z,
        matching,
        custom,
        tuple(rewrites),
    )


def _softmax_loss(name, ell, custom, act, dl_da, d2l_da2) -> LossCalculus:
    """Softmax output: delta_m = sum_k dl/da_k da_k/dz_m, with sum_k y_k = 1."""
    g = lambda av, yv: dl_da.subs({a: av, y: yv})  # noqa: E731
    d_kk, d_km = act.df_out[0, 0], act.df_out[0, 1]
    # Split the sum over k into k = m and k != m (representative unit k).
    own = g(am, ym) * d_kk.subs({ak: am})
    k = sp.Symbol("k", integer=True)
    n_out = sp.Symbol("K", integer=True, positive=True)
    ai, yi = sp.IndexedBase("a"), sp.IndexedBase("y")
    others = sp.Sum(g(ai[k], yi[k]) * d_km.subs({ak: ai[k], am: am}), (k, 1, n_out))
    others = others - g(am, ym) * d_km.subs({ak: am})  # remove k = m from the full sum
    total = sp.expand(own + sp.factor_terms(sp.expand(others)))
    total = total.subs(sp.Sum(yi[k], (k, 1, n_out)), 1)  # targets are one-hot: sum_k y_k = 1
    delta = sp.factor(_simplify(total)).subs({am: a, ym: y})
    if delta.has(sp.Sum):
        raise ValueError("softmax is supported with cross_entropy only")
    # Jacobian of delta by z: d delta_m / d z_p = d a_m / d z_p for delta = a - y.
    jac_diag = d_kk.subs({ak: a}) + a * a  # diagonal part: a (1 - a) + a^2 = a
    jac_diag = sp.factor(jac_diag)
    # Off-diagonal part d a_k / d z_m = u(a_k) v(a_m): the rank-one term u v^T of the Jacobian.
    u_part = sp.simplify(d_km / am)
    if u_part.has(am):
        raise ValueError("softmax Jacobian is not diagonal plus rank one")  # pragma: no cover
    jac_outer = (u_part.subs(ak, a), a)
    lse = logsumexp(z)
    stable = sp.expand(ell.subs(sp.log(a), z - lse))
    return LossCalculus(
        name,
        ell,
        dl_da,
        d2l_da2,
        delta,
        False,
        jac_diag,
        stable,
        True,
        sp.expand(delta - (a - y)) == 0,
        custom,
        ((sp.log(a), z - lse),),
        jac_diag=jac_diag,
        jac_outer=jac_outer,
    )


def loss_calculus(
    name: str, output: ActivationCalculus, custom: dict[str, str] | None = None
) -> LossCalculus:
    """The calculus of loss ``name`` combined with the output activation ``output``."""
    ell, is_custom = loss_expression(name, custom)
    return _loss(name, ell, is_custom, output)
