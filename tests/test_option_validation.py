"""Every method option is checked against its meaning (issue 15, item 4): one clear line naming
METHOD.NAME=VALUE and the default, exit 2, no traceback, no run folder, before any model loads."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

import cema_cli.cli.common as cli_module
from cema_cli.errors import CemaError
from cema_cli.strategies import STRATEGIES
from cema_cli.strategies.base import make_config
from cema_cli.strategies.options import InvalidOption, one_of, positive, positive_int, unit_interval


@pytest.fixture
def one_line_errors(monkeypatch):
    monkeypatch.setattr(cli_module.err_console, "soft_wrap", True)  # no wrapping at 80 columns


def refused(cli, tmp_path, *args: str) -> str:
    """Run `cema bench` and return its single error line, checking exit 2 and no folder."""
    out = tmp_path / "run"
    result = cli("bench", "--samples", "64", "--out", str(out), *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()  # refused before the run folder is made
    return lines[0]


@pytest.mark.parametrize(
    ("method", "option", "expected"),
    [
        ("cema", "cloud_batch=0", "option cema.cloud_batch=0 must be a whole number of at least 1; e.g. -o cema.cloud_batch=32 (the default)."),
        ("tent", "optimizer=adamw", "option tent.optimizer='adamw' is not one of sgd, sgd-n, adam (did you mean 'adam'?); e.g. -o tent.optimizer=sgd"),
        ("cema", "dynamic_e_max=maybe", "option cema.dynamic_e_max='maybe' is not true or false; use true/false, 1/0 or yes/no."),
        ("tent", "lr=nan", "option tent.lr=nan must be a finite number of 0 or more"),
        ("eta", "lr=inf", "option eta.lr=inf must be a finite number of 0 or more"),
        ("tent", "momentum=1.5", "option tent.momentum=1.5 must lie in [0, 1]"),
        ("tent", "placement=fog", "option tent.placement='fog': method 'tent' cannot take placement 'fog'"),
        ("eata", "fisher_samples=0", "option eata.fisher_samples=0 must be a whole number of at least 1"),
        ("bn", "prior=-1", "option bn.prior=-1.0 must be a finite number of 0 or more"),
        ("cema", "temperature=0", "option cema.temperature=0.0 must be a finite number above 0"),
        ("cema", "replay_batch=300", "option cema.replay_batch=300 must not exceed replay_min (256)"),
        ("cema-official", "e_min_factor=0.5", "option cema-official.e_min_factor=0.5 must not exceed e_max_factor (0.4)"),
        ("cema", "cloud_batch=2.5", "option cema.cloud_batch='2.5' is not a whole number."),
        ("cema", "tbr_moments=fast", "option cema.tbr_moments='fast' is not one of welford, two-pass; e.g. -o cema.tbr_moments=welford"),
    ],
)
def test_a_meaningless_option_is_one_line_and_exit_2(cli, tmp_path, one_line_errors, method, option, expected):
    assert expected in refused(cli, tmp_path, "-m", method, "-o", f"{method}.{option}")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("No", False), ("1", True), ("0", False), ("yes", True), ("FALSE", False)])
def test_booleans_accept_exactly_true_false_1_0_yes_no(text, value):
    assert make_config(STRATEGIES.get("cema"), {"dynamic_e_max": text}, "cema").dynamic_e_max is value


@pytest.mark.parametrize("text", ["maybe", "", "2", "on"])
def test_any_other_boolean_word_is_refused(text):
    with pytest.raises(CemaError, match=f"cema.dynamic_e_max={text!r} is not true or false"):
        make_config(STRATEGIES.get("cema"), {"dynamic_e_max": text}, "cema")


def test_toml_values_of_the_wrong_type_are_refused():
    """A TOML table gives typed values: a float for an int option, a string for a bool."""
    for option, value, kind in (("cloud_batch", 2.5, "whole number"), ("dynamic_e_max", 1, "true or false"), ("foundation_lr", True, "float")):
        with pytest.raises(CemaError, match=f"cema.{option}={value!r} is not a {kind}"):
            make_config(STRATEGIES.get("cema"), {option: value}, "cema")
    assert make_config(STRATEGIES.get("cema"), {"foundation_lr": 1}, "cema").foundation_lr == 1.0  # an int is a float


@pytest.mark.parametrize("method", STRATEGIES.names())
def test_every_default_passes_and_every_option_is_checked(method):
    """Each method's defaults validate; every numeric option refuses nan or -2 (no option escapes;
    -1 means "keep all" for t3a.filter_k)."""
    target = STRATEGIES.get(method)
    make_config(target, {}, method)
    for field in fields(target.config_class):
        if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
            with pytest.raises(CemaError, match=rf"{method}\.{field.name}\b"):
                make_config(target, {field.name: "nan" if isinstance(field.default, float) else "-2"}, method)


def test_the_helpers_raise_invalid_option_with_the_name_and_requirement():
    with pytest.raises(InvalidOption) as caught:
        positive_int("cloud_batch", 0)
    assert (caught.value.name, caught.value.value) == ("cloud_batch", 0)
    for check, value in ((positive, 0.0), (positive, math.nan), (unit_interval, -0.1), (unit_interval, math.nan)):
        with pytest.raises(InvalidOption):
            check("x", value)
    positive("x", 1e-9), unit_interval("x", 1.0), one_of("x", "a", ("a", "b"))  # the bounds are inclusive where meant


def test_a_toml_table_for_an_unknown_method_is_refused(cli, tmp_path, one_line_errors):
    config = tmp_path / "run.toml"
    config.write_text('samples = 64\n[methods.source]\n[methods.tnet]\nlr = 0.001\n')
    line = refused(cli, tmp_path, "--config", str(config))
    assert "unknown method 'tnet'. Did you mean 'tent'" in line
    line = refused(cli, tmp_path, "--config", str(config), "--method", "source")  # the flag path refuses it too
    assert "unknown method 'tnet'" in line


def test_a_bad_option_in_a_toml_table_is_refused_like_the_flag(cli, tmp_path, one_line_errors):
    config = tmp_path / "run.toml"
    config.write_text('[methods.cema]\ncloud_batch = 0\n')
    assert "option cema.cloud_batch=0 must be a whole number of at least 1" in refused(cli, tmp_path, "--config", str(config))


def test_collapse_share_is_checked(cli, tmp_path, one_line_errors):
    assert "--collapse-share 1.5 is not a share in (0, 1]" in refused(cli, tmp_path, "-m", "bn", "--collapse-share", "1.5")
