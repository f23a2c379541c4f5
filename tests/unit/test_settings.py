from __future__ import annotations

from pathlib import Path

import pytest

from ltrr.schemas.vw_args import DEFAULT_VW_ARGS, VWArgsError, parse_vw_args
from ltrr.streams.exceptions import SettingsError
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics


def test_defaults() -> None:
    s = Settings.load({})
    assert s == Settings()
    assert s.broker_url == "kafka://127.0.0.1:9092"


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "ltrr.toml"
    cfg.write_text('broker = "file:1"\npartitions = 8\ntopic_prefix = "x."\n')
    s = Settings.load({"LTRR_CONFIG": str(cfg), "LTRR_BROKER": "env:2,env:3"})
    assert (s.broker, s.partitions, s.topic_prefix) == ("env:2,env:3", 8, "x.")
    assert s.broker_url == "kafka://env:2;kafka://env:3"
    assert s.with_overrides(partitions=2, broker=None).partitions == 2


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().broker = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LTRR_PARTITIONS": "many"}, "LTRR_PARTITIONS"),
        ({"LTRR_PARTITIONS": "0"}, r"partitions \(LTRR_PARTITIONS\) must be >= 1"),
        ({"LTRR_WEB_PORT": "70000"}, "web_port"),
        ({"LTRR_LOG_LEVEL": "loud"}, r"log_level \(LTRR_LOG_LEVEL\) must be one of"),
        ({"LTRR_CONFIG": "/nonexistent/ltrr.toml"}, "does not exist"),
    ],
)
def test_bad_settings_say_which(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(env)


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "ltrr.toml"
    cfg.write_text("brokers = 'typo'\n")
    with pytest.raises(SettingsError, match="unknown keys \\['brokers'\\]"):
        Settings.load({}, cfg)


def test_topics_follow_the_settings() -> None:
    topics = Topics.from_settings(Settings(topic_prefix="t1.", partitions=6))
    names = [t.name for t in topics.all()]
    assert names == [
        "t1.impressions",
        "t1.actions",
        "t1.rewards",
        "t1.snapshots",
        "t1.catalog",
        "t1.dlq",
        "t1.q2e",
        "t1.join-changelog",
    ]
    assert (
        topics.impressions.partitions
        == topics.actions.partitions
        == topics.join_changelog.partitions
        == 6
    )
    assert topics.join_changelog.configs()["cleanup.policy"] == "compact"
    assert topics.snapshots.configs()["cleanup.policy"] == "compact"
    assert topics.catalog.configs()["cleanup.policy"] == "compact"
    assert topics.impressions.configs() == {
        "cleanup.policy": "delete",
        "retention.ms": str(7 * 24 * 3_600_000),
    }


def test_verification_keys_add_accepted_keys_for_rotation() -> None:
    settings = Settings.load(
        {
            "LTRR_SNAPSHOT_KEY": "s3cret-new",
            "LTRR_SNAPSHOT_KEY_ID": "k2",
            "LTRR_SNAPSHOT_KEYS_ACCEPTED": "k1=s3cret-old, k0=s3cret-older",
        }
    )
    assert settings.verification_keys() == {
        "k2": b"s3cret-new",
        "k1": b"s3cret-old",
        "k0": b"s3cret-older",
    }
    assert "s3cret" not in repr(settings)
    for bad in ("k1", "k1=", "=x", "k2=other"):
        with pytest.raises(SettingsError, match="snapshot_keys_accepted"):
            Settings.load(
                {
                    "LTRR_SNAPSHOT_KEY": "s3cret-new",
                    "LTRR_SNAPSHOT_KEY_ID": "k2",
                    "LTRR_SNAPSHOT_KEYS_ACCEPTED": bad,
                }
            )


def test_there_is_no_built_in_snapshot_key() -> None:
    """Fail closed: nothing signs or verifies with a key everyone knows."""
    settings = Settings.load({})
    assert settings.snapshot_key == "" and settings.verification_keys() == {}
    with pytest.raises(SettingsError, match="LTRR_SNAPSHOT_KEY"):
        settings.require_snapshot_key()
    Settings.load({"LTRR_SNAPSHOT_KEY": "s3cret"}).require_snapshot_key()


@pytest.mark.parametrize(
    "args",
    [
        "--cb_explore_adf -p /tmp/predictions",
        "--cb_explore_adf -f model.vw",
        "--cb_explore_adf --readable_model /etc/passwd",
        "--cb_explore_adf --cache_file c",
        "--cb_explore_adf --invert_hash x",
        "--cb_explore_adf -d data",
        "--epsilon 0.1",
        "--cb_explore_adf -q zz",
        "--cb_explore_adf -b 40",
    ],
)
def test_vw_args_outside_the_allow_list_are_refused(args: str) -> None:
    with pytest.raises(SettingsError, match="vw_args"):
        Settings.load({"LTRR_VW_ARGS": args})


def test_vw_args_of_learning_and_exploration_are_accepted() -> None:
    args = "--cb_explore_adf --squarecb --gamma_scale=10 -q cp -q :: -b 20 --cb_type mtr -l 0.5"
    assert Settings.load({"LTRR_VW_ARGS": args}).vw_args == args


def test_vw_args_are_parsed_in_one_place() -> None:
    """The worker, learn-offline, eval and model all run ``model_vw_args()``."""
    assert Settings().model_vw_args() == DEFAULT_VW_ARGS
    quoted = Settings.load({"LTRR_VW_ARGS": "--cb_explore_adf  --epsilon '0.1'"})
    assert quoted.model_vw_args() == ("--cb_explore_adf", "--epsilon", "0.1")
    assert parse_vw_args("  ", default=()) == ()
    with pytest.raises(VWArgsError, match="do not parse"):
        parse_vw_args("--cb_explore_adf '--epsilon")
    with pytest.raises(SettingsError, match=r"vw_args: .*do not parse.*LTRR_VW_ARGS"):
        Settings.load({"LTRR_VW_ARGS": "--cb_explore_adf '--epsilon"})


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["model", "list"]])
def test_commands_that_sign_or_verify_refuse_to_start_without_a_key(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ltrr.cli import main

    monkeypatch.delenv("LTRR_SNAPSHOT_KEY", raising=False)
    assert main([*command, "--broker", "127.0.0.1:1"]) == 2
    assert "LTRR_SNAPSHOT_KEY" in capsys.readouterr().err
