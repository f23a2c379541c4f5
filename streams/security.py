"""Kafka connection security (SASL, TLS) from ``Settings``, for every client ltrr creates.

One place turns the security settings into what each client library wants: keyword arguments
for kafka-python (admin client, tests, tools), keyword arguments for aiokafka (the retrieval
worker's consumers and producers), and Faust's ``broker_credentials`` (the learning-loop
worker). All three share one ``ssl.SSLContext`` recipe, so TLS behaves the same everywhere.

With ``security_protocol=PLAINTEXT`` (the default) every function returns nothing to add:
clients are created exactly as they were before security settings existed.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from ltrr.streams.exceptions import SettingsError
from ltrr.streams.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def uses_tls(settings: Settings) -> bool:
    return settings.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context (CA, optional client certificate), or None without TLS.

    Built with aiokafka's ``create_ssl_context`` (server authentication, TLS 1.2+);
    ``ssl_check_hostname=false`` only turns off the host-name match, never the chain check.
    """
    if not uses_tls(settings):
        return None
    from aiokafka.helpers import create_ssl_context

    try:
        context = create_ssl_context(
            cafile=settings.ssl_cafile or None,
            certfile=settings.ssl_certfile or None,
            keyfile=settings.ssl_keyfile or None,
        )
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"cannot load the TLS files (ssl_cafile={settings.ssl_cafile!r}, "
            f"ssl_certfile={settings.ssl_certfile!r}, ssl_keyfile={settings.ssl_keyfile!r}): "
            f"{exc}; they must be PEM files, and the key must match the certificate and not "
            f"be encrypted"
        ) from exc
    context.check_hostname = settings.ssl_check_hostname
    return context


def _sasl(settings: Settings) -> dict[str, Any]:
    return {
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password,
    }


def kafka_python_kwargs(
    settings: Settings, *, context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer, KafkaAdminClient.

    ``context`` reuses an already built TLS context (see :func:`ssl_context`).
    """
    return _client_kwargs(settings, context)


def aiokafka_kwargs(settings: Settings, *, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """Keyword arguments for aiokafka's AIOKafkaProducer and AIOKafkaConsumer."""
    return _client_kwargs(settings, context)


def _client_kwargs(settings: Settings, context: ssl.SSLContext | None) -> dict[str, Any]:
    """kafka-python and aiokafka name their security arguments alike (``security_protocol``,
    ``sasl_mechanism``, ``sasl_plain_username``/``_password``, ``ssl_context``)."""
    if settings.security_protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if uses_sasl(settings):
        kwargs.update(_sasl(settings))
    if uses_tls(settings):
        kwargs["ssl_context"] = context or ssl_context(settings)
    return kwargs


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials``: SSLCredentials for SSL, SASLCredentials for SASL_*.

    faust-streaming hands these to every aiokafka client it creates (consumer, producers,
    topic creation); its broker URL stays ``kafka://`` whatever the protocol.
    """
    if settings.security_protocol == "PLAINTEXT":
        return None
    import faust

    context = ssl_context(settings)
    if not uses_sasl(settings):
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password,
        mechanism=settings.sasl_mechanism,
        ssl_context=context,  # not None: SASL_SSL
    )


def faust_app_kwargs(settings: Settings) -> dict[str, Any]:
    """Extra ``faust.App`` configuration: ``broker_credentials`` unless PLAINTEXT."""
    credentials = faust_credentials(settings)
    return {} if credentials is None else {"broker_credentials": credentials}


def describe(settings: Settings) -> str:
    """A log-safe one-line summary (never the password), e.g. ``SASL_SSL PLAIN as alice``."""
    parts: list[str] = [settings.security_protocol]
    if uses_sasl(settings):
        parts.append(f"{settings.sasl_mechanism} as {settings.sasl_username}")
    if uses_tls(settings):
        parts.append(f"CA {settings.ssl_cafile or '(system)'}")
        if settings.ssl_certfile:
            parts.append(f"client certificate {settings.ssl_certfile}")
    return " ".join(parts)
