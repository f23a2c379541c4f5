"""The broker goes away and comes back on its data dir, and impressions reach Kafka 20 s after
their clicks: each time every impression still gets exactly one on-time reward carrying what
its actions imply, no click becomes an orphan, and the final model is byte-identical to
``ltrr learn-offline`` on the rewards topic.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from ltrr.processes import WorkerProcess
from ltrr.testing.kafka import ApacheKafka
from tests.chaos.test_partitions_move import FLAGS, PARTITIONS, Combined, Traffic, _check, _topics
from tests.integration.loop_helpers import model_matches_offline
from tests.integration.processes import metric, wait_until, worker


def _ready(w: WorkerProcess) -> bool:
    try:
        with urllib.request.urlopen(w.url + "/readyz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_broker_restart_on_its_data_dir(prefix: str, tmp_path: Path) -> None:
    """Apache Kafka stops with windows open and the worker running, stays down past the
    worker's readiness limit, and starts again on the same data dir and ports."""
    kafka = ApacheKafka(workdir=tmp_path / "kafka")
    bootstrap = kafka.start()
    try:
        _topics(bootstrap, prefix)
        w = worker(bootstrap, prefix, tmp_path / "w", *FLAGS, partitions=PARTITIONS).start()
        try:
            with Traffic(bootstrap, prefix, seed=3, rate=25, ids="before") as before:
                time.sleep(8)
            kafka.stop()  # the last seconds' windows are still open
            wait_until(lambda: not _ready(w), 90, "/readyz to fail while the broker is down")
            assert w.alive
            kafka.start()
            assert kafka.bootstrap == bootstrap
            wait_until(lambda: _ready(w), 120, "/readyz to recover once the broker is back")
            with Traffic(bootstrap, prefix, seed=4, rate=25, ids="after") as after:
                time.sleep(5)
            traffic = Combined(before, after)
            counts = _check(bootstrap, prefix, traffic)
            assert metric(w, "ltrr_orphan_actions_total") == 0
            _, report = model_matches_offline(bootstrap, prefix, len(traffic.impressions), tmp_path)
            assert w.alive
            print("broker restart:", counts, "duplicates skipped:", report.get("duplicate", 0))
        finally:
            w.stop()
    finally:
        kafka.stop()


def test_impressions_20s_behind_their_actions(bootstrap: str, prefix: str, tmp_path: Path) -> None:
    """A lagging impression logger: every impression reaches Kafka 20 s after its own
    timestamp, its actions on time. With ``event_delay_s`` above that lag the join waits
    for them in event time and orphans nothing."""
    _topics(bootstrap, prefix)
    w = worker(
        bootstrap, prefix, tmp_path / "w", *FLAGS, "--event-delay-s", "30", partitions=PARTITIONS
    ).start()
    try:
        with Traffic(
            bootstrap, prefix, seed=5, rate=25, ids="lagging", impression_delay_s=20
        ) as traffic:
            time.sleep(30)
        counts = _check(bootstrap, prefix, traffic)
        assert metric(w, "ltrr_orphan_actions_total") == 0
        assert metric(w, "ltrr_late_actions_total") == 0
        model_matches_offline(bootstrap, prefix, len(traffic.impressions), tmp_path)
        print("impressions 20 s late:", counts)
    finally:
        w.stop()
