"""Hypothesis fuzzer for the spec loader and the ``derive``/``generate`` commands.

Starts from the valid examples, mutates them (and writes random text and YAML punctuation), and
checks the command-line contract exactly: each run exits 0 or 2 (never 3, never raises), takes
under 20 s of CPU time (and less wall time than the time budget), and has the outcome the spec
loader predicts: exit 0 for a spec it accepts (2 only where the model would need more memory
than the stated limit), else exit 2 with exactly one line, ``symgrad: error: `` and the
loader's message.

The default run does a small share; ``pytest -m slow tests/test_fuzz_spec.py`` runs 10,000 cases
more (see ``SLOW_EXAMPLES``).
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
from symgrad.errors import SymgradError
from symgrad.runtime.limits import check_model_memory
from symgrad.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["xor", "softmax_iris", "mlp_digits"]
BASES = {n: yaml.safe_load((ROOT / "examples" / f"{n}.yaml").read_text()) for n in EXAMPLES}
CASES_RUN = {"n": 0}
#: Cases each slow test runs (10,000 in all).
SLOW_EXAMPLES = {"mutated": 4000, "random_text": 3000, "punctuation": 3000}
SLOW_RUN: dict[str, int] = {}
MAX_SECONDS = 20.0
#: Wall-clock ceiling of one run: the default time budget (60 s) and a margin to report it.
MAX_WALL_SECONDS = 70.0
SLOWEST: dict[str, float] = {}


@pytest.fixture(autouse=True)
def _stated_limits(monkeypatch, tmp_path_factory):
    """The same memory limit on every machine, and a private module cache."""
    monkeypatch.setenv("SYMGRAD_MAX_MEMORY", "16G")
    monkeypatch.delenv("SYMGRAD_TIME_BUDGET", raising=False)
    if "SYMGRAD_CACHE" not in __import__("os").environ:
        monkeypatch.setenv("SYMGRAD_CACHE", str(tmp_path_factory.mktemp("cache")))


def run_cli(argv: list[str]) -> tuple[int, str, float, float]:
    """Exit code, stderr, and the seconds the run took: CPU time of this process, wall time."""
    err, out = io.StringIO(), io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, err.getvalue(), time.process_time() - c0, time.perf_counter() - t0


def expected(path: Path, command: str) -> tuple[int, str | None]:
    """What the CLI must do with the spec file: (0, None), or (2, the one error line)."""
    try:
        spec = load_spec(path)
        if command == "generate":
            check_model_memory(spec)
    except SymgradError as exc:
        return 2, f"symgrad: error: {exc}"
    return 0, None


def check_text(
    text: str, tmp: Path, expect_path: str | None = None, commands=("derive", "generate")
) -> list[int]:
    """Run the commands on ``text``; assert the CLI contract exactly; return the exit codes."""
    spec = tmp / "spec.yaml"
    spec.write_text(text, encoding="utf-8")
    codes = []
    for command in commands:
        argv = [command, str(spec)] + (["-o", str(tmp / "out.py")] if command == "generate" else [])
        rc, err, cpu, wall = run_cli(argv)
        assert rc in (0, 2), (command, rc, err, text[:500])
        # the 20 s are counted in CPU time: on a shared machine the wall clock also counts the
        # time other processes had the CPU (a cold 64-layer derivation took 11 s of wall time
        # at load 4 on 2 cores, 44 s at load 6); the wall clock only has to stay below the
        # time budget, which stops any run that goes on
        assert cpu < MAX_SECONDS, (command, cpu, wall, text[:200])
        assert wall < MAX_WALL_SECONDS, (command, cpu, wall, text[:200])
        SLOWEST["cpu"] = max(SLOWEST.get("cpu", 0.0), cpu)
        SLOWEST["wall"] = max(SLOWEST.get("wall", 0.0), wall)
        want_rc, want_line = expected(spec, command)
        assert rc == want_rc, (command, rc, err, text[:500])
        if rc == 2:
            assert err.splitlines() == [want_line], (err, want_line)
            if expect_path:
                assert want_line.startswith(f"symgrad: error: {expect_path}:"), want_line
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


def fast_settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def slow_settings(kind: str):
    return settings(
        max_examples=SLOW_EXAMPLES[kind],
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def _count(kind: str) -> None:
    SLOW_RUN[kind] = SLOW_RUN.get(kind, 0) + 1


@fast_settings(60)
@given(case=mutated())
def test_mutated_specs(case, tmp_path):
    text, expect = case
    check_text(text, tmp_path, expect)


@fast_settings(30)
@given(text=st.text(max_size=300))
def test_random_text(text, tmp_path):
    check_text(text, tmp_path)


yaml_chars = st.sampled_from(list("[]{}:,-&*!|>'\"#%@`?\n \tab01.~") + ["\n  ", ": ", "- "])


@fast_settings(30)
@given(parts=st.lists(yaml_chars, max_size=80))
def test_random_yaml_punctuation(parts, tmp_path):
    check_text("".join(parts), tmp_path)


# -- the slow run: 10,000 cases, each one command (derive or generate, drawn) -----------------

commands = st.sampled_from([("derive",), ("generate",)])


@pytest.mark.slow
@slow_settings("mutated")
@given(case=mutated(), command=commands)
def test_slow_mutated_specs(case, command, tmp_path):
    text, expect = case
    check_text(text, tmp_path, expect, command)
    _count("mutated")


@pytest.mark.slow
@slow_settings("random_text")
@given(text=st.text(max_size=300), command=commands)
def test_slow_random_text(text, command, tmp_path):
    check_text(text, tmp_path, None, command)
    _count("random_text")


@pytest.mark.slow
@slow_settings("punctuation")
@given(parts=st.lists(yaml_chars, max_size=80), command=commands)
def test_slow_random_yaml_punctuation(parts, command, tmp_path):
    check_text("".join(parts), tmp_path, None, command)
    _count("punctuation")


@pytest.mark.slow
def test_slow_run_reached_10000_cases():
    """Runs after the three slow fuzzers (file order); needs all of them in this session."""
    if set(SLOW_RUN) != set(SLOW_EXAMPLES):
        pytest.skip("run the whole module with -m slow to count the cases")
    print(f"slow fuzz cases: {SLOW_RUN} ({sum(SLOW_RUN.values())} in all); slowest run: {SLOWEST}")
    assert sum(SLOW_RUN.values()) >= 10_000


BASE = (ROOT / "examples" / "xor.yaml").read_text()
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)

E = [2, 2]  # refused by both commands
OK = [0, 0]  # accepted by both
#: name -> (text, exit codes of derive and generate, the YAML path the error names or "").
HOSTILE = {
    "deep_list": ("[" * 10000 + "]" * 10000, E, ""),
    "deep_map": ("{a: " * 10000 + "1" + "}" * 10000, E, ""),
    "deep_block": ("".join("  " * i + "-\n" for i in range(2000)), E, ""),
    "billion_laughs": (LAUGHS, E, ""),
    "alias_simple": ("a: &x [1]\nb: *x\n", E, ""),
    "list_doc": ("- 1\n- 2\n", E, ""),
    "scalar_doc": ("42\n", E, ""),
    "empty_doc": ("", E, ""),
    "comment_only": ("# nothing\n", E, ""),
    "multi_doc": (BASE + "---\n" + BASE, E, ""),
    "python_tag": ("!!python/object/apply:os.system ['echo hi']\n", E, ""),
    "merge_key": ("a: {x: 1}\n<<: {b: 1}\n", E, "name"),
    "dup_top": (BASE + "name: other\n", E, "name"),
    "dup_custom": (BASE + 'activations: {sw: "z", sw: "z"}\n', E, "activations.sw"),
    "int_key": (BASE + "1: 2\n", E, "1"),
    "null_key": ("~: 1\n", E, "None"),
    "list_key": (BASE + "[1]: 2\n", E, ""),
    "mapping_key": ("? {a: 1}\n: 2\n", E, ""),
    "key_cr": (BASE + 'activations: {"\\r": 1}\n', E, "activations.'\\r'"),
    "key_lf": (BASE + 'activations: {"\\n": 1}\n', E, "activations.'\\n'"),
    "key_u2028": (BASE + 'activations: {"\\u2028": "z"}\n', E, "activations"),
    "name_lf": (BASE.replace("name: xor", 'name: "xor\\n"'), E, "name"),
    "custom_name_lf": (
        BASE.replace("sigmoid}", "sw}", 1) + 'activations: {"sw\\n": "z", sw: "z"}\n',
        E,
        "activations",
    ),
    "int_5000_digits": (BASE.replace("units: 2", "units: " + "7" * 5000), E, "layers[0].units"),
    "key_5000_digits": (BASE + "? " + "1" * 5000 + "\n: 2\n", E, ""),
    "tab": ("name:\txor\n", E, ""),
    "units_nan": (BASE.replace("units: 2", "units: .nan"), E, "layers[0].units"),
    "units_inf": (BASE.replace("units: 2", "units: .inf"), E, "layers[0].units"),
    "lr_nan": (
        BASE.replace("learning_rate: 2.0", "learning_rate: .nan"),
        E,
        "optimizer.learning_rate",
    ),
    "units_huge_valid": (BASE.replace("units: 2", "units: 65536"), OK, ""),
    "inputs_huge_valid": (BASE.replace("inputs: 2", "inputs: 1000000"), OK, ""),
    "units_over": (BASE.replace("units: 2", "units: 65537"), E, "layers[0].units"),
    "units_zero": (BASE.replace("units: 1,", "units: 0,"), E, "layers[1].units"),
    "units_negative": (BASE.replace("units: 1,", "units: -5,"), E, "layers[1].units"),
    "empty_layers": ("name: a\ninputs: 1\nlayers: []\nloss: mse\n", E, "layers"),
    "name_class": (BASE.replace("name: xor", "name: class"), E, "name"),
    "name_print": (BASE.replace("name: xor", "name: print"), E, "name"),
    "name_list": (BASE.replace("name: xor", "name: list"), E, "name"),
    # found by the slow fuzzer: the class name is a keyword or a built-in (class True, class
    # ValueError, class FloatingPointError: DivergenceError's base)
    "name_true": (BASE.replace("name: xor", "name: 'true'"), E, "name"),
    "name_none": (BASE.replace("name: xor", "name: none"), E, "name"),
    "name_value_error": (BASE.replace("name: xor", "name: value_error"), E, "name"),
    "name_floating_point_error": (
        BASE.replace("name: xor", "name: floating_point_error"),
        E,
        "name",
    ),
    "name_unicode": (BASE.replace("name: xor", "name: ñame"), E, "name"),
    "name_cyrillic": (BASE.replace("name: xor", "name: хor"), E, "name"),
    "bom": ("\ufeff" + BASE, OK, ""),
    "nul_byte": (BASE + 'description: "a\\0b"\n', OK, ""),
    "huge_text": ("a: " + "x" * 1_000_001 + "\n", E, ""),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile(case, tmp_path):
    text, codes, path = HOSTILE[case]
    assert check_text(text, tmp_path, path) == codes


WIDE = (
    "name: wide\ninputs: 1000000\nlayers:\n"
    + ("  - {units: 65536, activation: relu}\n" * 3)
    + "  - {units: 1, activation: identity}\nloss: mse\n"
)


def test_huge_width_is_derived_fast_and_refused_by_generate(tmp_path):
    """Derivation cost grows with depth, not width; the module would need ~3.1 TiB to import."""
    t0 = time.perf_counter()
    assert check_text(WIDE, tmp_path) == [0, 2]
    assert time.perf_counter() - t0 < MAX_SECONDS
    assert not (tmp_path / "out.py").exists()


def test_huge_width_generate_is_fast_when_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_MAX_MEMORY", "8T")
    t0 = time.perf_counter()
    assert check_text(WIDE, tmp_path) == [0, 0]
    assert time.perf_counter() - t0 < MAX_SECONDS
    compile((tmp_path / "out.py").read_text(), "out.py", "exec")


def test_report_case_count():
    """Not a check: prints how many fuzz cases ran in this session (see -s / -rA)."""
    print(f"fuzz cases run so far: {CASES_RUN['n']}; slowest run: {SLOWEST}")
