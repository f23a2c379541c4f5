"""Settings of the HTTP API's access control, TLS and limits: tokens from env/TOML only,
validated, hidden from repr; ``ltrr serve`` fails closed on a reachable address."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ltrr.retrieval.server import serve
from ltrr.streams.exceptions import SettingsError
from ltrr.streams.settings import Settings

TOKEN = "0123456789abcdef0123"
ALL_TOKENS = {
    "LTRR_SERVE_TOKENS_SEARCH": f"{TOKEN}a, {TOKEN}b",
    "LTRR_SERVE_TOKENS_ACTIONS": f"{TOKEN}c",
    "LTRR_SERVE_TOKENS_OPS": f"{TOKEN}d",
}
KEY = {"LTRR_SNAPSHOT_KEY": "settings-test-key"}


def test_tokens_come_from_the_environment_and_stay_out_of_repr() -> None:
    settings = Settings.load({**KEY, **ALL_TOKENS})
    assert settings.serve_tokens() == {
        "search": (f"{TOKEN}a", f"{TOKEN}b"),
        "actions": (f"{TOKEN}c",),
        "ops": (f"{TOKEN}d",),
    }
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("value", "message"),
    [("short", "at least 16"), (f"{TOKEN} x", "characters"), (f"{TOKEN}\u00e9", "characters")],
)
def test_malformed_tokens_are_refused(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load({**KEY, "LTRR_SERVE_TOKENS_OPS": value})


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "serve.example"])
def test_a_reachable_address_needs_every_scope_protected(host: str) -> None:
    settings = Settings.load({**KEY, "LTRR_SERVE_HOST": host, "LTRR_SERVE_TOKENS_SEARCH": TOKEN})
    problem = settings.serve_exposure_problem()
    assert problem is not None
    assert "LTRR_SERVE_TOKENS_ACTIONS" in problem and "LTRR_SERVE_TOKENS_OPS" in problem
    assert "LTRR_SERVE_TOKENS_SEARCH" not in problem
    protected = Settings.load({**KEY, **ALL_TOKENS, "LTRR_SERVE_HOST": host})
    assert protected.serve_exposure_problem() is None
    opted_out = Settings.load({**KEY, "LTRR_SERVE_HOST": host, "LTRR_SERVE_ALLOW_ANONYMOUS": "1"})
    assert opted_out.serve_exposure_problem() is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_may_stay_open(host: str) -> None:
    assert Settings.load({**KEY, "LTRR_SERVE_HOST": host}).serve_exposure_problem() is None


def test_serve_refuses_to_start_open_on_a_reachable_address() -> None:
    """Before any broker is contacted (the broker here does not exist)."""
    settings = Settings.load({**KEY, "LTRR_SERVE_HOST": "0.0.0.0", "LTRR_BROKER": "nowhere:1"})
    with pytest.raises(SettingsError, match=r"refuses to start.*LTRR_SERVE_TOKENS_SEARCH"):
        asyncio.run(serve(settings))


def test_tls_files_must_exist_and_go_with_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="serve_tls_certfile"):
        Settings.load({**KEY, "LTRR_SERVE_TLS_CERTFILE": str(tmp_path / "missing.pem")})
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(SettingsError, match="without serve_tls_certfile"):
        Settings.load({**KEY, "LTRR_SERVE_TLS_CLIENT_CAFILE": str(ca)})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LTRR_SERVE_MAX_CONNECTIONS", "0"),
        ("LTRR_SERVE_READ_TIMEOUT_S", "0"),
        ("LTRR_SERVE_READ_TIMEOUT_S", "-1"),
        ("LTRR_SERVE_PORT", "70000"),
        ("LTRR_SERVE_ALLOW_ANONYMOUS", "maybe"),
    ],
)
def test_limits_are_bounded(name: str, value: str) -> None:
    with pytest.raises(SettingsError):
        Settings.load({**KEY, name: value})


def test_tokens_can_come_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "ltrr.toml"
    config.write_text(f'serve_tokens_search = "{TOKEN}x,{TOKEN}y"\nserve_allow_anonymous = true\n')
    settings = Settings.load(KEY, config)
    assert settings.serve_tokens()["search"] == (f"{TOKEN}x", f"{TOKEN}y")
    assert settings.serve_allow_anonymous is True
