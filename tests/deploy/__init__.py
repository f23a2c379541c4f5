"""Tests of the deployment files: docker-compose.yml, deploy/Dockerfile, deploy/k8s/, and the
Prometheus rules. No container engine or cluster runs here; the files are validated offline and
checked against the ltrr command they launch.

Shared here: the contract between a deployment file and the ``ltrr`` command — every argument
vector must parse with ltrr's own argument parser, every ``LTRR_*`` variable must name a setting,
and the settings a process ends up with decide where it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from unittest import mock

from ltrr.cli import build_parser, load_settings
from ltrr.streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]

#: Every environment variable ltrr reads: one per setting, plus the TOML file's path.
LTRR_VARIABLES = frozenset(
    {ENV_PREFIX + f.name.upper() for f in fields(Settings)} | {ENV_PREFIX + "CONFIG"}
)


def unknown_ltrr_variables(names: Iterable[str]) -> list[str]:
    """The ``LTRR_*`` names in ``names`` that ltrr does not read (typos, stale settings)."""
    return sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in LTRR_VARIABLES)


def parse_ltrr_args(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` (what follows ``ltrr``) parsed by ltrr's parser; AssertionError if it refuses."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(list(argv))
    except SystemExit as exc:
        raise AssertionError(f"`ltrr {' '.join(argv)}` is refused: {err.getvalue()}") from exc


def effective_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings ``ltrr`` builds from parsed ``args`` in a process whose environment is
    exactly ``environ`` (the CLI reads ``os.environ``; it is swapped for the call)."""
    with mock.patch.dict(os.environ, dict(environ), clear=True):
        return load_settings(args)


def listen_address(args: argparse.Namespace, settings: Settings) -> tuple[str, int] | None:
    """Where the HTTP server of the command listens, or None for commands without one."""
    if args.command == "worker":
        return settings.web_host, settings.web_port
    if args.command == "serve":
        return settings.serve_host, settings.serve_port
    return None


#: Health endpoints each long-running command serves.
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
