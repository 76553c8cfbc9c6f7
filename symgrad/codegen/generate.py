"""Code generation: the Derivation's expressions, printed, laid out by a Jinja2 template.

The template decides where a printed expression goes (loops, matrix products, the optimiser's
update); every derivative arrives here already derived (``derivation.py``) and is only printed
(``printing.py``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import jinja2
import sympy as sp
import yaml

from .. import calculus as C
from .._version import __version__
from ..derivation import Derivation, derive
from ..printers.numpy import inplace_multiply, inplace_statements, numpy_expr
from ..spec import MAX_HESSIAN_PARAMS, NEWTON_EXACT_MAX, Spec, load_spec

TEMPLATE = "trainer.py.jinja"

_OPT_TITLES = {
    "gd": "full-batch gradient descent",
    "sgd": "mini-batch stochastic gradient descent",
    "momentum": "gradient descent with momentum",
    "nesterov": "Nesterov accelerated gradient",
    "adagrad": "Adagrad",
    "rmsprop": "RMSProp",
    "adam": "Adam",
    "newton": "damped Newton's method",
}


def template_dir() -> Path:
    """Where the templates are: inside the installed package, or ``templates/`` of a checkout."""
    here = Path(__file__).resolve().parent.parent  # the symgrad package
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / TEMPLATE).is_file():
            return candidate
    raise FileNotFoundError(f"{TEMPLATE} not found next to {here}")  # pragma: no cover


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - we generate Python, not HTML
    )


def _names(l: int) -> dict:
    """Symbol -> variable name in layer l (one naming rule for all generated code)."""
    return {C.z: f"z_{l}", C.a: f"a_{l}", C.y: "Y", C.logsumexp: "lse"}


def _init(scheme: str, units: int, fan_in: int) -> tuple[str, str]:
    shape = f"({units}, {fan_in})"
    if scheme == "normal":
        return f"rng.standard_normal({shape})", f"rng.standard_normal({units})"
    if scheme == "xavier":
        std = f"np.sqrt(2.0 / ({fan_in} + {units}))"
    else:  # he
        std = f"np.sqrt(2.0 / {fan_in})"
    return f"{std} * rng.standard_normal({shape})", "0.0"


def _docstring_safe(text: str) -> str:
    """Text that cannot end or escape a docstring: ASCII, with backslashes and quotes escaped."""
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _paren(code: str) -> str:
    """Parenthesise printed code unless it is a name, a number or already wrapped whole."""
    if code.replace("_", "").replace(".", "").isalnum():
        return code
    if code.startswith("("):
        depth = 0
        for i, ch in enumerate(code):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                if i == len(code) - 1:
                    return code  # the first "(" closes at the very end
                break
    return f"({code})"


def build_context(d: Derivation, spec_file: str = "net.yaml") -> dict:
    """Everything the template needs, printed from the Derivation."""
    spec = d.spec
    loss = d.loss
    L = d.depth
    layers = []
    offset = 0
    internal = 0
    for layer in d.layers:
        act = layer.activation
        l = layer.index
        w0, w1 = offset, offset + layer.units * layer.fan_in
        b1 = w1 + layer.units
        offset = b1
        i0, i1 = internal, internal + layer.units * (layer.fan_in + 1)
        internal = i1
        names = _names(l)
        ctx = {
            "l": l,
            "i0": i0,
            "i1": i1,
            "units": layer.units,
            "fan_in": layer.fan_in,
            "w0": w0,
            "w1": w1,
            "b1": b1,
            "softmax": act.vector,
            "eq_grad": d.eq(f"grad.{l}"),
            "eq_backprop": d.eq(f"backprop.{l - 1}") if l > 1 else None,
        }
        ctx["init_w"], ctx["init_b"] = _init(spec.init.scheme, layer.units, layer.fan_in)
        scratch = 0
        keep_z = act.vector or _needs_z(d, layer)
        if not act.vector:
            ctx["forward_expr"] = numpy_expr(act.f, {C.z: f"z_{l}"})
            lines, used = inplace_statements(act.f, f"a_{l}", {C.z: f"z_{l}"}, f"t_{l}_")
            scratch = max(scratch, used)
            if act.f == C.z:
                # identity: a_l is z_l; the product is written straight into a_l
                lines = [] if not keep_z else [f"np.copyto(a_{l}, z_{l})"]
            elif not keep_z and any(f"z_{l}" in line for line in lines[1:]):
                keep_z = True  # the in-place sequence reads z after writing a: keep z apart
            if not keep_z:
                lines = [line.replace(f"z_{l}", f"a_{l}") for line in lines]
            ctx["train_forward_lines"] = lines
            fp = act.df_out if act.has_output_form else act.df
            fpp = act.d2f_out if act.d2f_out is not None else act.d2f
            ctx["fp_expr"] = numpy_expr(fp, names)
            if fp.is_Number:
                ctx["fp_expr"] = f"np.full_like(a_{l}, {ctx['fp_expr']})"
            ctx["fp_expr_paren"] = _paren(ctx["fp_expr"])
            ctx["fpp_expr"] = numpy_expr(fpp, names)
            ctx["fpp_expr_paren"] = _paren(ctx["fpp_expr"])
            ctx["fpp_zero"] = fpp == 0
            lines, used = inplace_multiply(fp, f"delta_{l}", names, f"t_{l}_")
            ctx["fp_lines"] = lines
            if l < d.depth:  # the output layer's f' is fused into its delta
                scratch = max(scratch, used)
        ctx["scratch"] = scratch
        ctx["keep_z"] = keep_z
        layers.append(ctx)
    out_names = _names(L)
    delta_lines, used = inplace_statements(loss.delta, f"delta_{L}", out_names, f"t_{L}_")
    layers[-1]["scratch"] = max(layers[-1]["scratch"], used)
    opt = spec.optimizer.name
    delta_code = numpy_expr(loss.delta, out_names)
    for c in layers:
        var = f"z_{c['l']}"
        hidden = c["l"] < L
        c["z_in_backward"] = var in (c.get("fp_expr", "") if hidden else delta_code)
        c["z_in_rop"] = var in c.get("fp_expr", "") + c.get("fpp_expr", "") or (
            not hidden and var in delta_code + _output_second_order_code(d)
        )
    ctx = {
        "a_in_closed": "a_1" in _output_second_order_code(d),
        "a_last_in_rop": f"a_{L}" in _output_second_order_code(d),
        "version": __version__,
        "spec_file": spec_file,
        "spec_yaml": [
            _docstring_safe(line)
            for line in yaml.safe_dump(spec.canonical(), sort_keys=False).rstrip().splitlines()
        ],
        "digest": spec.digest(),
        "name": spec.name,
        "class_name": spec.class_name,
        "title": _title(spec),
        "sizes": spec.sizes,
        "n_params": spec.n_params,
        "max_width": max(spec.sizes),
        "max_hessian_params": MAX_HESSIAN_PARAMS,
        "newton_exact_max": NEWTON_EXACT_MAX,
        "is_classifier": spec.is_classifier,
        "predict_doc": "1 where a > 0.5, else 0." if spec.outputs == 1 else "argmax of a_L.",
        "dtype": spec.dtype,
        "init_scheme": spec.init.scheme,
        "init_seed": spec.init.seed,
        "opt": spec.optimizer,
        "opt_title": _OPT_TITLES[spec.optimizer.name],
        "l2": spec.regularization.l2,
        "l1": spec.regularization.l1,
        "layers": layers,
        "L_last": L,
        "softmax": d.output.vector,
        "closed_form": not d.has_hidden,
        "two_layer": d.depth == 2,
        "eq_hess_blocks": d.eq("hess.blocks") if d.depth == 2 else None,
        "loss_expr": numpy_expr(loss.stable, out_names),
        "delta_expr": numpy_expr(loss.delta, out_names),
        "delta_lines_train": delta_lines,
        "layout": [(c["units"], c["fan_in"], c["w0"], c["w1"]) for c in layers],
        "fold_lr": opt in ("gd", "sgd", "momentum", "nesterov"),
        "needs_work": bool(spec.regularization.l2 or spec.regularization.l1)
        or opt in ("nesterov", "adagrad", "rmsprop", "adam"),
        "weight_ranges": [(c["w0"], c["w1"]) for c in layers],
        "eq_cost": d.eq("cost"),
        "eq_stable": d.eq("cost.stable") if "cost.stable" in d._by_key else None,
        "eq_delta": d.eq("delta.out"),
        "eq_hess_out": d.eq("hess.out"),
        "eq_hess_closed": d.eq("hess.closed") if not d.has_hidden else None,
        "eq_rop_f": d.eq("rop.forward"),
        "eq_rop_b": d.eq("rop.backward"),
        "eq_rop_g": d.eq("rop.grad"),
        "eq_gn": d.eq("gauss_newton"),
        "eq_newton": d.eq("newton"),
    }
    if d.depth == 2:
        # the block Hessian evaluates the same printed expressions on a chunk of samples
        two = {C.z: "z_2", C.a: "a_2", C.y: "Y_", C.logsumexp: "lse"}
        ctx["delta_expr_2l"] = numpy_expr(loss.delta, two)
        hidden = d.layers[0].activation
        fp = hidden.df_out if hidden.has_output_form else hidden.df
        fpp = hidden.d2f_out if hidden.d2f_out is not None else hidden.d2f
        layers[0]["fp_expr_2l"] = numpy_expr(fp, _names(1))
        layers[0]["fpp_expr_2l"] = _paren(numpy_expr(fpp, _names(1)))
        if d.output.vector:
            ctx["jac_diag_expr_2l"] = numpy_expr(loss.jac_diag, two)
            ctx["jac_v_expr_2l"] = numpy_expr(loss.jac_outer[1], two)
        else:
            ctx["s_expr_2l"] = numpy_expr(loss.s, two)
    if d.output.vector:
        u, v = loss.jac_outer
        ctx["jac_diag_expr"] = numpy_expr(loss.jac_diag, out_names)
        ctx["jac_u_expr"] = _paren(numpy_expr(u, out_names))
        ctx["jac_v_expr"] = _paren(numpy_expr(v, out_names))
        one = _names(1)
        ctx["jac_diag_expr_1"] = numpy_expr(loss.jac_diag, one)
        ctx["jac_u_expr_1"] = numpy_expr(u, one)
        ctx["jac_v_expr_1"] = numpy_expr(v, one)
    else:
        ctx["s_expr"] = numpy_expr(loss.s, out_names)
        ctx["s_gn_expr"] = numpy_expr(gauss_newton_weight(d), out_names)
        ctx["s_expr_paren"] = _paren(ctx["s_expr"])
        ctx["s_gn_expr_paren"] = _paren(ctx["s_gn_expr"])
        ctx["s_expr_1"] = numpy_expr(loss.s, _names(1))
    return ctx


def _needs_z(d: Derivation, layer) -> bool:
    """Whether training needs z_l after the activation (no output form, or the output's loss)."""
    act = layer.activation
    if not act.has_output_form:
        return True
    if layer.index == d.depth:
        return d.loss.stable_in_z or d.loss.delta_in_z
    return False


def _output_second_order_code(d: Derivation) -> str:
    """The printed output-layer second-order expressions (to see which names they use)."""
    names = _names(d.depth)
    if d.output.vector:
        u, v = d.loss.jac_outer
        return " ".join(numpy_expr(e, names) for e in (d.loss.jac_diag, u, v))
    return numpy_expr(d.loss.s, names) + " " + numpy_expr(gauss_newton_weight(d), names)


def gauss_newton_weight(d: Derivation) -> sp.Expr:
    """The S of G = J^T S J: d(delta)/dz for a matching loss, else l''(a) f'(z)^2 (PSD)."""
    loss, out = d.loss, d.output
    if loss.matching:
        return loss.s
    fp = out.df_out if out.has_output_form else out.df
    return loss.d2l_da2 * fp**2 if not loss.delta_in_z else (loss.d2l_da2.subs(C.a, out.f) * fp**2)


def _title(spec: Spec) -> str:
    sizes = "-".join(str(s) for s in spec.sizes)
    acts = "/".join(layer.activation for layer in spec.layers)
    return f"A {sizes} network ({acts}) trained on the {spec.loss} cost."


def generate_source(spec: Spec | str | os.PathLike, spec_file: str | None = None) -> str:
    """The trainer module's source for ``spec`` (a Spec, or a path to a YAML file)."""
    if not isinstance(spec, Spec):
        spec_file = spec_file or Path(spec).as_posix()
        spec = load_spec(spec)
    d = derive(spec)
    return render_source(d, spec_file or f"{spec.name}.yaml")


def render_source(d: Derivation, spec_file: str) -> str:
    template = _environment().get_template(TEMPLATE)
    return template.render(**build_context(d, spec_file))
