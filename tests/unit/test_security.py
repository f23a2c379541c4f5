"""Kafka security settings: validation, and the client arguments each protocol gives for
kafka-python, aiokafka and Faust (TLS contexts built from openssl-made certificates)."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from ltrr import cli
from ltrr.streams import security
from ltrr.streams.app import create_app
from ltrr.streams.exceptions import SettingsError
from ltrr.streams.settings import Settings
from tests.certs import CertFiles, make_certs

SECRET = "s3cret-Pa55word"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


def sasl(protocol: str = "SASL_PLAINTEXT", **more: object) -> Settings:
    return Settings(security_protocol=protocol, sasl_username="alice", sasl_password=SECRET, **more)


def test_plaintext_adds_nothing_to_any_client(tmp_path: Path) -> None:
    s = Settings()
    s.validate()
    assert security.kafka_python_kwargs(s) == {}
    assert security.aiokafka_kwargs(s) == {}
    assert security.faust_app_kwargs(s) == {}
    assert security.ssl_context(s) is None
    app = create_app(s.with_overrides(data_dir=str(tmp_path)))
    assert app.conf.broker_credentials is None
    assert [str(url) for url in app.conf.broker] == ["kafka://127.0.0.1:9092"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism: str) -> None:
    s = sasl(sasl_mechanism=mechanism)
    s.validate()
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": SECRET,
    }
    assert security.kafka_python_kwargs(s) == expected
    assert security.aiokafka_kwargs(s) == expected
    creds = security.faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert credentials_to_aiokafka_auth(creds) == {**expected, "ssl_context": None}
    assert SECRET not in repr(creds)


def test_ssl_with_client_certificate(certs: CertFiles) -> None:
    s = Settings(
        security_protocol="SSL",
        ssl_cafile=str(certs.ca),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.client_key),
    )
    s.validate()
    context = security.ssl_context(s)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca"),),)]
    for kwargs in (security.kafka_python_kwargs(s), security.aiokafka_kwargs(s)):
        assert kwargs.keys() == {"security_protocol", "ssl_context"}
        assert kwargs["security_protocol"] == "SSL"
        assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    creds = security.faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)


def test_one_context_can_be_shared(certs: CertFiles) -> None:
    s = Settings(security_protocol="SSL", ssl_cafile=str(certs.ca))
    context = security.ssl_context(s)
    assert security.aiokafka_kwargs(s, context=context)["ssl_context"] is context
    assert security.kafka_python_kwargs(s, context=context)["ssl_context"] is context


def test_hostname_check_can_be_turned_off_but_not_verification(certs: CertFiles) -> None:
    s = Settings(security_protocol="SSL", ssl_cafile=str(certs.ca), ssl_check_hostname=False)
    context = security.ssl_context(s)
    assert context is not None
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_ssl_maps_to_faust_sasl_over_tls(certs: CertFiles, tmp_path: Path) -> None:
    s = sasl("SASL_SSL", sasl_mechanism="SCRAM-SHA-512", ssl_cafile=str(certs.ca))
    s.validate()
    kwargs = security.aiokafka_kwargs(s)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    # What faust-streaming hands its own aiokafka clients, from the app we build.
    app = create_app(s.with_overrides(data_dir=str(tmp_path)))
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("alice", SECRET)
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert [str(url) for url in app.conf.broker] == ["kafka://127.0.0.1:9092"]


def test_a_key_that_does_not_match_the_certificate_is_a_settings_error(
    certs: CertFiles,
) -> None:
    s = Settings(
        security_protocol="SSL",
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.server_key),
    )
    s.validate()  # both files exist
    with pytest.raises(SettingsError, match="cannot load the TLS files"):
        security.ssl_context(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LTRR_SECURITY_PROTOCOL": "TLS"},
            r"security_protocol \(LTRR_SECURITY_PROTOCOL\) must be one of",
        ),
        (
            {"LTRR_SECURITY_PROTOCOL": "sasl_ssl"},
            r"security_protocol \(LTRR_SECURITY_PROTOCOL\) must be one of",
        ),
        (
            {"LTRR_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "needs a SASL user name and password; set LTRR_SASL_USERNAME and LTRR_SASL_PASSWORD",
        ),
        (
            {"LTRR_SECURITY_PROTOCOL": "SASL_SSL", "LTRR_SASL_USERNAME": "alice"},
            "set LTRR_SASL_PASSWORD",
        ),
        (
            {
                "LTRR_SECURITY_PROTOCOL": "SASL_SSL",
                "LTRR_SASL_USERNAME": "alice",
                "LTRR_SASL_PASSWORD": "x",
                "LTRR_SASL_MECHANISM": "GSSAPI",
            },
            r"sasl_mechanism \(LTRR_SASL_MECHANISM\) must be one of "
            r"PLAIN\|SCRAM-SHA-256\|SCRAM-SHA-512",
        ),
        (
            {"LTRR_SASL_USERNAME": "alice", "LTRR_SASL_PASSWORD": "x"},
            "SASL credentials are set but security_protocol is PLAINTEXT",
        ),
        (
            {"LTRR_SECURITY_PROTOCOL": "SSL", "LTRR_SSL_CAFILE": "/nonexistent/ca.pem"},
            "ssl_cafile '/nonexistent/ca.pem' does not exist or is not readable; set "
            "LTRR_SSL_CAFILE",
        ),
        (
            {"LTRR_SSL_CAFILE": "/etc/hostname"},
            "ssl_cafile set but security_protocol is PLAINTEXT, which does not use TLS",
        ),
        (
            {"LTRR_SSL_CHECK_HOSTNAME": "maybe"},
            r"ssl_check_hostname \(LTRR_SSL_CHECK_HOSTNAME\) must be true or false",
        ),
    ],
)
def test_bad_combinations_say_what_to_set(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("|", r"\|")):
        Settings.load(env)


def test_key_without_certificate(certs: CertFiles) -> None:
    with pytest.raises(SettingsError, match="ssl_keyfile is set without ssl_certfile"):
        Settings(security_protocol="SSL", ssl_keyfile=str(certs.client_key)).validate()


def test_toml_example_loads(certs: CertFiles, tmp_path: Path) -> None:
    cfg = tmp_path / "ltrr.toml"
    cfg.write_text(
        'broker = "kafka-1.example.com:9093"\n'
        'security_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "SCRAM-SHA-512"\n'
        'sasl_username = "ltrr"\n'
        f'ssl_cafile = "{certs.ca}"\n'
        "ssl_check_hostname = false\n"
    )
    s = Settings.load({"LTRR_SASL_PASSWORD": SECRET}, cfg)
    assert (s.security_protocol, s.sasl_mechanism, s.sasl_username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "ltrr",
    )
    assert s.sasl_password == SECRET and s.ssl_check_hostname is False


def test_password_is_never_shown() -> None:
    s = sasl()
    assert SECRET not in repr(s) and SECRET not in str(s)
    assert "sasl_password" not in repr(s)
    assert SECRET not in security.describe(s)


def _helps(parser: argparse.ArgumentParser) -> list[str]:
    texts = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts += [sub.format_help() for sub in action.choices.values()]
    return texts


def test_no_password_flag_and_no_password_in_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTRR_SASL_PASSWORD", SECRET)
    helps = _helps(cli.build_parser())
    assert len(helps) > 5
    for text in helps:
        assert SECRET not in text
        assert "--sasl-password" not in text
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["worker", "--sasl-password", SECRET])


@pytest.mark.parametrize("command", ["worker", "serve", "topics"])
def test_security_flags_complete_the_environment(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flag may supply what the environment lacks: validation runs after the flags."""
    monkeypatch.setenv("LTRR_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("LTRR_SASL_PASSWORD", SECRET)
    for name in ("LTRR_SASL_USERNAME", "LTRR_CONFIG", "LTRR_SASL_MECHANISM"):
        monkeypatch.delenv(name, raising=False)
    extra = ["list"] if command == "topics" else []
    args = cli.build_parser().parse_args(
        [command, *extra, "--sasl-username", "bob", "--sasl-mechanism", "SCRAM-SHA-256"]
    )
    s = cli.load_settings(args)
    assert (s.security_protocol, s.sasl_username, s.sasl_mechanism) == (
        "SASL_PLAINTEXT",
        "bob",
        "SCRAM-SHA-256",
    )
    assert s.sasl_password == SECRET
    args = cli.build_parser().parse_args([command, *extra, "--security-protocol", "SASL_SSL"])
    with pytest.raises(SettingsError, match="set LTRR_SASL_USERNAME"):
        cli.load_settings(args)
