"""Rows of the node-by-node equations (``--notation seed002``, :mod:`symgrad.derivation.nodes`).

For every sample of the batch, each side of each equation is evaluated with the node values
bound to numbers (``X_j``, ``Y_j`` from the trainer's forward pass, ``W_ij`` and ``b_j`` its
parameters, ``T_k`` the targets) and every ``dE/dV`` on a right side bound to its value, and
compared with

- the network unrolled symbolically: E as one SymPy expression of the weights and the sample,
  differentiated by ``sympy.diff`` (``dE/dY_i`` and ``dE/dX_i`` hold the nodes before node i's
  layer fixed), each piecewise activation on the piece its node's value lies in (ReLU at 0
  takes its 0 piece, as the code's f'(0) = 0);
- the trainer: its forward pass (X_j, Y_j), its gradient on the one sample without the penalty
  (dE/dW_ij, dE/db_j) and its loss (E, when there is no penalty);
- the reference network's per-sample deltas (dE/dX_j, and dE/dY_i from the matrix form: the
  deltas of the layers reading node i's layer times their columns that read it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ...derivation.nodes import E, Nodes
from .compare import compare
from .report import Row

if TYPE_CHECKING:
    from .context import Context


class _Traced:
    """The unrolled network and the numbers of one batch, shared by the rows."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.g = g = Nodes(ctx.derivation)
        self.m = len(ctx.state.X)
        self.layers = g.layers
        self.params = list(g.W.values()) + list(g.b.values())
        self.values = [self._values(s) for s in range(self.m)]
        self.numbers = [{k: sp.Float(v, 17) for k, v in vals.items()} for vals in self.values]
        self.truth = [self._truth(s) for s in range(self.m)]

    def _piece(self, j: int, s: int) -> sp.Expr:
        """``F(X_j)`` on the branch node j takes for sample s (a piecewise activation is
        differentiated on the piece its point lies in: ReLU at 0 takes its 0 piece, as the
        code's f'(0) = 0)."""
        out = self.g.output(j)
        if not isinstance(out, sp.Piecewise):
            return out
        at = {self.g.X[j]: self.numbers[s][self.g.X[j]]}
        for piece, cond in out.args:
            if bool(cond.xreplace(at)):
                return piece
        return out

    def _truth(self, s: int) -> dict:
        """``dE/dV`` of sample s for every node and parameter V, by ``sympy.diff`` of E
        unrolled through the nodes after V (those before it held at their values)."""
        g, num = self.g, self.numbers[s]
        out: dict = {}
        error = g.error()
        for l in range(len(self.layers) - 1, 0, -1):
            layer = self.layers[l]
            for j in layer:
                out[g.Y[j]] = float(sp.diff(error, g.Y[j]).xreplace(num))
                on_x = error.xreplace({g.Y[j]: self._piece(j, s)})
                out[g.X[j]] = float(sp.diff(on_x, g.X[j]).xreplace(num))
            # the outputs of layer l in terms of the outputs of layer l - 1
            error = error.xreplace(
                {
                    g.Y[j]: self._piece(j, s).xreplace({g.X[j]: g.net_input(j)})
                    for j in self.layers[l]
                }
            )
        unrolled = error.xreplace({g.Y[j]: g.x[j] for j in self.layers[0]})
        for p in self.params:
            out[p] = float(sp.diff(unrolled, p).xreplace(num))
        out[E] = float(unrolled.xreplace(num))
        return out

    def _position(self, j: int) -> tuple[int, int]:
        l = self.g.layer_of(j)
        return l, self.layers[l].index(j)

    def _values(self, s: int) -> dict:
        """Node values of sample s: X, Y from the trainer, W, b its parameters, T the targets."""
        ctx, g, st = self.ctx, self.g, self.ctx.state
        vals: dict = {}
        for j in g.Y:
            l, u = self._position(j)
            a = ctx.t_forward("a", l)
            vals[g.Y[j]] = float(a[s, u])
            if l > 0:
                z = ctx.t_forward("z", l)
                vals[g.X[j]] = float((z if z is not None else st.z[l])[s, u])
        for (i, j), w in g.W.items():
            l, u = self._position(j)
            vals[w] = float(st.W[l][u, g.column(i, j)])
        for j, b in g.b.items():
            l, u = self._position(j)
            vals[b] = float(st.b[l][u])
        for n, k in enumerate(g.layers[-1]):
            vals[g.T[k]] = float(st.Y[s, n])
        for n, j in enumerate(g.layers[0]):
            vals[g.x[j]] = float(st.X[s, n])
        return vals

    def evaluate(self, expr: sp.Basic, s: int) -> float:
        """``expr`` at sample s: node values bound, every ``dE/dV`` its value, a local
        derivative (``dY_j/dX_j``, ``dX_j/dW_ij``) from the node's own definition."""
        g, truth = self.g, self.truth[s]
        if expr == E:
            return truth[E]
        reps = {}
        for d in sp.sympify(expr).atoms(sp.Derivative):
            of, (by, _) = d.expr, d.variable_count[0]
            if of == E:
                reps[d] = sp.Float(truth[by], 17)
                continue
            j = next(k for k in g.Y if of in (g.X[k], g.Y[k]))
            local = self._piece(j, s) if of == g.Y[j] else g.net_input(j)
            reps[d] = sp.diff(local, by)
        return float(sp.sympify(expr).xreplace(reps).xreplace(self.numbers[s]))

    def trainer_gradient(self, s: int) -> np.ndarray:
        """The trainer's gradient of sample s's error (the penalty taken off), public order."""
        ctx = self.ctx
        st = ctx.state
        model = ctx.trainer
        grad = np.asarray(model.gradient_flat(st.X[s : s + 1], st.Y[s : s + 1]), np.float64)
        theta = np.asarray(model.get_flat(), dtype=np.float64)
        w = ctx.weight_mask * theta
        return grad - float(model.l2) * w - float(model.l1) * np.sign(w)

    def trainer_error(self, s: int) -> float | None:
        model, st = self.ctx.trainer, self.ctx.state
        if float(model.l2) or float(model.l1):
            return None
        return float(model.loss(st.X[s : s + 1], st.Y[s : s + 1]))


def node_rows(ctx: Context, eq) -> list[Row]:
    """The index row of one node-by-node equation."""
    traced = ctx.memo("nodes", lambda: _Traced(ctx))
    g = traced.g
    sides = [("lhs", eq.lhs)] + [(f"step {k + 1}", e) for k, e in enumerate(eq.steps)]
    sides.append(("rhs", eq.rhs))
    values = {name: [traced.evaluate(e, s) for s in range(traced.m)] for name, e in sides}
    references: list[tuple[str, np.ndarray]] = []
    target = eq.lhs.variable_count[0][0] if isinstance(eq.lhs, sp.Derivative) else eq.lhs
    if isinstance(eq.lhs, sp.Derivative):
        references.append(("sympy.diff of the unrolled E", [t[target] for t in traced.truth]))
        if target in traced.params:
            grads = [traced.trainer_gradient(s) for s in range(traced.m)]
            q = _flat_position(ctx, g, target)
            references.append(("trainer gradient", [gr[q] for gr in grads]))
        elif any(target == g.X[j] or (target == g.Y[j] and j not in g.T) for j in g.X):
            references.append(("reference deltas", _delta_values(ctx, g, target)))
    elif target == E:
        references.append(("unrolled E", [t[E] for t in traced.truth]))
        errs = [traced.trainer_error(s) for s in range(traced.m)]
        if all(e is not None for e in errs):
            references.append(("trainer loss", errs))
    else:  # X_j or Y_j: the trainer's forward values (bound) against the right side
        references.append(("trainer forward pass", values.pop("lhs")))
    pairs = [
        (name, np.asarray(v), label, np.asarray(ref))
        for name, v in values.items()
        for label, ref in references
    ]
    return [compare(ctx, eq.key, "index", pairs)]


def _flat_position(ctx: Context, g: Nodes, param: sp.Symbol) -> int:
    for (i, j), w in g.W.items():
        if w == param:
            l = g.layer_of(j)
            return ctx.flat_index("w", l, (g.layers[l].index(j), g.column(i, j)))
    j = next(j for j, b in g.b.items() if b == param)
    l = g.layer_of(j)
    return ctx.flat_index("b", l, (g.layers[l].index(j),))


def _delta_values(ctx: Context, g: Nodes, node: sp.Symbol) -> list[float]:
    """dE/dX_j (the reference's per-sample delta) or dE/dY_j (sum_k W_jk delta_k)."""
    deltas = ctx.base().deltas()
    j = next(k for k in g.X if node in (g.X[k], g.Y[k]))
    l = g.layer_of(j)
    u = g.layers[l].index(j)
    if node == g.X[j]:
        return list(np.asarray(deltas[l])[:, u])
    # the matrix form: sum over the layers k reading layer l of Delta_k W_k[l], W_k[l] the
    # columns of W_k that read layer l
    total = np.zeros(len(ctx.state.X))
    for k in range(l + 1, len(g.layers)):
        for s, lo, _ in g.spec.blocks(k):
            if s == l:
                total += np.asarray(deltas[k]) @ ctx.state.W[k][:, lo + u]
    return list(total)
