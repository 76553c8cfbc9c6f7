"""Symbolic truth: the derivation's backpropagation against ``sympy.diff`` of unrolled networks.

Every network here is written out unit by unit from scalar SymPy symbols ``w_l_j_i``, ``b_l_j``,
``x_s_i`` and ``y_s_j``; its cost is one scalar expression built from the activations' ``f`` and
the loss's ``ell``. ``sympy.diff`` of that cost is the truth. Against it we check

* the derivation's recurrence (output delta, ``df_l`` and the sum over downstream units),
  evaluated at 50 digits, to 1e-20 relative, for every weight and bias;
* the generated trainer's gradient, exact Hessian and Hessian-vector product (float64);
* the activations' output forms and the fused output deltas, exactly.

To keep SymPy fast, a derivative by ``p`` (or by ``p`` and ``q``) is taken of the cost in which
every other symbol already holds its (50-digit) value: that is the same partial derivative at the
same point. Piecewise activations use the piece that is active at the point (no pre-activation
is within 0.05 of a kink), which is the same function in a neighbourhood of the point.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import calculus as calc

DIGITS = 50  # working precision of the points and of every intermediate value
REL = sp.Float("1e-20")  # agreement demanded of the derived gradient
TINY = sp.Float("1e-40")  # below this both sides count as zero
KINK_MARGIN = sp.Rational(1, 20)  # every pre-activation keeps this far from 0

HIDDEN = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu")
OUTPUT_MSE = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu")
PIECEWISE = ("relu", "leaky_relu", "elu")


SWISH = "z / (1 + exp(-z))"
SMOOTH = "log(1 + exp(z))"
LOGISTIC = "1 / (1 + exp(-z))"
CAUCHY = "log(1 + (a - y)**2)"
CUBE = "z**3 / 3 + z"
PSEUDO_HUBER = "sqrt(1 + (a - y)**2) - 1"


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """Generated trainers go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYMGRAD_CACHE", str(tmp_path_factory.mktemp("symgrad-cache")))
        yield


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A small network: ``sizes`` from the input to the output, one activation per layer."""

    id: str
    sizes: tuple[int, ...]
    acts: tuple[str, ...]
    loss: str
    samples: int = 1
    alphas: tuple = ()
    l2: str = "0"
    l1: str = "0"
    activations: tuple = ()  # custom (name, expression) pairs
    losses: tuple = ()
    seed: int = 0
    marks: tuple = field(default=(), compare=False)
    slow_hessian: bool = field(default=False, compare=False)  # SymPy needs > 4 s for it

    def spec(self) -> dict:
        layers = []
        for i, (units, act) in enumerate(zip(self.sizes[1:], self.acts)):
            layer = {"units": units, "activation": act}
            if i < len(self.alphas) and self.alphas[i] is not None:
                layer["alpha"] = self.alphas[i]
            layers.append(layer)
        spec = {
            "name": "sym_" + re.sub(r"\W", "_", self.id),
            "inputs": self.sizes[0],
            "layers": layers,
            "loss": self.loss,
            "regularization": {"l2": float(self.l2), "l1": float(self.l1)},
            "activations": dict(self.activations),
            "losses": dict(self.losses),
        }
        return spec

    @property
    def param(self):
        return pytest.param(self, id=self.id, marks=self.marks)

    @property
    def hessian_param(self):
        marks = self.marks + ((pytest.mark.slow,) if self.slow_hessian else ())
        return pytest.param(self, id=self.id, marks=marks)


def _cases() -> list[Case]:
    out: list[Case] = []
    # depth 1: every output activation with mse (two output units), the two matching losses
    for act in OUTPUT_MSE:
        out.append(Case(f"d1-{act}-mse", (2, 2), (act,), "mse"))
    out.append(Case("d1-sigmoid-log_loss", (3, 1), ("sigmoid",), "log_loss"))
    out.append(Case("d1-softmax-cross_entropy", (1, 3), ("softmax",), "cross_entropy"))
    # depth 2: every hidden activation under each output family
    outputs = dict(
        zip(HIDDEN, ("tanh", "sigmoid", "identity", "softplus", "elu", "relu", "leaky_relu"))
    )
    for act in HIDDEN:
        out.append(
            Case(f"d2-{act}-{outputs[act]}-mse", (2, 2, 2), (act, outputs[act]), "mse", seed=1)
        )
        out.append(
            Case(f"d2-{act}-sigmoid-log_loss", (2, 2, 1), (act, "sigmoid"), "log_loss", seed=2)
        )
    # (SymPy's second derivatives of a written-out softmax are slow: most run with -m slow)
    for act in ("tanh", "relu", "softplus"):
        out.append(
            Case(
                f"d2-{act}-softmax-cross_entropy",
                (2, 3, 2),
                (act, "softmax"),
                "cross_entropy",
                seed=3,
                slow_hessian=True,
            )
        )
    for act in ("sigmoid", "identity", "leaky_relu", "elu"):
        out.append(
            Case(
                f"d2-{act}-softmax-cross_entropy",
                (2, 2, 2),
                (act, "softmax"),
                "cross_entropy",
                seed=3,
                slow_hessian=act != "identity",
            )
        )
    # alpha values other than the defaults
    out.append(
        Case(
            "d2-leaky_relu0.2-elu0.5-mse",
            (2, 2, 1),
            ("leaky_relu", "elu"),
            "mse",
            alphas=(0.2, 0.5),
            seed=4,
        )
    )
    # two samples: the 1/n average; regularisation (weights only)
    out.append(
        Case(
            "d2-tanh-sigmoid-log_loss-n2",
            (1, 2, 1),
            ("tanh", "sigmoid"),
            "log_loss",
            samples=2,
            seed=5,
        )
    )
    out.append(
        Case(
            "d2-relu-softmax-n2",
            (2, 2, 2),
            ("relu", "softmax"),
            "cross_entropy",
            samples=2,
            seed=6,
            slow_hessian=True,
        )
    )
    out.append(
        Case(
            "d2-sigmoid-identity-mse-l2-l1-n2",
            (2, 2, 1),
            ("sigmoid", "identity"),
            "mse",
            samples=2,
            l2="0.1",
            l1="0.05",
            seed=7,
        )
    )
    # depth 3, including seed 002's node-numbered network 1 -> {2,3} -> {4,5} -> 6
    out.append(Case("d3-seed002", (1, 2, 2, 1), ("relu", "relu", "sigmoid"), "mse", seed=8))
    out.append(
        Case("d3-seed002-n2", (1, 2, 2, 1), ("relu", "relu", "sigmoid"), "mse", samples=2, seed=9)
    )
    out.append(
        Case("d3-tanh-elu-identity-mse", (1, 2, 2, 1), ("tanh", "elu", "identity"), "mse", seed=10)
    )
    out.append(
        Case(
            "d3-softplus-sigmoid-log_loss",
            (1, 1, 2, 1),
            ("softplus", "sigmoid", "sigmoid"),
            "log_loss",
            seed=11,
        )
    )
    out.append(
        Case(
            "d3-sigmoid-leaky_relu-softmax",
            (1, 2, 2, 2),
            ("sigmoid", "leaky_relu", "softmax"),
            "cross_entropy",
            seed=12,
            slow_hessian=True,
        )
    )
    # custom activations and a custom loss (need the expression parser)
    custom = ()
    out.append(
        Case(
            "custom-swish-identity-cauchy",
            (2, 2, 1),
            ("swish", "identity"),
            "cauchy",
            activations=(("swish", SWISH),),
            losses=(("cauchy", CAUCHY),),
            seed=13,
            marks=custom,
        )
    )
    out.append(
        Case(
            "custom-smooth-swish-mse",
            (1, 2, 1),
            ("smooth", "swish"),
            "mse",
            activations=(("smooth", SMOOTH), ("swish", SWISH)),
            seed=14,
            marks=custom,
        )
    )
    out.append(
        Case(
            "custom-swish-logistic-log_loss-n2",
            (1, 2, 1),
            ("swish", "logistic"),
            "log_loss",
            samples=2,
            activations=(("swish", SWISH), ("logistic", LOGISTIC)),
            seed=15,
            marks=custom,
        )
    )
    out.append(
        Case(
            "custom-smooth-sigmoid-cauchy",
            (1, 2, 2),
            ("smooth", "sigmoid"),
            "cauchy",
            losses=(("cauchy", CAUCHY),),
            activations=(("smooth", SMOOTH),),
            seed=16,
            marks=custom,
        )
    )
    out.append(
        Case(
            "custom-cube-expo-pseudo_huber",
            (1, 2, 1),
            ("cube", "expo"),
            "pseudo_huber",
            activations=(("cube", CUBE), ("expo", "exp(z)")),
            losses=(("pseudo_huber", PSEUDO_HUBER),),
            seed=17,
            marks=custom,
        )
    )
    return out


CASES = _cases()


# ---------------------------------------------------------------------------------------------
# The unrolled network
# ---------------------------------------------------------------------------------------------


def _apply(f: sp.Expr, zz: sp.Expr, point: dict) -> sp.Expr:
    """``f(zz)``; for a piecewise ``f`` the piece active at ``point`` (never at a kink)."""
    if not isinstance(f, sp.Piecewise):
        return f.subs(calc.z, zz)
    at = sp.N(zz.xreplace(point), DIGITS)
    assert at.is_number and abs(at) > KINK_MARGIN, f"pre-activation {at} at a kink"
    for expr, cond in f.args:
        if cond.subs(calc.z, at) == sp.true:
            return expr.subs(calc.z, zz)
    raise AssertionError(f"no piece of {f} holds at z = {at}")  # pragma: no cover


class Net:
    """A case unrolled into scalar symbols, its point, its derivation and its trainer."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.spec = symgrad.load_spec(case.spec())
        self.d = symgrad.derive(self.spec)
        sizes = case.sizes
        self.W: dict[int, list[list[sp.Symbol]]] = {}
        self.B: dict[int, list[sp.Symbol]] = {}
        self.params: list[sp.Symbol] = []  # in the trainer's get_flat order
        for l in range(1, len(sizes)):
            self.W[l] = [
                [sp.Symbol(f"w_{l}_{j}_{i}", real=True) for i in range(sizes[l - 1])]
                for j in range(sizes[l])
            ]
            self.B[l] = [sp.Symbol(f"b_{l}_{j}", real=True) for j in range(sizes[l])]
            self.params += [w for row in self.W[l] for w in row] + self.B[l]
        self.weights = [w for l in self.W for row in self.W[l] for w in row]
        n = case.samples
        self.X = [[sp.Symbol(f"x_{s}_{i}", real=True) for i in range(sizes[0])] for s in range(n)]
        self.Y = [[sp.Symbol(f"y_{s}_{j}", real=True) for j in range(sizes[-1])] for s in range(n)]
        self.point = self._choose_point()
        self.fpoint = {k: sp.Float(v, DIGITS) for k, v in self.point.items()}

    # -- the cost as one expression ------------------------------------------------------------
    def forward(self, s: int, val: dict, point: dict) -> list[tuple[list, list]]:
        """[(z_l, a_l)] for sample s; symbols in ``val`` are replaced by their values."""
        a = [val.get(x, x) for x in self.X[s]]
        out = [([], a)]
        for layer in self.d.layers:
            l, act = layer.index, layer.activation
            zs = [
                sp.Add(*[val.get(w, w) * ai for w, ai in zip(self.W[l][j], a)])
                + val.get(self.B[l][j], self.B[l][j])
                for j in range(layer.units)
            ]
            if act.vector:  # softmax, written out
                e = [sp.exp(zj) for zj in zs]
                total = sp.Add(*e)
                a = [ej / total for ej in e]
            else:
                a = [_apply(act.f, zj, point) for zj in zs]
            out.append((zs, a))
        return out

    def cost(self, free: tuple = ()) -> sp.Expr:
        """The cost C with every symbol except ``free`` at the point (all free: symbolic)."""
        val = {k: v for k, v in self.fpoint.items() if k not in free}
        n = self.case.samples
        total = sp.Integer(0)
        for s in range(n):
            a_out = self.forward(s, val, self.fpoint)[-1][1]
            for aj, yj in zip(a_out, self.Y[s]):
                total += self.d.loss.ell.subs({calc.a: aj, calc.y: val.get(yj, yj)})
        total = total / n
        l2, l1 = sp.Rational(self.case.l2), sp.Rational(self.case.l1)
        for w in self.weights:
            wv = val.get(w, w)
            total += l2 / (2 * n) * wv**2 + l1 / n * sp.Abs(wv)
        return total

    # -- the point -----------------------------------------------------------------------------
    def _choose_point(self) -> dict:
        rng = random.Random(f"{self.case.id}:{self.case.seed}")

        def nonzero(lo: int, hi: int, den: int) -> sp.Rational:
            return sp.Rational(rng.choice([k for k in range(lo, hi + 1) if k]), den)

        for _ in range(500):
            point = {}
            for l in self.W:
                for row in self.W[l]:
                    for w in row:
                        point[w] = nonzero(-12, 12, 8)
                for b in self.B[l]:
                    point[b] = nonzero(-4, 8, 8)  # mostly positive: relu units stay alive
            for xs in self.X:
                for x in xs:
                    point[x] = nonzero(-8, 8, 4)
            for ys in self.Y:
                point.update(zip(ys, self._targets(rng, len(ys))))
            if self._acceptable(point):
                return point
        raise AssertionError(f"{self.case.id}: no point away from the kinks")  # pragma: no cover

    def _targets(self, rng: random.Random, k: int) -> list[sp.Rational]:
        out_act = self.case.acts[-1]
        if out_act == "softmax":  # a probability vector (sum y = 1), not always one-hot
            w = [rng.randint(0, 3) for _ in range(k)]
            if sum(w) == 0:
                w[rng.randrange(k)] = 1
            return [sp.Rational(v, sum(w)) for v in w]
        if self.case.loss == "log_loss" or out_act == "sigmoid":
            return [sp.Rational(rng.choice([0, 1, 4, 1, 3]), 4) for _ in range(k)]
        return [sp.Rational(rng.randint(-6, 6), 4) for _ in range(k)]

    def _acceptable(self, point: dict) -> bool:
        fpoint = {k: sp.Float(v, DIGITS) for k, v in point.items()}
        for s in range(self.case.samples):
            a = [fpoint[x] for x in self.X[s]]
            for layer in self.d.layers:
                l = layer.index
                zs = [
                    sum(fpoint[w] * ai for w, ai in zip(self.W[l][j], a)) + fpoint[self.B[l][j]]
                    for j in range(layer.units)
                ]
                if any(abs(zj) <= KINK_MARGIN for zj in zs):
                    return False
                if layer.activation.name == "relu" and all(zj < 0 for zj in zs):
                    return False  # a dead layer would make the check vacuous
                if layer.activation.vector:
                    break
                a = [sp.N(layer.activation.f.subs(calc.z, zj), DIGITS) for zj in zs]
        return True

    # -- the derivation's gradient ------------------------------------------------------------
    @functools.cached_property
    def derived_gradient(self) -> dict[sp.Symbol, sp.Expr]:
        """dC/dp by the derivation's recurrence, at the point (50 digits)."""
        d, n = self.d, self.case.samples
        L = d.depth
        grad = {p: sp.Integer(0) for p in self.params}
        delta_out = d["delta_out"]
        for s in range(n):
            fw = self.forward(s, self.fpoint, self.fpoint)
            fw = [([sp.N(v, DIGITS) for v in zs], [sp.N(v, DIGITS) for v in a]) for zs, a in fw]
            zs, a_out = fw[L]
            ys = [self.fpoint[y] for y in self.Y[s]]
            if d.loss.delta_in_z:
                assert delta_out.free_symbols <= {calc.z, calc.y}
                delta = [delta_out.subs({calc.z: zj, calc.y: yj}) for zj, yj in zip(zs, ys)]
            else:
                assert delta_out.free_symbols <= {calc.a, calc.y}
                delta = [delta_out.subs({calc.a: aj, calc.y: yj}) for aj, yj in zip(a_out, ys)]
            for l in range(L, 0, -1):
                a_prev = fw[l - 1][1]
                for j in range(len(delta)):
                    for i in range(len(a_prev)):
                        grad[self.W[l][j][i]] += delta[j] * a_prev[i] / n
                    grad[self.B[l][j]] += delta[j] / n
                if l == 1:
                    break
                layer = d.layers[l - 2]  # layer l - 1
                df = d[f"df_{l - 1}"]
                var = calc.a if layer.activation.has_output_form else calc.z
                assert df.free_symbols <= {var}, (df, var)
                at = fw[l - 1][1] if var == calc.a else fw[l - 1][0]
                delta = [
                    df.subs(var, at[i])
                    * sp.Add(*[self.fpoint[self.W[l][j][i]] * delta[j] for j in range(len(delta))])
                    for i in range(len(at))
                ]
        l2, l1 = sp.Rational(self.case.l2), sp.Rational(self.case.l1)
        for w in self.weights:
            grad[w] += l2 / n * self.fpoint[w] + l1 / n * sp.sign(self.fpoint[w])
        return {p: sp.N(g, 30) for p, g in grad.items()}

    # -- sympy.diff ----------------------------------------------------------------------------
    @functools.cached_property
    def true_gradient(self) -> dict[sp.Symbol, sp.Expr]:
        out = {}
        for p in self.params:
            g = sp.diff(self.cost((p,)), p)
            assert g.free_symbols <= {p}
            out[p] = sp.N(g.xreplace({p: self.fpoint[p]}), 30)
        return out

    @functools.cached_property
    def true_hessian(self) -> np.ndarray:
        P = len(self.params)
        H = np.empty((P, P))
        for r, p in enumerate(self.params):
            for c in range(r, P):
                q = self.params[c]
                h = sp.diff(sp.diff(self.cost((p, q)), p), q)
                value = sp.N(h.xreplace({p: self.fpoint[p], q: self.fpoint[q]}), 30)
                assert value.is_number, value
                H[r, c] = H[c, r] = float(value)
        return H

    # -- the generated trainer -----------------------------------------------------------------
    @functools.cached_property
    def trainer(self):
        t = symgrad.load_trainer(self.spec)
        t.set_flat(np.array([float(self.point[p]) for p in self.params]))
        return t

    @property
    def XY(self) -> tuple[np.ndarray, np.ndarray]:
        X = np.array([[float(self.point[x]) for x in xs] for xs in self.X])
        Y = np.array([[float(self.point[y]) for y in ys] for ys in self.Y])
        return X, Y


@functools.cache
def net(case: Case) -> Net:
    return Net(case)


def _close(truth: sp.Expr, derived: sp.Expr) -> bool:
    return abs(truth - derived) <= REL * max(abs(truth), abs(derived)) + TINY


# ---------------------------------------------------------------------------------------------
# Gradients and Hessians
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c.param for c in CASES])
def test_derived_gradient_equals_sympy_diff(case: Case) -> None:
    m = net(case)
    truth, derived = m.true_gradient, m.derived_gradient
    assert len(truth) == len(m.params) == m.spec.n_params
    bad = {str(p): (truth[p], derived[p]) for p in m.params if not _close(truth[p], derived[p])}
    assert not bad, f"dC/dp: sympy.diff vs the derivation's recurrence differ: {bad}"
    # the test is not vacuous: some gradient is clearly nonzero
    assert max(abs(v) for v in truth.values()) > 1e-6


@pytest.mark.parametrize("case", [c.param for c in CASES])
def test_trainer_loss_and_gradient_equal_sympy(case: Case) -> None:
    m = net(case)
    X, Y = m.XY
    t = m.trainer
    cost = sp.N(m.cost(), 30)
    assert cost.is_number
    assert t.loss(X, Y) == pytest.approx(float(cost), rel=1e-12, abs=1e-15)
    g = t.gradient_flat(X, Y)
    truth = np.array([float(m.true_gradient[p]) for p in m.params])
    np.testing.assert_allclose(g, truth, rtol=1e-10, atol=1e-13)
    named = t.gradients(X, Y)
    for layer in m.d.layers:
        l = layer.index
        assert named[f"dC_dW_{l}"].shape == (layer.units, layer.fan_in)
        for j in range(layer.units):
            assert named[f"dC_db_{l}"][j] == pytest.approx(
                float(m.true_gradient[m.B[l][j]]), rel=1e-10, abs=1e-13
            )
            for i in range(layer.fan_in):
                assert named[f"dC_dW_{l}"][j, i] == pytest.approx(
                    float(m.true_gradient[m.W[l][j][i]]), rel=1e-10, abs=1e-13
                )


@pytest.mark.parametrize("case", [c.hessian_param for c in CASES])
def test_trainer_hessian_equals_sympy_second_derivatives(case: Case) -> None:
    m = net(case)
    X, Y = m.XY
    t = m.trainer
    truth = m.true_hessian
    scale = max(1.0, float(np.abs(truth).max()))
    H = t.hessian(X, Y)
    assert H.shape == truth.shape
    np.testing.assert_allclose(H, truth, rtol=1e-9, atol=1e-12 * scale)
    v = np.random.default_rng(0).standard_normal(len(m.params))
    np.testing.assert_allclose(t.hvp(X, Y, v), truth @ v, rtol=1e-9, atol=1e-11 * scale)


def test_parameter_layout_matches_the_symbols() -> None:
    """get_flat order is W_1 row-major, b_1, W_2, ...: symbol w_l_j_i is W_l[j, i]."""
    m = net(next(c for c in CASES if c.id == "d3-seed002"))
    t = m.trainer
    for l in m.W:
        for j, row in enumerate(m.W[l]):
            assert getattr(t, f"b_{l}")[j] == float(m.point[m.B[l][j]])
            for i, w in enumerate(row):
                assert getattr(t, f"W_{l}")[j, i] == float(m.point[w])
    np.testing.assert_array_equal(t.get_flat(), [float(m.point[p]) for p in m.params])


# ---------------------------------------------------------------------------------------------
# Output forms
# ---------------------------------------------------------------------------------------------

a, z, y = calc.a, calc.z, calc.y

OUTPUT_FORMS = {
    "identity": sp.Integer(1),
    "sigmoid": a * (1 - a),
    "tanh": 1 - a**2,
    "softplus": 1 - sp.exp(-a),
    "relu": sp.Piecewise((1, a > 0), (0, True)),
    "leaky_relu": sp.Piecewise((1, a > 0), (sp.Rational(1, 100), True)),
    "elu": sp.Piecewise((1, a > 0), (a + 1, True)),
}


def _zero(expr: sp.Expr) -> bool:
    """SymPy proves ``expr == 0`` (hyperbolic functions rewritten as exponentials first)."""
    expr = sp.sympify(expr)
    if expr == 0:
        return True
    form = expr.rewrite(sp.exp)
    return sp.simplify(form) == 0 or sp.cancel(sp.expand(form)) == 0


def _same(left: sp.Expr, right: sp.Expr) -> bool:
    """Equal as expressions in a: expanded difference 0 (piecewise: piece by piece)."""
    if isinstance(left, sp.Piecewise) or isinstance(right, sp.Piecewise):
        if not (isinstance(left, sp.Piecewise) and isinstance(right, sp.Piecewise)):
            return False
        if len(left.args) != len(right.args):
            return False
        return all(
            c1 == c2 and sp.expand(e1 - e2) == 0
            for (e1, c1), (e2, c2) in zip(left.args, right.args)
        )
    return sp.expand(left - right) == 0


def _proved(out_form: sp.Expr, f: sp.Expr, derivative: sp.Expr) -> bool:
    """``out_form(f(z)) == derivative(z)``; piecewise ones on z > 0 and on z < 0 separately."""
    if isinstance(f, sp.Piecewise) or isinstance(out_form, sp.Piecewise):
        zp, zn = sp.Symbol("zp", positive=True), sp.Symbol("zn", negative=True)
        return all(_zero(out_form.subs(a, f.subs(z, s)) - derivative.subs(z, s)) for s in (zp, zn))
    return _zero(out_form.subs(a, f) - derivative)


@pytest.mark.parametrize("name", list(OUTPUT_FORMS))
def test_builtin_output_forms(name: str) -> None:
    act = calc.activation_calculus(name)
    assert act.has_output_form
    assert act.df_out.free_symbols <= {a}
    assert _same(act.df_out, OUTPUT_FORMS[name]), act.df_out
    # df and d2f are sympy.diff of f
    assert _zero(act.df - sp.diff(act.f, z))
    assert _zero(act.d2f - sp.diff(act.f, z, 2))
    # each output form is a proof: g(f(z)) == f'(z), h(f(z)) == f''(z)
    assert _proved(act.df_out, act.f, act.df)
    assert act.d2f_out is not None
    assert act.d2f_out.free_symbols <= {a}
    assert _proved(act.d2f_out, act.f, act.d2f)


def test_sigmoid_second_output_form() -> None:
    """f'' = a (1 - a)(1 - 2a) for the sigmoid (the chain rule on a (1 - a))."""
    act = calc.activation_calculus("sigmoid")
    assert sp.expand(act.d2f_out - a * (1 - a) * (1 - 2 * a)) == 0


@pytest.mark.parametrize("name, alpha", [("leaky_relu", 0.2), ("elu", 0.5), ("elu", 2.0)])
def test_alpha_reaches_the_calculus(name: str, alpha: float) -> None:
    act = calc.activation_calculus(name, alpha_value=alpha)
    al = sp.nsimplify(alpha)
    expected_f = {
        "leaky_relu": sp.Piecewise((z, z > 0), (al * z, True)),
        "elu": sp.Piecewise((z, z > 0), (al * (sp.exp(z) - 1), True)),
    }[name]
    assert _same(act.f.subs(z, a), expected_f.subs(z, a))
    expected_out = {
        "leaky_relu": sp.Piecewise((1, a > 0), (al, True)),
        "elu": sp.Piecewise((1, a > 0), (a + al, True)),
    }[name]
    assert _same(act.df_out, expected_out), act.df_out
    assert _proved(act.df_out, act.f, act.df)


def test_softmax_output_form() -> None:
    act = calc.activation_calculus("softmax")
    assert act.vector
    assert act.df_out.shape == (1, 2)
    ak, am = calc.ak, calc.am
    assert sp.expand(act.df_out[0, 0] - ak * (1 - ak)) == 0
    assert sp.expand(act.df_out[0, 1] + ak * am) == 0
    # the proof on three written-out units
    z1, z2, z3 = sp.symbols("z1:4", real=True)
    total = sp.exp(z1) + sp.exp(z2) + sp.exp(z3)
    a1, a2 = sp.exp(z1) / total, sp.exp(z2) / total
    for form, var in ((act.df_out[0, 0], z1), (act.df_out[0, 1], z2)):
        assert _zero(form.subs({ak: a1, am: a2}) - sp.diff(a1, var))


def test_custom_output_forms() -> None:
    custom = {"expo": "exp(z)", "swish": SWISH, "smooth": SMOOTH, "logistic": LOGISTIC}
    expo = calc.activation_calculus("expo", custom)
    assert expo.custom
    assert sp.expand(expo.df_out - a) == 0
    assert _proved(expo.df_out, expo.f, expo.df)
    swish = calc.activation_calculus("swish", custom)
    assert swish.df_out is None and swish.d2f_out is None
    assert not swish.has_output_form
    assert _zero(swish.df - sp.diff(z / (1 + sp.exp(-z)), z))
    smooth = calc.activation_calculus("smooth", custom)
    assert _zero(smooth.df_out - (1 - sp.exp(-a)))
    assert _proved(smooth.df_out, smooth.f, smooth.df)
    logistic = calc.activation_calculus("logistic", custom)
    assert sp.expand(logistic.df_out - a * (1 - a)) == 0


def test_derivation_keeps_z_without_output_form() -> None:
    spec = symgrad.load_spec(
        {
            "name": "keeps_z",
            "inputs": 2,
            "activations": {"swish": SWISH},
            "layers": [{"units": 2, "activation": "swish"}, {"units": 1, "activation": "swish"}],
            "loss": "mse",
        }
    )
    d = symgrad.derive(spec)
    assert d["df_1"].free_symbols == {z}
    assert d.loss.delta_in_z
    assert d["delta_out"].free_symbols <= {z, y}
    swish = z / (1 + sp.exp(-z))
    assert _zero(d["delta_out"] - (swish - y) * sp.diff(swish, z))


# ---------------------------------------------------------------------------------------------
# Fused output deltas
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "out, loss",
    [("sigmoid", "log_loss"), ("softmax", "cross_entropy"), ("identity", "mse")],
)
def test_matching_losses_fuse_to_a_minus_y(out: str, loss: str) -> None:
    lc = calc.loss_calculus(loss, calc.activation_calculus(out))
    assert not lc.delta_in_z
    assert sp.expand(lc.delta - (a - y)) == 0
    assert lc.matching


@pytest.mark.parametrize("out", ["sigmoid", "tanh", "softplus"])
def test_mse_delta_is_error_times_output_form(out: str) -> None:
    act = calc.activation_calculus(out)
    lc = calc.loss_calculus("mse", act)
    assert not lc.matching
    assert sp.expand(lc.delta - (a - y) * act.df_out) == 0


def test_sigmoid_mse_delta() -> None:
    lc = calc.loss_calculus("mse", calc.activation_calculus("sigmoid"))
    assert sp.expand(lc.delta - (a - y) * a * (1 - a)) == 0
    # s = d delta / dz = d delta / da * a (1 - a)
    assert sp.expand(lc.s - sp.diff((a - y) * a * (1 - a), a) * a * (1 - a)) == 0


@pytest.mark.parametrize("name", ["mse", "log_loss", "cross_entropy"])
def test_builtin_losses_and_derivatives(name: str) -> None:
    ell = {
        "mse": (a - y) ** 2 / 2,
        "log_loss": -(y * sp.log(a) + (1 - y) * sp.log(1 - a)),
        "cross_entropy": -y * sp.log(a),
    }[name]
    out = {"mse": "identity", "log_loss": "sigmoid", "cross_entropy": "softmax"}[name]
    lc = calc.loss_calculus(name, calc.activation_calculus(out))
    assert _zero(lc.ell - ell)
    assert _zero(lc.dl_da - sp.diff(ell, a))


def test_log_loss_stable_form_is_the_same_function() -> None:
    """The logit form of the log loss (no log(0)) equals the loss at a = sigmoid(z)."""
    act = calc.activation_calculus("sigmoid")
    lc = calc.loss_calculus("log_loss", act)
    assert lc.stable_in_z
    assert lc.stable.free_symbols <= {z, y}
    exact = lc.ell.subs(a, act.f)
    stable = lc.stable.rewrite(sp.exp)
    for zv in (sp.Rational(-7, 3), sp.Rational(1, 5), 4):
        for yv in (0, sp.Rational(1, 4), 1):
            at = {z: zv, y: yv}
            assert abs(sp.N(exact.subs(at) - stable.subs(at), 30)) < 1e-25


def test_custom_loss_calculus() -> None:
    lc = calc.loss_calculus("cauchy", calc.activation_calculus("identity"), {"cauchy": CAUCHY})
    assert lc.custom
    assert _zero(lc.ell - sp.log(1 + (a - y) ** 2))
    assert _zero(lc.delta - 2 * (a - y) / (1 + (a - y) ** 2))
    assert not lc.matching
