"""One test per validation rule of symgrad/spec.py, with the exact message."""

from __future__ import annotations

import copy

import pytest
from conftest import spec_error

from symgrad import SpecError, load_spec

BASE = {
    "name": "net",
    "inputs": 2,
    "layers": [{"units": 3, "activation": "tanh"}, {"units": 1, "activation": "sigmoid"}],
    "loss": "log_loss",
}
SOFTMAX = {
    "name": "sm",
    "inputs": 4,
    "layers": [{"units": 3, "activation": "softmax"}],
    "loss": "cross_entropy",
}
KNOWN = "identity, sigmoid, tanh, relu, leaky_relu, softplus, elu, softmax"


def spec(**changes):
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


err = spec_error


def test_valid_base_loads():
    assert load_spec(BASE).n_params == 2 * 3 + 3 + 3 + 1
    assert load_spec(SOFTMAX).outputs == 3


def test_unknown_activation_lists_known():
    e = err(
        spec(layers=[{"units": 3, "activation": "swish"}, {"units": 1, "activation": "sigmoid"}])
    )
    assert e.path == "layers[0].activation"
    assert e.message == f"unknown activation 'swish'; known: {KNOWN}"
    assert str(e) == f"layers[0].activation: unknown activation 'swish'; known: {KNOWN}"


def test_softmax_hidden():
    e = err(
        spec(layers=[{"units": 3, "activation": "softmax"}, {"units": 1, "activation": "sigmoid"}])
    )
    assert str(e) == "layers[0].activation: softmax is allowed on the output layer only"


def test_cross_entropy_without_softmax():
    assert str(err(spec(loss="cross_entropy"))) == (
        "loss: cross_entropy needs a softmax output layer; use log_loss with sigmoid"
    )


def test_softmax_without_cross_entropy():
    d = copy.deepcopy(SOFTMAX)
    d["loss"] = "mse"
    assert str(err(d)) == "loss: a softmax output layer needs loss cross_entropy"


def test_softmax_one_unit():
    d = copy.deepcopy(SOFTMAX)
    d["layers"][0]["units"] = 1
    assert str(err(d)) == "layers[0].units: softmax needs at least 2 units"


def test_log_loss_without_sigmoid():
    d = spec(layers=[{"units": 1, "activation": "tanh"}])
    assert str(err(d)) == (
        "loss: log_loss needs outputs in (0, 1): a sigmoid output layer, not 'tanh'"
    )


def test_unknown_loss_lists_known():
    assert str(err(spec(loss="hinge"))) == (
        "loss: unknown loss 'hinge'; known: mse, log_loss, cross_entropy"
    )


def test_alpha_on_wrong_activation():
    d = spec(
        layers=[
            {"units": 3, "activation": "tanh", "alpha": 0.1},
            {"units": 1, "activation": "sigmoid"},
        ]
    )
    assert str(err(d)) == "layers[0].alpha: alpha applies to leaky_relu and elu only, not 'tanh'"


def test_bad_name():
    assert str(err(spec(name="1net"))) == (
        "name: name must be a letter followed by letters, digits or underscores, got '1net'"
    )


@pytest.mark.parametrize("word", ["class", "print", "list", "match", "np", "numpy"])
def test_keyword_or_builtin_name(word):
    assert str(err(spec(name=word))) == (
        f"name: name {word!r} is a Python keyword or built-in name; choose another"
    )


def test_name_too_long():
    assert str(err(spec(name="a" * 65))) == "name: name must be at most 64 characters long"
    assert load_spec(spec(name="a" * 64)).name == "a" * 64


def test_unknown_key():
    assert str(err(spec(lr=0.1))) == "lr: unknown key"


def test_unknown_nested_key():
    assert str(err(spec(optimizer={"lr": 0.1}))) == "optimizer.lr: unknown key"


@pytest.mark.parametrize("key", ["name", "inputs", "layers", "loss"])
def test_missing_key(key):
    d = spec()
    del d[key]
    assert str(err(d)) == f"{key}: required key is missing"


def test_alias_refused():
    text = "name: net\ninputs: &n 2\nlayers: [{units: *n, activation: sigmoid}]\nloss: mse\n"
    assert str(err(text)) == "YAML aliases are not allowed (line 3)"


def test_duplicate_key():
    text = "name: net\nname: other\ninputs: 2\n"
    assert str(err(text)) == "name: duplicate key (line 2)"


def test_duplicate_nested_key_names_path():
    text = (
        "name: net\ninputs: 2\nlayers: [{units: 1, activation: sigmoid}]\nloss: mse\n"
        "optimizer: {name: gd, name: sgd}\n"
    )
    assert err(text).path == "optimizer.name"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_inf(value):
    d = spec(optimizer={"learning_rate": float(value)})
    assert str(err(d)) == f"optimizer.learning_rate: expected a finite number, got {float(value)!r}"


def test_nan_in_yaml():
    text = "name: net\ninputs: 2\nlayers: [{units: .nan, activation: sigmoid}]\nloss: mse\n"
    assert str(err(text)) == "layers[0].units: expected a finite number, got nan"


def test_units_zero():
    d = spec(layers=[{"units": 0, "activation": "sigmoid"}])
    assert str(err(d)) == "layers[0].units: input should be greater than or equal to 1, got 0"


def test_units_over_limit():
    d = spec(layers=[{"units": 65537, "activation": "sigmoid"}])
    assert str(err(d)) == (
        "layers[0].units: input should be less than or equal to 65536, got 65537"
    )


def test_units_fractional_and_bool():
    d = spec(layers=[{"units": 1.5, "activation": "sigmoid"}])
    assert str(err(d)) == "layers[0].units: input should be a valid integer, got 1.5"
    d = spec(layers=[{"units": True, "activation": "sigmoid"}])
    assert str(err(d)) == "layers[0].units: expected a number or a name, got true"


@pytest.mark.parametrize("where", ["inputs", "batch_size", "epochs"])
def test_bool_refused_for_other_integers(where):
    d = spec(inputs=True) if where == "inputs" else spec(optimizer={where: True})
    err(d)


def test_string_units_refused():
    err(spec(layers=[{"units": "1", "activation": "sigmoid"}]))


def test_inputs_limit():
    assert str(err(spec(inputs=1_000_001))) == (
        "inputs: input should be less than or equal to 1000000, got 1000001"
    )


def test_layers_limit_and_empty():
    e = err(spec(layers=[]))
    assert e.path == "layers" and "at least 1 item" in e.message
    e = err(spec(layers=[{"units": 1, "activation": "sigmoid"}] * 65))
    assert e.path == "layers" and "at most 64 items" in e.message


def test_not_a_mapping():
    assert str(err("- 1\n- 2\n")) == (
        "the spec must be a mapping of keys (name, inputs, ...), got a list"
    )
    assert str(err("\n# empty\n")) == (
        "the spec must be a mapping of keys (name, inputs, ...), got empty document"
    )


def test_non_string_key():
    assert str(err({**BASE, 3: 1})) == "3: keys must be strings"


def test_literal_choices():
    assert str(err(spec(dtype="float16"))) == (
        "dtype: expected one of 'float32' or 'float64', got 'float16'"
    )
    e = err(spec(optimizer={"name": "bfgs"}))
    assert e.path == "optimizer.name" and "'bfgs'" in e.message and "'newton'" in e.message


def test_custom_name_is_builtin():
    e = err(spec(activations={"relu": "z"}))
    assert str(e) == "activations: 'relu' is a built-in name; choose another"


def test_custom_name_bad_identifier():
    e = err(spec(activations={"a b": "z"}))
    assert e.path == "activations"
    assert "must be a letter followed by letters" in e.message


def test_invalid_yaml():
    assert str(err("name: [\n")).startswith("invalid YAML at line 2, column 1:")


def test_deep_yaml():
    assert str(err("[" * 10000 + "]" * 10000)) == "invalid YAML: nested too deeply"


def test_file_errors(tmp_path):
    assert str(err(tmp_path / "missing.yaml")).endswith("missing.yaml: no such file")
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 1_000_001)
    assert "larger than 1000000 bytes" in str(err(big))


def test_description_limit():
    e = err(spec(description="x" * 2001))
    assert e.path == "description"


@pytest.mark.parametrize("desc", ['say """hi"""', "C:\\Users\\me", "a \\N b"])
def test_description_safe_for_generated_docstring(desc):
    from symgrad import generate_source

    try:
        s = load_spec(spec(description=desc))
    except SpecError:
        return  # refusing it is also fine
    compile(generate_source(s), "gen.py", "exec")


def test_name_colliding_with_generated_names():
    import numpy as np

    from symgrad import load_trainer

    d = {
        "name": "divergence_error",
        "inputs": 2,
        "layers": [{"units": 1, "activation": "identity"}],
        "loss": "mse",
        "optimizer": {"learning_rate": 1e6},
    }
    try:
        s = load_spec(d)
    except SpecError:
        return  # refusing it is also fine
    m = load_trainer(s)
    X = np.random.default_rng(0).standard_normal((50, 2)) * 1e3
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError):
        m.fit(X, np.ones((50, 1)), epochs=50)
