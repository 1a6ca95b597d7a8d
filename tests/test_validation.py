"""Bad constructor arguments and bad input shapes raise clear `ValueError`s.

Every invalid argument raises at construction, naming the argument; a wrong
input rank raises at build with the received shape in the message.
"""

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp
from layer_classes import ALL, CONV, DENSE

from tfp_deepgen import _validation, layers, losses, metrics, priors

tfd = tfp.distributions


def _name(cls):
    return cls.__name__


def _make(cls, **kwargs):
    """`cls` with valid required arguments, overridden by `kwargs`."""
    if cls in DENSE:
        args = {"units": 2}
    else:
        args = {"filters": 2, "kernel_size": 3}
    args.update(kwargs)
    return cls(**args)


def _raises_naming(name, cls, **kwargs):
    with pytest.raises(ValueError, match=f"`{name}`") as info:
        _make(cls, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------
# Valid construction (the baseline every invalid case departs from)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_valid_arguments_construct_and_build(cls):
    layer = _make(
        cls,
        kl_weight=0.0,
        sampling="MEAN",
        seed=3,
        kernel_prior=priors.ScaleMixtureNormal(),
        bias_prior=priors.Normal(0.0, 1.0),
        kernel_posterior_scale_init=1e-5,
    )
    assert layer.sampling == "mean"
    shape = (2, 7) if cls in DENSE else (2,) + (5,) * cls.rank + (3,)
    out = layer(np.ones(shape, np.float32))
    assert tuple(out.shape) == tuple(layer.compute_output_shape(shape))


# --------------------------------------------------------------------------
# Arguments shared by every layer
# --------------------------------------------------------------------------

COMMON_INVALID = [
    ("kl_weight", -1.0),
    ("kl_weight", -1e-9),
    ("kl_weight", float("nan")),
    ("kl_weight", float("inf")),
    ("kl_weight", "0.1"),
    ("kl_weight", None),
    ("kernel_posterior_scale_init", 0.0),
    ("kernel_posterior_scale_init", -1e-3),
    ("kernel_posterior_scale_init", float("nan")),
    ("kernel_posterior_scale_init", "small"),
    ("bias_posterior_scale_init", 0.0),
    ("bias_posterior_scale_init", -1.0),
    ("sampling", "draw"),
    ("sampling", "samples"),
    ("sampling", None),
    ("sampling", 1),
    ("seed", 1.5),
    ("seed", "3"),
    ("seed", True),
    ("seed", [1, 2]),
    ("kernel_prior", "normal"),
    ("kernel_prior", tfd.Normal(0.0, 1.0)),
    ("kernel_prior", priors.Normal),
    ("kernel_prior", keras.initializers.RandomNormal()),
    ("kernel_prior", 1.0),
    ("bias_prior", "normal"),
    ("bias_prior", tfd.Normal(0.0, 1.0)),
    ("use_bias", "yes"),
    ("use_bias", 1),
]


@pytest.mark.parametrize(
    "argument,value",
    COMMON_INVALID,
    ids=[f"{a}={type(v).__name__}:{v!s:.12}" for a, v in COMMON_INVALID],
)
@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_invalid_common_argument(cls, argument, value):
    message = _raises_naming(argument, cls, **{argument: value})
    assert "Received" in message


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_bias_prior_without_bias(cls):
    message = _raises_naming("bias_prior", cls, bias_prior=priors.Normal(), use_bias=False)
    assert "use_bias" in message


# --------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------


@pytest.mark.parametrize("units", [0, -1, 2.0, 2.5, "2", None, True])
@pytest.mark.parametrize("cls", DENSE, ids=_name)
def test_invalid_units(cls, units):
    _raises_naming("units", cls, units=units)


# --------------------------------------------------------------------------
# Conv
# --------------------------------------------------------------------------


@pytest.mark.parametrize("filters", [0, -4, 3.0, "8", None])
@pytest.mark.parametrize("cls", CONV, ids=_name)
def test_invalid_filters(cls, filters):
    _raises_naming("filters", cls, filters=filters)


def _wrong_tuples(rank):
    """Tuples of the wrong length, with a zero / negative / float / bool entry, etc."""
    good = (2,) * rank
    return [
        0,
        -1,
        2.0,
        "3",
        None,
        True,
        good + (2,),  # one entry too many
        good[:-1] if rank > 1 else (),  # one too few
        (0,) + good[1:],
        (-1,) + good[1:],
        (2.0,) + good[1:],
        (True,) + good[1:],
    ]


@pytest.mark.parametrize("argument", ["kernel_size", "strides", "dilation_rate"])
@pytest.mark.parametrize("cls", CONV, ids=_name)
def test_invalid_int_tuples(cls, argument):
    for value in _wrong_tuples(cls.rank):
        message = _raises_naming(argument, cls, **{argument: value})
        assert f"{cls.rank} positive integers" in message, message


@pytest.mark.parametrize("padding", ["causal", "full", "", None, 0])
@pytest.mark.parametrize("cls", CONV, ids=_name)
def test_invalid_padding(cls, padding):
    message = _raises_naming("padding", cls, padding=padding)
    assert "'valid'" in message and "'same'" in message


@pytest.mark.parametrize("data_format", ["NHWC", "channels_middle", 1])
@pytest.mark.parametrize("cls", CONV, ids=_name)
def test_invalid_data_format(cls, data_format):
    _raises_naming("data_format", cls, data_format=data_format)


@pytest.mark.parametrize("cls", CONV, ids=_name)
def test_strides_with_dilation(cls):
    with pytest.raises(ValueError, match="`strides`") as info:
        _make(cls, strides=2, dilation_rate=2)
    assert "`dilation_rate`" in str(info.value)


@pytest.mark.parametrize("cls", CONV, ids=_name)
def test_case_insensitive_options_are_normalised(cls):
    layer = _make(cls, padding="SAME", data_format="Channels_Last")
    assert layer.padding == "same"
    assert layer.data_format == "channels_last"


# --------------------------------------------------------------------------
# Input shapes
# --------------------------------------------------------------------------


def _wrong_rank_shapes(cls):
    if cls in DENSE:
        return [(4,)]
    # One dimension too few and one too many.
    return [(2,) + (5,) * cls.rank, (2,) + (5,) * (cls.rank + 2)]


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_wrong_input_rank_raises_on_call_with_shape(cls):
    for shape in _wrong_rank_shapes(cls):
        layer = _make(cls)
        with pytest.raises(ValueError) as info:
            layer(np.ones(shape, np.float32))
        assert str(shape) in str(info.value), (shape, str(info.value))
        assert not layer.built


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_wrong_input_rank_raises_at_build_with_shape(cls):
    for shape in _wrong_rank_shapes(cls):
        layer = _make(cls)
        with pytest.raises(ValueError, match=cls.__name__) as info:
            layer.build(shape)
        assert str(shape) in str(info.value), (shape, str(info.value))


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_unknown_feature_dimension_raises_at_build(cls):
    layer = _make(cls)
    shape = (2, None) if cls in DENSE else (2,) + (5,) * cls.rank + (None,)
    with pytest.raises(ValueError, match="known") as info:
        layer.build(shape)
    assert str(shape) in str(info.value)


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_feature_dimension_is_fixed_after_build(cls):
    layer = _make(cls)
    good = (2, 7) if cls in DENSE else (2,) + (5,) * cls.rank + (3,)
    bad = good[:-1] + (4,)
    layer(np.ones(good, np.float32))
    with pytest.raises(ValueError) as info:
        layer(np.ones(bad, np.float32))
    assert str(bad) in str(info.value)


# --------------------------------------------------------------------------
# The shared rules: one boolean check, one seed rule
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_boolean_accepts_true_and_false(value):
    assert _validation.boolean("flag", value) is value


@pytest.mark.parametrize("value", [1, 0, "yes", None, np.bool_(True), 1.0])
def test_boolean_refuses_anything_else(value):
    with pytest.raises(ValueError, match="`flag` must be True or False. Received: flag="):
        _validation.boolean("flag", value)


@pytest.mark.parametrize(
    "value", [0, 3, 2**40, -1, -3, np.int64(3), np.int64(-5), np.uint8(7), np.int32(0)]
)
def test_seed_accepts_python_and_numpy_integers_as_python_int(value):
    checked = _validation.seed("seed", value)
    assert checked == int(value) and type(checked) is int


def test_seed_none_means_random_unless_refused():
    assert _validation.seed("seed", None) is None
    with pytest.raises(ValueError, match=r"`seed` must be an integer\. Received: seed=None"):
        _validation.seed("seed", None, allow_none=False)


@pytest.mark.parametrize("value", [1.5, 2.0, "3", True, np.bool_(False), [1, 2]])
def test_seed_refuses_floats_bools_and_strings(value):
    with pytest.raises(ValueError, match=r"`seed` must be an integer or None\. Received"):
        _validation.seed("seed", value)


@pytest.mark.parametrize("value", [-1, np.int64(-5), 1.5, True, None])
def test_non_negative_seed_refuses_negatives_as_numpy_does(value):
    with pytest.raises(ValueError, match=r"`seed` must be an integer >= 0\. Received"):
        _validation.seed("seed", value, allow_none=False, non_negative=True)
    assert _validation.seed("seed", np.int64(0), non_negative=True) == 0


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_layers_take_a_numpy_integer_seed(cls):
    layer = _make(cls, seed=np.int64(5))
    assert layer.seed == 5 and type(layer.seed) is int
    assert layer.get_config()["seed"] == 5
    # Negative seeds are Keras seeds too, and earlier releases saved them in configs.
    assert _make(cls, seed=-1).seed == -1
    _raises_naming("seed", cls, seed=True)
    _raises_naming("seed", cls, seed=1.5)


@pytest.mark.parametrize("cls", ALL, ids=_name)
def test_layer_config_with_a_negative_seed_round_trips(cls):
    config = _make(cls, seed=-3).get_config()
    assert config["seed"] == -3
    assert cls.from_config(config).seed == -3


def test_a_keras_file_with_a_negative_layer_seed_loads(tmp_path):
    # Earlier releases saved such seeds; `.keras` files holding them must load.
    model = keras.Sequential([keras.Input((3,)), layers.DenseFlipout(2, seed=-3)])
    path = str(tmp_path / "negative_seed.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[0].seed == -3


# --------------------------------------------------------------------------
# The head check: a duck-typed head is told what it lacks
# --------------------------------------------------------------------------


class _LossOnlyHead:
    """Enough of a head for `tdg.losses`, not for `tdg.metrics`."""

    def checked_nll(self, y, params):
        return params


def test_head_check_names_the_missing_members():
    assert _validation.head("head", _LossOnlyHead()).__class__ is _LossOnlyHead
    with pytest.raises(ValueError, match=r"`head` must be .* it has no `kind`, `mean`\."):
        _validation.head("head", _LossOnlyHead(), members=("checked_nll", "kind", "mean"))
    with pytest.raises(ValueError, match=r"it has no `checked_nll`\. Received: head='normal'"):
        _validation.head("head", "normal")


def test_head_metric_refuses_a_loss_only_head_naming_what_it_lacks():
    message = (
        r"`head` must be a tfp_deepgen.heads head .* it has no `kind`, `integer_labels`, "
        r"`align_labels`, `mean`, `probabilities`\."
    )
    with pytest.raises(ValueError, match=message):
        metrics.HeadMetric(_LossOnlyHead(), "mae")
    with pytest.raises(ValueError, match=message):
        metrics.for_head(_LossOnlyHead(), "mae")
    # A loss needs only `checked_nll`: the same object is enough for it.
    losses.NegativeLogLikelihood(_LossOnlyHead(), name="nll")
