"""Every method is registered with documented, valid defaults, and every invalid option is rejected with
a message that names the option."""

import dataclasses
import re

import pytest

from swiftdit.methods import available_methods, build_method, method_class

METHODS = ["sparse", "radial", "draft", "rectified", "clear", "sla"]

SHARED_INVALID = [("dense_steps", -1), ("dense_last_steps", 1.5), ("dense_layers", -2), ("dense_layers", (0, -1)),
                  ("refresh_every", 0)]
SELECTION_INVALID = [("block_size", 96), ("block_size", "64"), ("density", 0.0), ("density", 1.5), ("density", True),
                     ("mass", -0.1), ("mass", 2), ("reorder", "zorder"), ("neighbours", 1),
                     ("first_frame_sink", "yes")]
INVALID = {
    "sparse": SELECTION_INVALID,
    "radial": [("block_size", 32), ("decay", 0.0), ("decay", -1), ("first_frame_sink", None)],
    "draft": [("pool_h", 0), ("pool_w", 2.0), ("pool_h * pool_w", dict(pool_h=3, pool_w=16)), ("sparsity", 1.0),
              ("sparsity", -0.5), ("keep_diagonal", 0)],
    "rectified": SELECTION_INVALID + [("rectify", "exact"), ("pooled_estimate", "pixel"), ("ratio_drift", -0.1),
                                      ("refresh_every", dict(rectify="history", refresh_every=1)),
                                      ("refresh_every", dict(rectify="calibrated", refresh_every=1))],
    "clear": [("radius", 0), ("radius", 2.5), ("temporal_radius", -1), ("block_size", 100), ("reorder", "spiral")],
    "sla": SELECTION_INVALID + [("feature_map", "relu"), ("feature_map", "identity")],
}
CASES = [(name, option, value) for name in METHODS for option, value in SHARED_INVALID + INVALID[name]]


def test_all_methods_registered_with_paper_and_summary():
    assert set(METHODS) <= set(available_methods())
    for name in METHODS:
        cls = method_class(name)
        assert cls.summary and cls.paper


@pytest.mark.parametrize("name", METHODS)
def test_defaults_are_valid_and_documented(name):
    config_class = method_class(name).Config
    config = config_class()
    documentation = config_class.__doc__ + "".join(c.__doc__ or "" for c in config_class.__mro__)
    for field in dataclasses.fields(config):
        assert field.name in documentation, f"{config_class.__name__}.{field.name} is not documented"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dense_steps = 3


@pytest.mark.parametrize("name, option, value", CASES, ids=[f"{n}-{o}-{v}" for n, o, v in CASES])
def test_invalid_option_is_rejected_by_name(name, option, value):
    options = value if isinstance(value, dict) else {option: value}
    with pytest.raises((TypeError, ValueError), match=re.escape(f"'{option}")):
        build_method(name, options)


@pytest.mark.parametrize("name", METHODS)
def test_unknown_option_lists_the_allowed_ones(name):
    with pytest.raises(ValueError, match=r"unknown option.*'sparsty'.*allowed options"):
        build_method(name, {"sparsty": 0.5})
