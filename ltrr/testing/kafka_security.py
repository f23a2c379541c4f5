"""Secured client listeners for the Apache Kafka harness: SASL (PLAIN, SCRAM) and TLS.

``ApacheKafka(security=ListenerSecurity(...))`` replaces the broker's PLAINTEXT client listener
with one named after its protocol (``SASL_PLAINTEXT``, ``SSL`` or ``SASL_SSL``); the KRaft
controller listener stays PLAINTEXT on loopback. The broker talks to itself over the secured
listener as the first SASL user, as a multi-node cluster would.

- PLAIN users live in the listener's JAAS line (``user_<name>="<password>"``).
- SCRAM users are written into the cluster metadata when storage is formatted
  (``kafka-storage format --add-scram``), so they exist before the broker starts.
- TLS: the broker's key and certificate come as a PKCS12 keystore; the CA that signed it as a
  PEM file, which clients use to verify the broker (and the broker as its truststore).

Test infrastructure: passwords are written in clear into ``server.properties`` in the broker's
work directory. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class BrokerTls:
    """The broker's TLS identity: PKCS12 keystore (key + certificate) and the CA's PEM."""

    keystore: Path
    keystore_password: str
    cafile: Path


@dataclass(frozen=True)
class ListenerSecurity:
    """How the client listener is secured. No users and no TLS = PLAINTEXT."""

    #: SASL users, name -> password; the first one is also the broker's own login.
    users: Mapping[str, str] = field(default_factory=dict)
    #: Enabled SASL mechanisms; the first is used between brokers and by the readiness probe.
    mechanisms: tuple[str, ...] = ("PLAIN",)
    tls: BrokerTls | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.mechanisms if m not in MECHANISMS]
        if unknown or not self.mechanisms:
            raise ValueError(f"mechanisms must be a non-empty subset of {MECHANISMS}")
        for name, password in self.users.items():
            # Kept simple so they need no quoting in JAAS lines or --add-scram arguments.
            if not (_SAFE.match(name) and _SAFE.match(password)):
                raise ValueError("SASL user names and passwords: letters, digits, _ . - only")

    @property
    def sasl(self) -> bool:
        return bool(self.users)

    @property
    def protocol(self) -> str:
        """Kafka's name for the client listener's protocol (also the listener's name)."""
        if self.sasl:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL" if self.tls else "PLAINTEXT"

    @property
    def broker_user(self) -> tuple[str, str]:
        name = next(iter(self.users))
        return name, self.users[name]

    def server_properties(self) -> dict[str, str]:
        """Keys added to ``server.properties`` for the listener named :attr:`protocol`."""
        listener = self.protocol.lower()
        props: dict[str, str] = {}
        if self.sasl:
            name, password = self.broker_user
            props["sasl.enabled.mechanisms"] = ",".join(self.mechanisms)
            props["sasl.mechanism.inter.broker.protocol"] = self.mechanisms[0]
            for mechanism in self.mechanisms:
                if mechanism == "PLAIN":
                    users = " ".join(f'user_{u}="{p}"' for u, p in self.users.items())
                    jaas = (
                        "org.apache.kafka.common.security.plain.PlainLoginModule required "
                        f'username="{name}" password="{password}" {users};'
                    )
                else:
                    jaas = (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required "
                        f'username="{name}" password="{password}";'
                    )
                props[f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config"] = jaas
        if self.tls is not None:
            props.update(
                {
                    "ssl.keystore.type": "PKCS12",
                    "ssl.keystore.location": str(self.tls.keystore),
                    "ssl.keystore.password": self.tls.keystore_password,
                    "ssl.key.password": self.tls.keystore_password,
                    "ssl.truststore.type": "PEM",
                    "ssl.truststore.location": str(self.tls.cafile),
                    "ssl.client.auth": "none",
                }
            )
        return props

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments creating the SCRAM credentials of every user."""
        return [
            arg
            for mechanism in self.mechanisms
            if mechanism.startswith("SCRAM-")
            for user, password in self.users.items()
            for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]

    def client_config(self, mechanism: str | None = None) -> dict[str, Any]:
        """kafka-python keyword arguments for the broker's own user (readiness probe, tests)."""
        config: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl:
            name, password = self.broker_user
            config.update(
                sasl_mechanism=mechanism or self.mechanisms[0],
                sasl_plain_username=name,
                sasl_plain_password=password,
            )
        if self.tls is not None:
            config["ssl_cafile"] = str(self.tls.cafile)
        return config
