"""Hypothesis fuzzer for the spec loader and the ``derive``/``generate`` commands.

Starts from the valid examples, mutates them, and checks that the CLI exits 0 or 2 (never 3,
never raises), prints exactly one ``symgrad: error:`` line on 2, and stays fast.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["xor", "softmax_iris", "mlp_digits"]
BASES = {n: yaml.safe_load((ROOT / "examples" / f"{n}.yaml").read_text()) for n in EXAMPLES}
CASES_RUN = {"n": 0}
MAX_SECONDS = 20.0


def run_cli(argv: list[str]) -> tuple[int, str, float]:
    err, out = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, err.getvalue(), time.perf_counter() - t0


def check_text(text: str, tmp: Path, expect_path: str | None = None) -> list[int]:
    """Run derive and generate on ``text``; assert the CLI contract; return the exit codes."""
    spec = tmp / "spec.yaml"
    spec.write_text(text, encoding="utf-8")
    codes = []
    for argv in (["derive", str(spec)], ["generate", str(spec), "-o", str(tmp / "out.py")]):
        rc, err, dt = run_cli(argv)
        assert rc in (0, 2), (argv[0], rc, err, text[:500])
        assert dt < MAX_SECONDS, (argv[0], dt, text[:200])
        if rc == 2:
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("symgrad: error:"), err
            if expect_path:
                assert f"error: {expect_path}:" in lines[0], (expect_path, lines[0])
        codes.append(rc)
    CASES_RUN["n"] += 1
    return codes


def dump(doc) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# -- strategies ------------------------------------------------------------------------------

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(
        [
            0,
            -1,
            65536,
            65537,
            10**6,
            10**6 + 1,
            float("nan"),
            float("inf"),
            "class",
            "print",
            "list",
            "ñame",
            'x"y',
            "relu",
            "softmax",
            "",
        ]
    ),
)
names = st.one_of(
    st.sampled_from(
        [
            "class",
            "print",
            "list",
            "import",
            "lambda",
            "None",
            "np",
            "numpy",
            "ñame",
            "Δ",
            "a b",
            "a-b",
            "_x",
            "1x",
            "x" * 65,
            "x" * 64,
            "ok_name",
        ]
    ),
    # line breaks in a key are covered by test_key_with_line_break (a known bug)
    st.text(st.characters(blacklist_categories=("Cc", "Zl", "Zp", "Cs")), max_size=12),
)


@st.composite
def mutated(draw):
    base = draw(st.sampled_from(EXAMPLES))
    doc = copy.deepcopy(BASES[base])
    kind = draw(
        st.sampled_from(
            [
                "top_value",
                "drop_key",
                "unknown_key",
                "layer_value",
                "layer_drop",
                "units",
                "activation",
                "name",
                "empty_layers",
                "loss",
                "opt_value",
                "custom_acts",
                "many_layers",
            ]
        )
    )
    expect = None
    if kind == "top_value":
        key = draw(st.sampled_from(sorted(doc)))
        doc[key] = draw(odd_values)
    elif kind == "drop_key":
        key = draw(st.sampled_from(["name", "inputs", "layers", "loss"]))
        del doc[key]
        expect = key
    elif kind == "unknown_key":
        doc[draw(st.sampled_from(["lr", "Layers", "extra", "optimiser"]))] = 1
    elif kind == "layer_value":
        i = draw(st.integers(0, len(doc["layers"]) - 1))
        key = draw(st.sampled_from(["units", "activation", "alpha", "bogus"]))
        doc["layers"][i][key] = draw(odd_values)
    elif kind == "layer_drop":
        i = draw(st.integers(0, len(doc["layers"]) - 1))
        key = draw(st.sampled_from(["units", "activation"]))
        del doc["layers"][i][key]
        expect = f"layers[{i}].{key}"
    elif kind == "units":
        i = draw(st.integers(0, len(doc["layers"]) - 1))
        u = draw(st.sampled_from([0, -1, -(10**9), 65537, 10**12, 65536, 1, 2]))
        doc["layers"][i]["units"] = u
        if u < 1 or u > 65536:
            expect = f"layers[{i}].units"
    elif kind == "activation":
        i = draw(st.integers(0, len(doc["layers"]) - 1))
        doc["layers"][i]["activation"] = draw(
            st.sampled_from(
                [
                    "nope",
                    "softmax",
                    "relu",
                    "elu",
                    "leaky_relu",
                    "softplus",
                    "identity",
                    "tanh",
                    "Sigmoid",
                    "",
                ]
            )
        )
    elif kind == "name":
        doc["name"] = draw(names)
    elif kind == "empty_layers":
        doc["layers"] = []
        expect = "layers"
    elif kind == "loss":
        doc["loss"] = draw(st.sampled_from(["mse", "log_loss", "cross_entropy", "custom", "x"]))
    elif kind == "opt_value":
        opt = dict(doc.get("optimizer", {}))
        key = draw(
            st.sampled_from(
                [
                    "name",
                    "learning_rate",
                    "batch_size",
                    "epochs",
                    "momentum",
                    "beta1",
                    "beta2",
                    "eps",
                    "rho",
                    "damping",
                    "nope",
                ]
            )
        )
        v = draw(odd_values)
        opt[key] = v
        doc["optimizer"] = opt
        if isinstance(v, float) and not math.isfinite(v):
            expect = f"optimizer.{key}"
    elif kind == "custom_acts":
        doc["activations"] = {draw(names): draw(st.sampled_from(["z", 1, None, "z**2"]))}
    elif kind == "many_layers":
        k = draw(st.sampled_from([2, 10, 64, 65, 200]))
        doc["layers"] = [{"units": 3, "activation": "tanh"} for _ in range(k - 1)] + [
            doc["layers"][-1]
        ]
        if k > 64:
            expect = "layers"
    return dump(doc), expect


def _custom_parser_available() -> bool:
    try:
        import symgrad.calculus.exprparse  # noqa: F401
    except ImportError:
        return False
    return True


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=mutated())
def test_mutated_specs(case, tmp_path):
    text, expect = case
    doc = yaml.safe_load(text)
    if isinstance(doc, dict) and doc.get("activations") and not _custom_parser_available():
        # a valid custom activation needs symgrad/exprparse.py (not written yet): only check
        # that validation errors stay clean, skipping specs that would reach the parser
        from symgrad import SpecError, load_spec

        try:
            load_spec(text)
        except SpecError:
            pass
        else:
            return
    check_text(text, tmp_path, expect)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=300))
def test_random_text(text, tmp_path):
    check_text(text, tmp_path)


yaml_chars = st.sampled_from(list("[]{}:,-&*!|>'\"#%@`?\n \tab01.~") + ["\n  ", ": ", "- "])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=st.lists(yaml_chars, max_size=80))
def test_random_yaml_punctuation(parts, tmp_path):
    check_text("".join(parts), tmp_path)


BASE = (ROOT / "examples" / "xor.yaml").read_text()
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)

HOSTILE = {
    "deep_list": ("[" * 10000 + "]" * 10000, ""),
    "deep_map": ("{a: " * 10000 + "1" + "}" * 10000, ""),
    "deep_block": ("".join("  " * i + "-\n" for i in range(2000)), ""),
    "billion_laughs": (LAUGHS, ""),
    "alias_simple": ("a: &x [1]\nb: *x\n", ""),
    "list_doc": ("- 1\n- 2\n", ""),
    "scalar_doc": ("42\n", ""),
    "empty_doc": ("", ""),
    "comment_only": ("# nothing\n", ""),
    "multi_doc": (BASE + "---\n" + BASE, ""),
    "python_tag": ("!!python/object/apply:os.system ['echo hi']\n", ""),
    "merge_key": ("a: {x: 1}\n<<: {b: 1}\n", ""),
    "dup_top": (BASE + "name: other\n", "name"),
    "dup_custom": (BASE + 'activations: {sw: "z", sw: "z"}\n', None),
    "int_key": (BASE + "1: 2\n", None),
    "null_key": ("~: 1\n", None),
    "tab": ("name:\txor\n", ""),
    "units_nan": (BASE.replace("units: 2", "units: .nan"), "layers[0].units"),
    "units_inf": (BASE.replace("units: 2", "units: .inf"), "layers[0].units"),
    "lr_nan": (
        BASE.replace("learning_rate: 2.0", "learning_rate: .nan"),
        "optimizer.learning_rate",
    ),
    "units_huge_valid": (BASE.replace("units: 2", "units: 65536"), None),
    "inputs_huge_valid": (BASE.replace("inputs: 2", "inputs: 1000000"), None),
    "units_over": (BASE.replace("units: 2", "units: 65537"), "layers[0].units"),
    "units_zero": (BASE.replace("units: 1,", "units: 0,"), "layers[1].units"),
    "units_negative": (BASE.replace("units: 1,", "units: -5,"), "layers[1].units"),
    "empty_layers": ("name: a\ninputs: 1\nlayers: []\nloss: mse\n", "layers"),
    "name_class": (BASE.replace("name: xor", "name: class"), "name"),
    "name_print": (BASE.replace("name: xor", "name: print"), "name"),
    "name_list": (BASE.replace("name: xor", "name: list"), "name"),
    "name_unicode": (BASE.replace("name: xor", "name: ñame"), "name"),
    "name_cyrillic": (BASE.replace("name: xor", "name: хor"), "name"),
    "bom": ("\ufeff" + BASE, None),
    "nul_byte": (BASE + 'description: "a\\0b"\n', None),
    "huge_text": ("a: " + "x" * 1_000_001 + "\n", ""),
}
KNOWN_BUGS = {
    "list_key": BASE + "[1]: 2\n",
    "mapping_key": "? {a: 1}\n: 2\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile(case, tmp_path):
    text, path = HOSTILE[case] if isinstance(HOSTILE[case], tuple) else (HOSTILE[case], None)
    codes = check_text(text, tmp_path, path)
    if path is not None:
        assert codes == [2, 2]


@pytest.mark.parametrize("case", sorted(KNOWN_BUGS))
def test_unhashable_keys(case, tmp_path):
    check_text(KNOWN_BUGS[case], tmp_path)


@pytest.mark.parametrize("key", ["\\r", "\\n", "\\u2028"])
def test_key_with_line_break(key, tmp_path):
    check_text(BASE + f'activations: {{"{key}": 1}}\n', tmp_path)


def test_huge_width_generate_is_fast(tmp_path):
    text = (
        "name: wide\ninputs: 1000000\nlayers:\n"
        + ("  - {units: 65536, activation: relu}\n" * 3)
        + "  - {units: 1, activation: identity}\n"
    )
    text += "loss: mse\n"
    t0 = time.perf_counter()
    assert check_text(text, tmp_path) == [0, 0]
    assert time.perf_counter() - t0 < MAX_SECONDS
    compile((tmp_path / "out.py").read_text(), "out.py", "exec")


def test_report_case_count():
    """Not a check: prints how many fuzz cases ran in this session (see -s / -rA)."""
    print(f"fuzz cases run so far: {CASES_RUN['n']}")
