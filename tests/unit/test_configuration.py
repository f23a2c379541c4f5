"""Settings as the single source: flags, --help defaults, docs/configuration.md, coercion."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from ltrr.cli import METAVARS, SETTING_FLAGS, build_parser, load_settings, main
from ltrr.configuration import markdown
from ltrr.streams.exceptions import SettingsError
from ltrr.streams.settings import Settings, setting_docs

ROOT = Path(__file__).resolve().parents[2]


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flag_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> formatted help of every flag of ``parser`` and of its subcommands."""
    parser.format_help()  # every help string is a valid format
    helps: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                helps.update(_flag_helps(child))
        elif action.help:
            helps[action.dest] = action.help % {"default": action.default}
    return helps


def test_configuration_reference_is_generated_from_settings() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    assert written == markdown(SETTING_FLAGS), (
        "docs/configuration.md is stale: run ltrr settings --markdown > docs/configuration.md"
    )


def test_every_setting_has_help_text() -> None:
    missing = [name for name, doc in setting_docs().items() if len(doc.help) < 10]
    assert not missing


def test_help_shows_each_flags_real_default_and_variable() -> None:
    parsers = _command_parsers()
    docs = setting_docs()
    for command, names in SETTING_FLAGS.items():
        helps = _flag_helps(parsers[command])
        for name in names:
            doc = docs[name]
            default = doc.default if doc.default != "" else "none"
            assert f"({doc.env}; default: {default}" in helps[name], (command, name)


def test_secrets_are_never_flags() -> None:
    secrets = {d.flag for d in setting_docs().values() if d.secret}
    assert {"--snapshot-key", "--sasl-password", "--serve-tokens-search"} <= secrets
    for command, parser in _command_parsers().items():
        flags = {o for a in parser._actions for o in a.option_strings}
        assert not flags & secrets, command


def test_each_flag_reaches_its_setting() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["worker", "--reward-aggregation", "sum", "--reward-window-s", "7", "--partitions", "2"]
    )
    settings = load_settings(args)
    assert (settings.reward_aggregation, settings.reward_window_s, settings.partitions) == (
        "sum",
        7.0,
        2,
    )
    args = parser.parse_args(["serve", "--serve-allow-anonymous", "yes", "--plan-max-size", "2"])
    settings = load_settings(args)
    assert settings.serve_allow_anonymous is True and settings.plan_max_size == 2


def test_toml_values_are_coerced_or_refused_naming_the_key(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('partitions = "4"\nreward_window_s = 5\nlog_level = "INFO"\n')
    settings = Settings.load({}, good)
    assert (settings.partitions, settings.reward_window_s, settings.log_level) == (4, 5.0, "info")
    bad = tmp_path / "bad.toml"
    for text, words in (
        ('partitions = "x"\n', ["partitions", "bad.toml", "integer"]),
        ("partitions = 1.5\n", ["partitions", "integer"]),
        ("ssl_check_hostname = 1\n", ["ssl_check_hostname", "true or false"]),
        ('reward_aggregation = "mean"\n', ["reward_aggregation", "max|sum|earliest"]),
        ("partitions = 0\n", ["partitions", "LTRR_PARTITIONS", ">= 1"]),
    ):
        bad.write_text(text)
        with pytest.raises(SettingsError) as caught:
            Settings.load({}, bad)
        assert all(word in str(caught.value) for word in words), (text, caught.value)


def test_environment_values_are_checked_against_choices_and_bounds() -> None:
    with pytest.raises(SettingsError, match="LTRR_REWARD_AGGREGATION"):
        Settings.load({"LTRR_REWARD_AGGREGATION": "mean"})
    with pytest.raises(SettingsError, match=r"min_probability \(LTRR_MIN_PROBABILITY\)"):
        Settings.load({"LTRR_MIN_PROBABILITY": "1.5"})
    with pytest.raises(SettingsError, match="reward_clip_min"):
        Settings.load({"LTRR_REWARD_CLIP_MIN": "2"})
    assert Settings.load({"LTRR_LOG_LEVEL": "WARNING"}).log_level == "warning"


def test_every_field_is_typed_for_coercion() -> None:
    docs = setting_docs()
    assert {d.kind for d in docs.values()} <= {"str", "int", "float", "bool", "choice"}
    assert len(docs) == len(fields(Settings))


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["worker", "--reward-windw-s", "3"], "--reward-window-s"),
        (["serve", "--bootstrap", "x:1"], "--broker"),
        (["demo", "--querys", "5"], "--queries"),
    ],
)
def test_wrong_flags_get_a_did_you_mean(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and f"did you mean {hint}" in err


def test_settings_command_hides_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    import os

    os.environ["LTRR_SERVE_TOKENS_OPS"] = "a-very-secret-token-123"
    try:
        assert main(["settings", "--json"]) == 0
    finally:
        del os.environ["LTRR_SERVE_TOKENS_OPS"]
    out = capsys.readouterr().out
    assert "a-very-secret-token-123" not in out and '"serve_tokens_ops": "(set)"' in out


def _value_options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, Any]]:
    """(command, option, metavar) of every option that takes a value, in every command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for command, option, metavar in _value_options(sub):
                    yield f"{name} {command}".strip(), option, metavar
        elif action.option_strings and action.nargs != 0 and action.help != argparse.SUPPRESS:
            shown = "{choices}" if action.choices is not None else action.metavar
            yield "", action.option_strings[-1], shown


def test_every_command_names_the_same_kind_of_value_the_same_way() -> None:
    """One metavar vocabulary (METAVARS) across all commands, and one metavar per flag name."""
    by_flag: dict[str, set[str]] = {}
    for command, option, metavar in _value_options(build_parser()):
        if metavar == "{choices}":
            continue  # argparse shows the choices themselves
        assert metavar in METAVARS, f"ltrr {command} {option} {metavar}"
        by_flag.setdefault(option, set()).add(metavar)
    assert {flag: m for flag, m in by_flag.items() if len(m) > 1} == {}
