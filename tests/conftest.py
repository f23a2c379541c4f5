"""Shared test configuration: Hypothesis runs derandomized so CI is reproducible; set
HYPOTHESIS_PROFILE=explore locally to search with fresh random examples.

ltrr has no built-in snapshot key: every process a test starts inherits this one
(``TEST_SNAPSHOT_KEY``) unless the test sets its own."""

from __future__ import annotations

import os

from hypothesis import settings

TEST_SNAPSHOT_KEY = "ltrr-test-key"
os.environ.setdefault("LTRR_SNAPSHOT_KEY", TEST_SNAPSHOT_KEY)

settings.register_profile("ci", derandomize=True, max_examples=200, deadline=None)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
