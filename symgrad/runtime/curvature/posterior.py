"""The Laplace approximation around a trainer's current parameters.

Conventions (and how they map onto laplace-torch's):

- The trainer's cost on n samples is ``C = (1/n) sum_x C_x + lambda_2/(2n) sum_w w^2`` (weights
  only). Times n: ``n C = -log p(D | theta) - log p(theta) + const`` with the log likelihood
  ``-sum_x C_x`` (categorical for softmax + cross_entropy, Bernoulli for sigmoid + log_loss,
  Gaussian with unit variance for identity + mse, whose ``C_x = sum_j (a_j - y_j)^2 / 2``) and
  a Gaussian prior of precision ``lambda_2`` on the weights and none (flat) on the biases. So the
  posterior precision is ``Lambda = H / sigma^2 + diag(delta)``, where ``H`` is the curvature of
  the *summed* loss ``sum_x C_x`` (n times the data term of ``model.hessian``), and ``delta`` the
  prior precision per parameter.
- ``prior_precision=None`` takes the prior the training cost implies: ``lambda_2`` on the
  weights, 0 on the biases; the Laplace mode is then exactly the trainer's optimum, but the
  marginal likelihood needs a proper prior (a positive precision everywhere). laplace-torch uses
  the SUM loss too (``CrossEntropyLoss(reduction="sum")``, ``0.5 * MSELoss(reduction="sum")``)
  and puts its prior precision on every parameter, biases included: pass the same scalar (or
  per-tensor vector) to compare.
- ``sigma_noise`` (Gaussian likelihood only) scales the curvature by ``1 / sigma^2`` and the log
  likelihood is ``-sum_x C_x / sigma^2 - n K log(sigma sqrt(2 pi))``, as laplace-torch's.
- The log marginal likelihood is ``log p(D | theta) - (log det Lambda - log det diag(delta) +
  theta^T diag(delta) theta) / 2`` (laplace-torch's formula, prior mean 0).
- Structures: ``full`` (the exact Hessian), ``gauss_newton`` (the Gauss-Newton matrix ``J^T S_G
  J``; laplace-torch's default GGN backend), ``kfac`` (per layer ``n B kron A`` for ``W_l`` and
  ``n B`` for ``b_l``, see :mod:`.structured`; laplace-torch's ``kron`` with the curvlinops
  backend: type-2 Fisher, K-FAC "expand", weights and biases as separate blocks) and ``diag``
  (the exact diagonal of the Gauss-Newton matrix; laplace-torch's ``diag``). ``kfac`` and
  ``diag`` never form a ``P x P`` matrix.
- Predictions are linearised in the output pre-activation ``z_L`` (the logits): ``f_mu =
  z_L(theta)``, ``f_var = J Lambda^{-1} J^T``. Classification: the probit approximation
  ``softmax(kappa * f_mu)`` (``sigmoid`` for one Bernoulli output), ``kappa = 1 / sqrt(1 + pi/8
  diag f_var)``. Regression: the mean output and its covariance ``f_var`` (of the function; add
  ``sigma_noise**2`` for a new observation).
- The L1 term of a spec is not part of the prior (its curvature is zero almost everywhere).

Longer than 400 lines on purpose: one class holds the four structures because fitting, the
evidence, its gradient in the prior precision and the predictive all read the same factorised
precision (eigen-decomposition, Cholesky or Kronecker factors) that it caches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .network import Network, _softmax
from .structured import _checked, ggn_diag_sum, kfac_sums

STRUCTURES = ("full", "gauss_newton", "kfac", "diag")
#: Standard normal quantile of 0.975, for the 95 % intervals of :meth:`Laplace.summary`.
Z_975 = 1.959963984540054


class NotPositiveDefinite(np.linalg.LinAlgError):
    """The posterior precision has a non-positive eigenvalue."""


@dataclass(frozen=True)
class _Kron:
    """Eigen-decomposed K-FAC factors of one layer (``B`` summed over samples, ``A`` a mean)."""

    QA: np.ndarray
    eig_a: np.ndarray
    QB: np.ndarray
    eig_b: np.ndarray


def laplace(
    model,
    X,
    Y,
    prior_precision=None,
    structure: str = "full",
    sigma_noise: float = 1.0,
    spec=None,
) -> Laplace:
    """The Laplace approximation of the posterior around ``model``'s current parameters.

    Args:
        model: a generated trainer (its parameters are read, never changed).
        X, Y: the training data, (n, inputs) and (n, outputs), as ``model.loss`` takes them.
        prior_precision: a scalar (every parameter), one value per parameter tensor in public
            order (``W_1, b_1, W_2, ...``), or one per parameter (not for ``kfac``); ``None``:
            the model's ``l2`` on the weights and 0 on the biases (the training cost's prior).
        structure: ``"full"``, ``"gauss_newton"``, ``"kfac"`` or ``"diag"``.
        sigma_noise: the Gaussian likelihood's standard deviation (identity + mse only).
        spec: the model's spec, if the model does not carry it.

    Returns:
        A fitted :class:`Laplace`.
    """
    return Laplace(model, X, Y, prior_precision, structure, sigma_noise, spec)


class Laplace:
    """A fitted Laplace approximation (see the module docstring for the conventions)."""

    def __init__(self, model, X, Y, prior_precision, structure, sigma_noise, spec) -> None:
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}; got {structure!r}")
        net = spec if isinstance(spec, Network) else Network(model, spec)
        X, Y = _checked(model, X, Y)
        self.net = net
        self.structure = structure
        self.theta = model.get_flat().astype(np.float64)
        net.check(model, self.theta, X)
        self.n = X.shape[0]
        self.n_params = net.P
        self.likelihood = net.output.likelihood
        self.l2 = float(model.l2)
        s = net.forward(self.theta, X)
        self.loss_sum = float(net.output.cost(s.z[-1], s.a[-1], Y).sum())
        self._H = None
        self._diag = None
        self._kron: list[_Kron] | None = None
        if structure in ("full", "gauss_newton"):
            self._H = self._dense(model, X, Y, exact=structure == "full")
        elif structure == "diag":
            self._diag = ggn_diag_sum(net, self.theta, X, Y)
        else:
            As, Bs = kfac_sums(net, self.theta, X, Y, "type2")
            self._kron = []
            for A, B in zip(As, Bs):
                lA, QA = np.linalg.eigh(A / self.n)
                lB, QB = np.linalg.eigh(B)
                self._kron.append(_Kron(QA, lA, QB, lB))
        self._eig = None  # eigh of the dense H, for scalar priors
        self._sigma = 1.0
        self.sigma_noise = sigma_noise
        self.prior_precision = prior_precision

    # -- construction ------------------------------------------------------------------------
    def _dense(self, model, X, Y, exact: bool) -> np.ndarray:
        """``H`` of the summed loss: the GLM closed form without hidden layers; else the exact
        Hessian as n times ``model.hessian`` less its L2 term, and the Gauss-Newton matrix as
        ``F^T diag(sign) F`` (:meth:`Network.ggn_dense_sum`, one GEMM per block of samples)."""
        net = self.net
        if net.L == 1:
            return _glm_curvature(net, self.theta, X, Y, exact)
        if not exact:
            return net.ggn_dense_sum(self.theta, X, Y)
        H = np.asarray(model.hessian(X, Y), dtype=np.float64) * self.n
        idx = np.flatnonzero(net.weight_mask)
        H[idx, idx] -= self.l2
        return 0.5 * (H + H.T)

    # -- hyper-parameters --------------------------------------------------------------------
    @property
    def sigma_noise(self) -> float:
        return self._sigma

    @sigma_noise.setter
    def sigma_noise(self, value: float) -> None:
        value = float(value)
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"sigma_noise must be positive and finite, got {value}")
        if value != 1.0 and self.likelihood != "gaussian":
            raise ValueError(
                "sigma_noise != 1 needs the Gaussian likelihood (identity output with mse); "
                f"this model's is {self.likelihood}"
            )
        self._sigma = value
        self._chol = None

    @property
    def prior_precision(self) -> np.ndarray:
        """The prior precision of every parameter (P,), public order."""
        return self._delta.copy()

    @prior_precision.setter
    def prior_precision(self, value) -> None:
        self._delta = self._prior_vector(value)
        self._chol = None

    def _prior_vector(self, value) -> np.ndarray:
        net = self.net
        if value is None:
            return net.weight_mask * self.l2
        v = np.asarray(value, dtype=np.float64)
        blocks = net.blocks()
        if v.ndim == 0 or v.size == 1:
            out = np.full(net.P, float(v.reshape(())))
        elif v.ndim == 1 and v.size == len(blocks):
            out = np.empty(net.P)
            for (_, sl), d in zip(blocks, v):
                out[sl] = d
        elif v.ndim == 1 and v.size == net.P and self.structure != "kfac":
            out = v.copy()
        else:
            allowed = "a scalar or one value per parameter tensor"
            if self.structure != "kfac":
                allowed += f" or per parameter ({net.P})"
            raise ValueError(
                f"prior_precision must be {allowed} ({len(blocks)} tensors), got shape {v.shape}"
            )
        if not np.all(np.isfinite(out)) or np.any(out < 0):
            raise ValueError("prior_precision must be finite and non-negative")
        return out

    def _scalar_prior(self) -> float | None:
        d = self._delta
        return float(d[0]) if np.all(d == d[0]) else None

    # -- the posterior precision -------------------------------------------------------------
    def _block_deltas(self) -> list[tuple[float, float]]:
        out = []
        for layer in self.net.layers:
            dw = self._delta[layer.w]
            db = self._delta[layer.b]
            if np.any(dw != dw[0]) or np.any(db != db[0]):
                raise ValueError("kfac needs one prior precision per parameter tensor")
            out.append((float(dw[0]), float(db[0])))
        return out

    def _kron_eigs(self):
        """Per layer: the eigenvalues of the W block (units, fan_in) and of the b block."""
        f = 1.0 / self._sigma**2
        for k, (dw, db) in zip(self._kron, self._block_deltas()):
            yield k, np.outer(k.eig_b, k.eig_a) * f + dw, k.eig_b * f + db

    def posterior_precision(self):
        """``Lambda``: (P, P) for ``full``/``gauss_newton``, its diagonal (P,) for ``diag``,
        and for ``kfac`` a list of per-layer ``(B, A, delta_W, B, delta_b)`` with the W block
        ``kron(B, A) + delta_W I`` and the b block ``B + delta_b I``."""
        f = 1.0 / self._sigma**2
        if self._H is not None:
            return self._H * f + np.diag(self._delta)
        if self._diag is not None:
            return self._diag * f + self._delta
        out = []
        for k, (dw, db) in zip(self._kron, self._block_deltas()):
            B = (k.QB * k.eig_b) @ k.QB.T * f
            A = (k.QA * k.eig_a) @ k.QA.T
            out.append((B, A, dw, B, db))
        return out

    def _dense_eig(self):
        if self._eig is None:
            lam, V = np.linalg.eigh(self._H)
            self._eig = (lam, V, V * V)
        return self._eig

    def _positive(self, values: np.ndarray) -> None:
        low = float(np.min(values))
        if not low > 0:
            raise NotPositiveDefinite(
                f"the posterior precision is not positive definite (smallest eigenvalue "
                f"{low:.3g}); use structure='gauss_newton' or a larger prior precision"
            )

    def _use_eig(self) -> float | None:
        """The scalar prior when the dense eigen-decomposition is there to use (it is made by
        :meth:`optimize_prior_precision`, where it pays off; else Cholesky is cheaper)."""
        return self._scalar_prior() if self._eig is not None else None

    def log_det_posterior_precision(self) -> float:
        """``log det Lambda``."""
        f = 1.0 / self._sigma**2
        if self._H is not None:
            d = self._use_eig()
            if d is not None:
                lam = self._dense_eig()[0] * f + d
                self._positive(lam)
                return float(np.sum(np.log(lam)))
            return 2.0 * float(np.sum(np.log(np.diag(self._cholesky()))))
        if self._diag is not None:
            lam = self._diag * f + self._delta
            self._positive(lam)
            return float(np.sum(np.log(lam)))
        total = 0.0
        for _, Dw, Db in self._kron_eigs():
            self._positive(Dw)
            self._positive(Db)
            total += float(np.sum(np.log(Dw)) + np.sum(np.log(Db)))
        return total

    def _cholesky(self) -> np.ndarray:
        """The Cholesky factor of ``Lambda`` (cached until a hyper-parameter changes)."""
        if self._chol is None:
            try:
                self._chol = np.linalg.cholesky(self.posterior_precision())
            except np.linalg.LinAlgError:
                lam = np.linalg.eigvalsh(self.posterior_precision())
                self._positive(lam)
                raise  # pragma: no cover - eigvalsh found it positive definite after all
        return self._chol

    def posterior_covariance(self) -> np.ndarray:
        """``Lambda^{-1}`` (P, P); ``full`` and ``gauss_newton`` only (``posterior_variance``
        gives the diagonal for every structure)."""
        if self._H is None:
            raise ValueError(
                f"structure={self.structure!r} keeps no P x P covariance; use "
                "posterior_variance() or functional_variance()"
            )
        d = self._use_eig()
        if d is not None:
            lam, V, _ = self._dense_eig()
            lam = lam / self._sigma**2 + d
            self._positive(lam)
            return (V / lam) @ V.T
        Lc = self._cholesky()
        inv = _solve_lower(Lc, np.eye(self.n_params))
        return inv.T @ inv

    def posterior_variance(self) -> np.ndarray:
        """The diagonal of ``Lambda^{-1}`` (P,), public order."""
        if self._H is not None:
            d = self._use_eig()
            if d is None:
                return np.diag(self.posterior_covariance()).copy()
            lam, _, V2 = self._dense_eig()
            lam = lam / self._sigma**2 + d
            self._positive(lam)
            return V2 @ (1.0 / lam)
        if self._diag is not None:
            lam = self._diag / self._sigma**2 + self._delta
            self._positive(lam)
            return 1.0 / lam
        out = np.empty(self.n_params)
        for layer, (k, Dw, Db) in zip(self.net.layers, self._kron_eigs()):
            self._positive(Dw)
            self._positive(Db)
            out[layer.w] = ((k.QB**2) @ (1.0 / Dw) @ (k.QA**2).T).ravel()
            out[layer.b] = (k.QB**2) @ (1.0 / Db)
        return out

    # -- evidence ----------------------------------------------------------------------------
    @property
    def log_likelihood(self) -> float:
        """``log p(D | theta)`` at the fitted parameters."""
        s2 = self._sigma**2
        if self.likelihood == "gaussian":
            K = self.net.K
            return -self.loss_sum / s2 - self.n * K * math.log(self._sigma * math.sqrt(2 * math.pi))
        return -self.loss_sum

    def log_marginal_likelihood(self, prior_precision=None, sigma_noise=None) -> float:
        """The Laplace approximation of ``log p(D)``; the arguments replace the current
        hyper-parameters (kept afterwards), as in laplace-torch."""
        if prior_precision is not None:
            self.prior_precision = prior_precision
        if sigma_noise is not None:
            self.sigma_noise = sigma_noise
        d = self._delta
        if not np.all(d > 0):
            raise ValueError(
                "the marginal likelihood needs a proper prior: a positive prior precision on "
                "every parameter (the default puts 0 on the biases)"
            )
        scatter = float(np.sum(d * self.theta**2))
        log_det_prior = float(np.sum(np.log(d)))
        return self.log_likelihood - 0.5 * (
            self.log_det_posterior_precision() - log_det_prior + scatter
        )

    def optimize_prior_precision(self, layerwise: bool = False, tol: float = 1e-12) -> np.ndarray:
        """Choose the prior precision by maximising the marginal likelihood; set and return it.

        One scalar (``layerwise=False``) or one value per parameter tensor. With ``t_k = log
        delta_k``, ``2 d lml / d t_k = n_k - delta_k tr_k(Lambda^{-1}) - delta_k ||theta_k||^2``
        (n_k parameters in group k). For one group, and for the separable structures (``kfac``,
        ``diag``), this decreases strictly in ``delta_k``: the root is unique and found by
        bisection. Per tensor on a dense posterior the groups are coupled: L-BFGS-B (SciPy) on
        ``t`` with this gradient. The exact Hessian (``full``) must be positive semi-definite:
        with a negative eigenvalue the evidence grows without bound as ``delta`` approaches it.
        """
        groups = (
            [np.arange(self.n_params)]
            if not layerwise
            else [np.arange(self.n_params)[sl] for _, sl in self.net.blocks()]
        )
        if any(float(np.sum(self.theta[g] ** 2)) == 0.0 for g in groups):
            raise ValueError("cannot choose a prior precision for parameters that are all zero")
        if self._H is not None:
            low = float(self._dense_eig()[0][0])
            if low < -1e-10 * max(1.0, float(self._dense_eig()[0][-1])):
                raise ValueError(
                    f"the curvature has a negative eigenvalue ({low:.3g}): the marginal "
                    "likelihood grows without bound as the prior precision approaches it; use "
                    "structure='gauss_newton'"
                )
        start = self._delta.copy()
        if not np.all(start > 0):
            start = np.ones(self.n_params)
        if layerwise and self.structure in ("full", "gauss_newton"):
            return self._lbfgs(groups, start, tol)
        delta = start.copy()
        for g in groups:
            delta[g] = self._bisect(g, delta, tol)
        self.prior_precision = delta[[g[0] for g in groups]] if layerwise else float(delta[0])
        return self.prior_precision

    def _gradient_log(self, delta: np.ndarray, g: np.ndarray) -> float:
        """``2 d lml / d log delta_g`` (with the value ``delta[g]`` shared in group g)."""
        self._delta = delta
        self._chol = None
        d = delta[g[0]]
        return float(g.size - d * self._trace(g) - d * np.sum(self.theta[g] ** 2))

    def _trace(self, g: np.ndarray) -> float:
        """``tr_g(Lambda^{-1})``: the posterior variances of group g summed. Over whole
        eigen-decomposed blocks it is the sum of the inverse eigenvalues (no rotation)."""
        whole = g.size == self.n_params
        if whole and self._H is not None and self._use_eig() is not None:
            lam = self._dense_eig()[0] / self._sigma**2 + float(self._delta[0])
            self._positive(lam)
            return float(np.sum(1.0 / lam))
        if self._kron is not None:
            total = 0.0
            for layer, (_, Dw, Db) in zip(self.net.layers, self._kron_eigs()):
                self._positive(Dw)
                self._positive(Db)
                if whole or g[0] == layer.w.start:
                    total += float(np.sum(1.0 / Dw))
                if whole or g[0] == layer.b.start:
                    total += float(np.sum(1.0 / Db))
            return total
        return float(np.sum(self.posterior_variance()[g]))

    def _bisect(self, g: np.ndarray, delta: np.ndarray, tol: float) -> float:
        def grad(t):
            trial = delta.copy()
            trial[g] = math.exp(t)
            return self._gradient_log(trial, g)

        lo = hi = math.log(delta[g[0]])
        while grad(lo) < 0:
            lo -= 4.0
            if lo < -120:
                raise ValueError("the marginal likelihood has no maximum for a positive prior")
        while grad(hi) > 0:
            hi += 4.0
            if hi > 120:  # pragma: no cover - the gradient tends to -inf
                raise ValueError("the marginal likelihood grows without bound in the prior")
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if grad(mid) > 0:
                lo = mid
            else:
                hi = mid
            if hi - lo < tol:
                break
        return math.exp(0.5 * (lo + hi))

    def _lbfgs(self, groups, delta, tol) -> np.ndarray:
        from scipy.optimize import minimize

        def expand(t):
            out = np.empty(self.n_params)
            for g, v in zip(groups, t):
                out[g] = math.exp(v)
            return out

        def negative(t):
            self._delta = expand(t)
            self._chol = None
            value = self.log_marginal_likelihood()
            var = self.posterior_variance()
            grad = [
                0.5 * (g.size - self._delta[g[0]] * (np.sum(var[g]) + np.sum(self.theta[g] ** 2)))
                for g in groups
            ]
            return -value, -np.asarray(grad)

        t0 = np.log([delta[g[0]] for g in groups])
        res = minimize(
            negative,
            t0,
            jac=True,
            method="L-BFGS-B",
            options={"gtol": tol, "ftol": 1e-15, "maxiter": 1000},
        )
        if not res.success and np.max(np.abs(res.jac)) > 1e-6 * max(1.0, abs(res.fun)):
            raise RuntimeError(f"the prior precision did not converge: {res.message}")
        self.prior_precision = np.exp(res.x)
        return self.prior_precision

    # -- predictions -------------------------------------------------------------------------
    def functional_variance(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``f_mu`` (m, K) and ``f_var`` (m, K, K): the output pre-activation at the fitted
        parameters and its covariance ``J Lambda^{-1} J^T`` under the linearised model."""
        net = self.net
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != net.sizes[0]:
            raise ValueError(f"X must have shape (samples, {net.sizes[0]}), got {X.shape}")
        m, K = X.shape[0], net.K
        f_mu = np.empty((m, K))
        f_var = np.empty((m, K, K))
        dense = self._H is not None
        if dense and self._use_eig() is None:
            chol = self._cholesky()  # f_var = (L^-1 J^T)^T (L^-1 J^T): no inverse formed
        elif dense:
            lam, V, _ = self._dense_eig()
            lam = lam / self._sigma**2 + float(self._delta[0])
            self._positive(lam)
            chol = None
            scale = V / np.sqrt(lam)  # f_var = (J V lam^-1/2)(J V lam^-1/2)^T
        var = self.posterior_variance() if self._diag is not None else None
        kron = list(self._kron_eigs()) if self._kron is not None else None
        step = net.block_size()
        if dense:  # the Jacobian J (m, K, P) is formed: 32 MiB of it at a time
            step = max(1, min(step, (32 * 2**20) // (8 * K * net.P)))
        for lo in range(0, m, step):
            rows = slice(lo, min(m, lo + step))
            s = net.forward(self.theta, X[rows])
            f_mu[rows] = s.z[-1]
            if dense:
                J = net.jacobian(s)
                mk = J.shape[0] * K
                if chol is not None:
                    T = _solve_lower(chol, J.reshape(mk, net.P).T).T.reshape(-1, K, net.P)
                else:
                    T = (J.reshape(mk, net.P) @ scale).reshape(-1, K, net.P)
                f_var[rows] = np.matmul(T, T.transpose(0, 2, 1))
                continue
            M = net.jacobian_factors(s)
            acc = np.zeros((rows.stop - rows.start, K, K))
            for l, layer in enumerate(net.layers, start=1):
                a = s.a[l - 1]
                if var is not None:  # diag: the variances of W_l and b_l
                    Mt, at = M[l], a
                    inv_w = var[layer.w].reshape(layer.units, layer.fan_in)
                    inv_b = var[layer.b]
                else:  # kfac: in the eigenbases of B and A both blocks are diagonal
                    k, Dw, Db = kron[l - 1]
                    Mt, at = np.matmul(k.QB.T, M[l]), a @ k.QA
                    inv_w, inv_b = 1.0 / Dw, 1.0 / Db
                # sum_ij J[k, ij] J[k', ij] / D_ij with J[k, ij] = Mt[i, k] at[j]
                weight = (at**2) @ inv_w.T + inv_b
                acc += np.matmul(Mt.transpose(0, 2, 1), Mt * weight[:, :, None])
            f_var[rows] = acc
        return f_mu, f_var

    def predict(self, X):
        """Classification: the probit approximation of the predictive class probabilities
        (m, K). Otherwise ``(mean, cov)``: the mean output (m, K) and the covariance of the
        output function (m, K, K) under the linearised model (add ``sigma_noise**2`` for a new
        observation)."""
        f_mu, f_var = self.functional_variance(X)
        kappa = 1.0 / np.sqrt(1.0 + math.pi / 8.0 * np.diagonal(f_var, axis1=1, axis2=2))
        if self.likelihood == "categorical":
            return _softmax(kappa * f_mu)
        if self.likelihood == "bernoulli":
            return 0.5 * (1.0 + np.tanh(0.5 * kappa * f_mu))
        act = self.net.layers[-1].act
        d = act.df(f_mu)
        return act.f(f_mu), d[:, :, None] * f_var * d[:, None, :]

    # -- GLM tables --------------------------------------------------------------------------
    def standard_errors(self) -> np.ndarray:
        """The posterior standard deviation of every parameter (P,), public order."""
        return np.sqrt(self.posterior_variance())

    def z_scores(self) -> np.ndarray:
        """Wald z-scores ``theta / standard error`` (P,)."""
        return self.theta / self.standard_errors()

    def p_values(self) -> np.ndarray:
        """Two-sided normal p-values of the z-scores (P,)."""
        z = np.abs(self.z_scores())
        return np.array([math.erfc(v / math.sqrt(2.0)) for v in z])

    def parameter_names(self) -> list[str]:
        """``W_1[i,j]``, ``b_1[i]``, ... in public order."""
        names = []
        for l, layer in enumerate(self.net.layers, start=1):
            names += [f"W_{l}[{i},{j}]" for i in range(layer.units) for j in range(layer.fan_in)]
            names += [f"b_{l}[{i}]" for i in range(layer.units)]
        return names

    def summary(self, names=None) -> str:
        """A coefficient table as statsmodels prints it: coef, std err, z, P>|z| and the 95 %
        interval of every parameter."""
        names = list(names) if names is not None else self.parameter_names()
        if len(names) != self.n_params:
            raise ValueError(f"expected {self.n_params} names, got {len(names)}")
        se = self.standard_errors()
        z = self.theta / se
        p = self.p_values()
        width = max(12, *(len(n) for n in names))
        head = (
            f"{'':<{width}} {'coef':>10} {'std err':>10} {'z':>10} {'P>|z|':>10} "
            f"{'[0.025':>10} {'0.975]':>10}"
        )
        rule = "-" * len(head)
        lines = [rule, head, rule]
        for i, name in enumerate(names):
            lo, hi = self.theta[i] - Z_975 * se[i], self.theta[i] + Z_975 * se[i]
            lines.append(
                f"{name:<{width}} {self.theta[i]:>10.4f} {se[i]:>10.3f} {z[i]:>10.3f} "
                f"{p[i]:>10.3f} {lo:>10.3f} {hi:>10.3f}"
            )
        lines.append(rule)
        return "\n".join(lines)


def _solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``L^{-1} B`` for a lower-triangular ``L`` (SciPy's triangular solve when installed)."""
    try:
        from scipy.linalg import solve_triangular
    except ImportError:  # pragma: no cover - SciPy comes with the test and bench extras
        return np.linalg.solve(L, B)
    return solve_triangular(L, B, lower=True, check_finite=False)


def _glm_curvature(net: Network, theta, X, Y, exact: bool) -> np.ndarray:
    """Without hidden layers: ``H = sum_x S_x kron [x, 1][x, 1]^T`` in public order."""
    s = net.forward(theta, X)
    if exact:
        S = net.output.hess(s.z[1], s.a[1], Y)
    else:
        R, sign = net.output.ggn_factor(s.z[1], s.a[1], Y)
        S = np.einsum("mkc,mc,mlc->mkl", R, sign, R)
    K, d = net.K, net.sizes[0]
    Xt = np.hstack([X, np.ones((X.shape[0], 1))])
    pos = np.empty((K, d + 1), dtype=np.int64)
    pos[:, :d] = np.arange(K * d).reshape(K, d)
    pos[:, d] = K * d + np.arange(K)
    H = np.empty((net.P, net.P))
    for k in range(K):
        for l in range(K):
            block = (Xt * S[:, k, l, None]).T @ Xt
            H[np.ix_(pos[k], pos[l])] = block
    return 0.5 * (H + H.T)
