"""Read a process's Prometheus metrics and health pages over HTTP (demo, tests, operations)."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(
    base_url: str, timeout_s: float = 5.0, *, token: str | None = None
) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of ``{base_url}/metrics`` as (name, labels, value); ``token``: the bearer
    token of a retrieval worker whose metrics need one (scope ops)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{base_url}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        text = resp.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def ready(base_url: str, timeout_s: float = 2.0) -> bool:
    """True when ``{base_url}/readyz`` answers 200."""
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
