"""The chaos suite runs on the integration fixtures (a real broker per session)."""

from tests.integration.conftest import bootstrap, broker_kind, prefix  # noqa: F401
