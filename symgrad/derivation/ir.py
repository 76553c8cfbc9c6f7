"""The Derivation: the single intermediate representation between a spec and its printers.

It holds the SymPy expressions of one representative unit per layer (so its cost grows with
the number of layers, never with their widths) and the numbered equations that explain them.
The LaTeX printer and the code generator both read it; neither does calculus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .. import calculus as C
from ..spec import Spec

# Representative symbols of the chain rule (unit i in layer l-1, unit j in layer l).
w_ji, a_i, b_j, r_j = sp.symbols("w_ji a_i b_j r_j", real=True)


@dataclass(frozen=True)
class Equation:
    """One numbered equation of the derivation.

    ``latex`` is the display-math body (no environment); ``text`` one sentence of prose;
    ``exprs`` the SymPy expressions it shows, by name.
    """

    key: str
    number: int
    section: str
    latex: str
    text: str = ""
    exprs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LayerCalculus:
    """What the derivation knows about layer ``index`` (1-based)."""

    index: int
    units: int
    fan_in: int
    activation: C.ActivationCalculus

    @property
    def is_output(self) -> bool:
        return False


class Derivation:
    """Gradients, Hessians and their explanation for one spec.

    Expressions are reachable by name (``derivation["delta_out"]``, ``derivation["df_1"]``);
    equations by key (``derivation.equation("backprop.1")``). Renders itself in Jupyter.
    """

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.layers: list[LayerCalculus] = []
        sizes = spec.sizes
        for i, layer in enumerate(spec.layers):
            act = C.activation_calculus(layer.activation, spec.activations, layer.alpha)
            self.layers.append(LayerCalculus(i + 1, layer.units, sizes[i], act))
        self.output = self.layers[-1].activation
        self.loss = C.loss_calculus(spec.loss, self.output, spec.losses)
        # The representative chain-rule partials, by sympy.diff of z_j = w_ji a_i + b_j + r_j
        # (r_j collects the other inputs of unit j, which do not depend on w_ji, a_i, b_j).
        z_j = w_ji * a_i + b_j + r_j
        self.local = {
            "dz_da": sp.diff(z_j, a_i),
            "dz_dw": sp.diff(z_j, w_ji),
            "dz_db": sp.diff(z_j, b_j),
            "d2z_dw_da": sp.diff(z_j, w_ji, a_i),
        }
        self.expressions: dict[str, sp.Expr] = {}
        self.equations: list[Equation] = []
        self._by_key: dict[str, Equation] = {}
        self._build()

    # -- access ----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def has_hidden(self) -> bool:
        return len(self.layers) > 1

    def __getitem__(self, name: str) -> sp.Expr:
        return self.expressions[name]

    def equation(self, key: str) -> Equation:
        return self._by_key[key]

    def eq(self, key: str) -> int:
        """The number of equation ``key`` (as printed by ``symgrad derive``)."""
        return self._by_key[key].number

    def _add(self, key: str, section: str, latex: str, text: str = "", **exprs) -> None:
        eq = Equation(key, len(self.equations) + 1, section, latex, text, exprs)
        self.equations.append(eq)
        self._by_key[key] = eq
        for name, expr in exprs.items():
            self.expressions[name] = expr

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        self._cost()
        self._forward()
        self._activations()
        self._output_delta()
        self._backprop()
        self._gradients()
        self._second_order()

    def _cost(self) -> None:
        spec, loss = self.spec, self.loss
        L = self.depth
        ell = _tex(loss.ell, {C.a: f"a^{{({L})}}_j", C.y: "y_j"})
        title = C.LOSS_TITLES.get(loss.name, f"custom loss '{loss.name}'")
        reg = ""
        if spec.regularization.l2:
            reg += r" + \frac{\lambda_2}{2n}\sum_{l}\sum_{j,i}\left(w^{(l)}_{ji}\right)^2"
        if spec.regularization.l1:
            reg += r" + \frac{\lambda_1}{n}\sum_{l}\sum_{j,i}\left|w^{(l)}_{ji}\right|"
        self._add(
            "cost",
            "Cost",
            r"C = \frac{1}{n}\sum_{x}\sum_{j=1}^{%d} \ell\left(a^{(%d)}_j, y_j\right)%s,"
            r"\qquad \ell(a, y) = %s" % (spec.outputs, L, reg, _tex(loss.ell)),
            f"The {title}, averaged over the n samples x of a batch; per output unit "
            f"\\(\\ell = {ell}\\).",
            loss=loss.ell,
        )
        if loss.stable_in_z and loss.rewrites:
            rules = ", ".join(rf"\({_tex(lhs)} = {_tex(rhs)}\)" for lhs, rhs in loss.rewrites)
            self._add(
                "cost.stable",
                "Cost",
                r"\ell = %s" % _tex(loss.stable, {C.z: "z", C.y: "y"}),
                f"The same loss written on the logits z for numerical stability, using the "
                f"identities {rules}, each proved by SymPy.",
                stable_loss=loss.stable,
            )

    def _forward(self) -> None:
        self._add(
            "forward",
            "Forward pass",
            r"z^{(l)}_j = \sum_{i} w^{(l)}_{ji}\, a^{(l-1)}_i + b^{(l)}_j, \qquad "
            r"a^{(l)}_j = f_l\left(z^{(l)}_j\right), \qquad a^{(0)} = x",
            "Unit j of layer l sums its inputs a_i through the weights w_ji (the weight from unit "
            "i to unit j, written W_ij in seed 002) and applies its activation. For a batch "
            "stored row-wise: Z^{(l)} = A^{(l-1)} (W^{(l)})^T + b^{(l)}.",
        )
        parts = []
        for layer in self.layers:
            act = layer.activation
            f = r"\mathrm{softmax}" if act.vector else _tex(act.f, {C.z: "z"})
            parts.append(
                r"f_{%d}(z) = %s \;\;(%d \to %d)" % (layer.index, f, layer.fan_in, layer.units)
            )
        self._add(
            "forward.layers", "Forward pass", r",\\ ".join(parts), "The layers of this network."
        )

    def _activations(self) -> None:
        seen: set[str] = set()
        for layer in self.layers:
            act = layer.activation
            self.expressions[f"f_{layer.index}"] = act.f
            self.expressions[f"df_{layer.index}"] = act.df_out if act.has_output_form else act.df
            self.expressions[f"d2f_{layer.index}"] = (
                act.d2f_out if act.d2f_out is not None else act.d2f
            )
            if act.name in seen:
                continue
            seen.add(act.name)
            key = f"act.{act.name}"
            if act.vector:
                d_kk, d_km = act.df_out[0, 0], act.df_out[0, 1]
                self._add(
                    key,
                    "Activation derivatives",
                    r"\frac{\partial a_k}{\partial z_k} = %s, \qquad "
                    r"\frac{\partial a_k}{\partial z_m} = %s \;\; (m \ne k)"
                    % (_tex(d_kk), _tex(d_km)),
                    "Softmax a_k = e^{z_k} / sum_j e^{z_j}, differentiated by SymPy on a "
                    "representative pair of units: "
                    r"\(\partial a_k / \partial z_m = a_k(\delta_{km} - a_m)\).",
                    softmax_dkk=d_kk,
                    softmax_dkm=d_km,
                )
                continue
            body = r"f(z) = %s, \qquad f'(z) = %s" % (_tex(act.f), _tex(act.df))
            if act.has_output_form:
                body += r" = %s\Big|_{a = f(z)}" % _tex(act.df_out)
            text = f"{act.name}: f' by sympy.diff; output form: {act.how}."
            exprs = {f"act_{act.name}_df": act.df}
            if act.has_output_form:
                exprs[f"act_{act.name}_df_out"] = act.df_out
            self._add(key, "Activation derivatives", body, text, **exprs)
            second = r"f''(z) = %s" % _tex(act.d2f)
            if act.d2f_out is not None:
                second += r" = %s\Big|_{a = f(z)}" % _tex(act.d2f_out)
            self._add(
                key + ".2",
                "Activation derivatives",
                second,
                f"{act.name}: second derivative, used by the Hessian.",
                **{f"act_{act.name}_d2f": act.d2f},
            )

    def _output_delta(self) -> None:
        L, loss, out = self.depth, self.loss, self.output
        var = "z" if loss.delta_in_z else "a"
        sub = {C.a: f"a^{{({L})}}_j", C.y: "y_j", C.z: f"z^{{({L})}}_j"}
        if out.vector:
            chain = (
                r"\delta^{(%d)}_m = \frac{\partial \ell}{\partial z^{(%d)}_m} = "
                r"\sum_k \frac{\partial \ell}{\partial a_k}\frac{\partial a_k}{\partial z_m} = "
                r"%s \quad\left(\textstyle\sum_k y_k = 1\right)" % (L, L, _tex(loss.delta, sub))
            )
            text = (
                "The output delta for softmax with cross-entropy: the sum over k splits into "
                "k = m and k != m; with one-hot targets it fuses to a - y."
            )
        else:
            chain = (
                r"\delta^{(%d)}_j = \frac{\partial \ell}{\partial z^{(%d)}_j} = "
                r"\frac{\partial \ell}{\partial a^{(%d)}_j}\, f_{%d}'\left(z^{(%d)}_j\right) = "
                r"\left(%s\right) \cdot %s = %s"
                % (
                    L,
                    L,
                    L,
                    L,
                    L,
                    _tex(loss.dl_da, sub),
                    _tex(out.df_out if out.has_output_form else out.df, sub),
                    _tex(loss.delta, sub),
                )
            )
            text = "The output delta by the chain rule, simplified by SymPy" + (
                " to a - y (the matching loss: the fused form is also the stable one)."
                if loss.matching
                else f" (kept in terms of {var})."
            )
        self._add("delta.out", "Output delta", chain, text, delta_out=loss.delta)

    def _backprop(self) -> None:
        dz_da = self.local["dz_da"]
        for layer in reversed(self.layers[:-1]):
            l, nxt = layer.index, layer.index + 1
            self._add(
                f"backprop.sum.{l}",
                "Backpropagation",
                r"\frac{\partial C}{\partial a^{(%d)}_i} = \sum_{j=1}^{%d} "
                r"\frac{\partial z^{(%d)}_j}{\partial a^{(%d)}_i}\,\delta^{(%d)}_j = "
                r"\sum_{j=1}^{%d} %s\,\delta^{(%d)}_j = "
                r"\left(\left(W^{(%d)}\right)^{T}\delta^{(%d)}\right)_i"
                % (
                    l,
                    self.layers[nxt - 1].units,
                    nxt,
                    l,
                    nxt,
                    self.layers[nxt - 1].units,
                    _tex(dz_da, {w_ji: f"w^{{({nxt})}}_{{ji}}"}),
                    nxt,
                    nxt,
                    nxt,
                ),
                f"Unit i of layer {l} feeds every unit j of layer {nxt}, so its error signal "
                "is the sum over all downstream units (seed 002's sum over both downstream "
                "nodes); the partial dz_j/da_i = w_ji is from sympy.diff.",
            )
            act = layer.activation
            fp = act.df_out if act.has_output_form else act.df
            sub = {C.a: f"a^{{({l})}}_i", C.z: f"z^{{({l})}}_i"}
            self._add(
                f"backprop.{l}",
                "Backpropagation",
                r"\delta^{(%d)}_i = f_{%d}'\left(z^{(%d)}_i\right)"
                r"\frac{\partial C}{\partial a^{(%d)}_i} = %s \sum_{j} w^{(%d)}_{ji}\,"
                r"\delta^{(%d)}_j, \qquad \delta^{(%d)} = %s \odot \left(W^{(%d)}\right)^{T}"
                r"\delta^{(%d)}"
                % (
                    l,
                    l,
                    l,
                    l,
                    _paren(fp, sub),
                    nxt,
                    nxt,
                    l,
                    _paren(fp, {C.a: f"a^{{({l})}}", C.z: f"z^{{({l})}}"}),
                    nxt,
                    nxt,
                ),
                f"The recurrence for layer {l}, with f' in "
                + (
                    "output form (only the activations are kept)."
                    if act.has_output_form
                    else "terms of z (no output form, so z is kept)."
                ),
            )

    def _gradients(self) -> None:
        reg = self.spec.regularization
        for layer in self.layers:
            l = layer.index
            extra = ""
            if reg.l2:
                extra += r" + \frac{\lambda_2}{n} w^{(%d)}_{ji}" % l
            if reg.l1:
                extra += r" + \frac{\lambda_1}{n}\operatorname{sign}\left(w^{(%d)}_{ji}\right)" % l
            self._add(
                f"grad.{l}",
                "Gradients",
                r"\frac{\partial C}{\partial w^{(%d)}_{ji}} = \frac{1}{n}\sum_x \delta^{(%d)}_j"
                r"\,%s%s, \qquad \frac{\partial C}{\partial b^{(%d)}_j} = \frac{1}{n}\sum_x "
                r"%s\,\delta^{(%d)}_j, \qquad \nabla_{W^{(%d)}} C = \frac{1}{n}"
                r"\left(\delta^{(%d)}\right)^{T} A^{(%d)}"
                % (
                    l,
                    l,
                    _tex(self.local["dz_dw"], {a_i: f"a^{{({l - 1})}}_i"}),
                    extra,
                    l,
                    _tex(self.local["dz_db"]) if self.local["dz_db"] != 1 else "",
                    l,
                    l,
                    l,
                    l - 1,
                ),
                f"Layer {l}: dz_j/dw_ji = a_i and dz_j/db_j = 1 (sympy.diff); the batch form is "
                "one matrix product.",
            )

    def _second_order(self) -> None:
        loss, L = self.loss, self.depth
        sub = {C.a: f"a^{{({L})}}", C.y: "y", C.z: f"z^{{({L})}}"}
        if self.output.vector:
            u, v = loss.jac_outer
            self._add(
                "hess.out",
                "Second order",
                r"\frac{\partial \delta^{(%d)}_k}{\partial z^{(%d)}_m} = %s\,\delta_{km} %s"
                % (
                    L,
                    L,
                    _tex(loss.jac_diag, {C.a: "a_k"}),
                    _signed(sp.Mul(u.subs(C.a, sp.Symbol("a_k")), v.subs(C.a, sp.Symbol("a_m")))),
                ),
                "The Jacobian of the output delta: diagonal plus rank one, "
                r"\(S = \operatorname{diag}(a) - a a^{T}\).",
                s_out=loss.jac_diag,
            )
        else:
            self._add(
                "hess.out",
                "Second order",
                r"s^{(%d)}_j = \frac{\partial \delta^{(%d)}_j}{\partial z^{(%d)}_j} = %s"
                % (L, L, L, _tex(loss.s, sub)),
                "The second derivative of the loss by the output pre-activation (sympy.diff of "
                "the fused delta).",
                s_out=loss.s,
            )
        reg = r" + \frac{\lambda_2}{n} I" if self.spec.regularization.l2 else ""
        if not self.has_hidden:
            if self.output.vector:
                body = (
                    r"\frac{\partial^2 C}{\partial w_{ki}\,\partial w_{mj}} = \frac{1}{n}\sum_x "
                    r"\tilde x_i \tilde x_j\, a_k\left(\delta_{km} - a_m\right)%s" % reg
                )
                text = (
                    "Closed form for softmax regression (x~ = [x, 1] so biases are included): "
                    "a K x K block structure, each block X~^T diag(a_k(delta_km - a_m)) X~ / n."
                )
            else:
                body = (
                    r"H = \frac{1}{n}\tilde X^{T}\operatorname{diag}\left(%s\right)\tilde X%s"
                    % (_tex(loss.s, sub), reg)
                )
                text = (
                    "Closed form for a model without hidden layers (X~ = [X, 1]); one block per "
                    "output unit. Linear regression with mse gives X^T X / n; logistic regression "
                    "gives X^T diag(a(1-a)) X / n."
                )
            self._add("hess.closed", "Second order", body, text)
        if self.depth == 2:
            hidden = self.layers[0].activation
            fpp = hidden.d2f_out if hidden.d2f_out is not None else hidden.d2f
            self._add(
                "hess.blocks",
                "Second order",
                r"H = \frac{1}{n}\sum_x \Big[ J_x^{T} S_x J_x"
                r" + \sum_j \tilde x\tilde x^{T}\, f_1''\!\left(z^{(1)}_j\right)"
                r"\left(\left(W^{(2)}\right)^{T}\delta^{(2)}\right)_j \,[\theta_1\theta_1]"
                r" + \delta^{(2)}_k f_1'\!\left(z^{(1)}_j\right)\tilde x_i"
                r"\,[w^{(1)}_{ji}, w^{(2)}_{kj}] \Big],\qquad "
                r"f_1'' = %s" % _tex(fpp, {C.a: "a^{(1)}", C.z: "z^{(1)}"}),
                "The exact Hessian of a network with one hidden layer in block form: the "
                "Gauss-Newton part with J = dz^(2)/dtheta, the hidden layer's curvature (one "
                "block per hidden unit j, over x~ = [x, 1]), and the cross terms between "
                "w^(1)_ji and w^(2)_kj that come from z^(2) = W^(2) a^(1).",
            )
        # R-operator (Pearlmutter): Hessian-vector products for any depth.
        self._add(
            "rop.forward",
            "Second order",
            r"\mathcal{R}\{z^{(l)}\} = \mathcal{R}\{a^{(l-1)}\}\left(W^{(l)}\right)^{T} + "
            r"a^{(l-1)}\left(V^{(l)}\right)^{T} + v_b^{(l)}, \qquad "
            r"\mathcal{R}\{a^{(l)}\} = f_l'\odot\mathcal{R}\{z^{(l)}\}, \qquad "
            r"\mathcal{R}\{a^{(0)}\} = 0",
            "Hessian-vector products H v by the R-operator R{.} = d/dr (.)(theta + r v) at r = 0; "
            "V, v_b are the weight and bias parts of v. Forward sweep.",
        )
        self._add(
            "rop.backward",
            "Second order",
            r"\mathcal{R}\{\delta^{(L)}\} = S\,\mathcal{R}\{z^{(L)}\},\quad "
            r"\mathcal{R}\{\delta^{(l)}\} = f_l'\odot\left(\mathcal{R}\{\delta^{(l+1)}\}W^{(l+1)}"
            r" + \delta^{(l+1)}V^{(l+1)}\right) + f_l''\odot\mathcal{R}\{z^{(l)}\}\odot"
            r"\left(\delta^{(l+1)}W^{(l+1)}\right)",
            "Backward sweep: S is the output Jacobian of the previous equation; f' and f'' are the "
            "(output forms of the) activation derivatives derived above.",
        )
        self._add(
            "rop.grad",
            "Second order",
            r"(Hv)_{W^{(l)}} = \frac{1}{n}\left(\mathcal{R}\{\delta^{(l)}\}^{T}a^{(l-1)} + "
            r"\left(\delta^{(l)}\right)^{T}\mathcal{R}\{a^{(l-1)}\}\right)%s,\qquad "
            r"(Hv)_{b^{(l)}} = \frac{1}{n}\sum_x \mathcal{R}\{\delta^{(l)}\}"
            % (r" + \frac{\lambda_2}{n}V^{(l)}" if self.spec.regularization.l2 else ""),
            "The exact Hessian is assembled column by column from H e_p (all columns in one "
            "vectorised sweep).",
        )
        self._add(
            "gauss_newton",
            "Second order",
            r"G = \frac{1}{n}\sum_x J_x^{T}\, S_x\, J_x, \qquad J_x = "
            r"\frac{\partial z^{(L)}}{\partial \theta}",
            "The Gauss-Newton approximation: the R-operator sweep without the f'' and "
            "delta V terms"
            + (
                ""
                if loss.matching
                else " (for a loss that is not matched to its output activation, S is replaced by "
                "the loss curvature in a and J by da/dtheta; G is then positive semi-definite "
                "whenever the loss is convex in a)"
            )
            + ".",
        )
        self._add(
            "newton",
            "Second order",
            r"\theta \leftarrow \theta - \left(H + \mu I\right)^{-1}\nabla_\theta C",
            "Newton's method: seed 003's ideal learning rate 1/f''(x) in one dimension becomes the "
            "inverse Hessian in several; mu is the damping.",
        )

    # -- rendering -------------------------------------------------------------------------
    def to_latex(self, standalone: bool = False) -> str:
        from ..printers.latex import render_latex

        return render_latex(self, standalone=standalone)

    def _repr_latex_(self) -> str:
        from ..printers.latex import render_markdown

        return render_markdown(self)


def derive(spec: Spec) -> Derivation:
    """Derive gradients and Hessians of ``spec`` (SymPy); see :class:`Derivation`."""
    return Derivation(spec)


# ---------------------------------------------------------------------------------------
# LaTeX helpers


def _tex(expr, names: dict | None = None) -> str:
    """SymPy's LaTeX of ``expr`` with symbols renamed (``a`` -> ``a^{(2)}_j``)."""
    if names:
        expr = expr.subs({k: sp.Symbol(v) for k, v in names.items()}, simultaneous=True)
    return sp.latex(expr)


def _paren(expr, names: dict | None = None) -> str:
    text = _tex(expr, names)
    if isinstance(expr, (sp.Add, sp.Piecewise)):
        return r"\left(%s\right)" % text
    return text


def _signed(expr) -> str:
    text = sp.latex(expr)
    return text if text.startswith("-") else "+ " + text


def _esc(text: str) -> str:
    return text.replace("_", r"\_")
