"""Adopting a model published elsewhere: rollbacks, resets and takeovers (pure, no Kafka I/O).

The snapshots topic holds the truth about a model's latest version. A learning worker follows
it and adopts a verified snapshot of a model when that snapshot is newer than anything it
reserved itself for the model, which happens when:

- an operator published it: ``ltrr model publish`` (a rollback, or a model trained offline)
  or ``ltrr model reset`` (an untrained model);
- another worker learned the model: a rebalance moved the model's rewards partition here, or
  this worker's state was lost. The learner then continues from that model and its version
  (instead of relearning from scratch and publishing versions every retrieval worker refuses
  as stale), skipping the rewards the snapshot already covers.

Adoption is lazy: a snapshot is held as an *offer* until the learner is about to learn (or
skip) a reward of that model, which is also the only moment it can matter. Adopting replaces
the model's weights and moves the learner's rewards offsets forward to the ones the snapshot
covers (never back); the model's dedup memory is kept; the version counter jumps to the
snapshot's version, so the next snapshot published here is newer than it.

A snapshot is *not* adopted when it is older than this learner's counter, or has the same
version and the same bytes (it is this learner's own). Two different models with one version
(an operator published while the learner reserved the same version) resolve to the operator's:
the learner adopts it and its next version supersedes both.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from ltrr.agents.learning import LearnerError, Learners
from ltrr.agents.snapshots import SnapshotPublisher, state_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Offer:
    """A verified snapshot of ``model`` newer than this learner's, waiting to be adopted."""

    model: str
    version: int
    epoch: int
    sha256: str
    examples: int
    chunks: int
    offsets: dict[int, int]
    model_bytes: bytes


class Adopter:
    """Receives the verified snapshots of the topic (``offer``) and adopts the ones that
    supersede this learner's model when one of its rewards comes (``adopt``)."""

    def __init__(self, learners: Learners, publisher: SnapshotPublisher) -> None:
        self.learners = learners
        self.publisher = publisher
        self.pending: dict[str, Offer] = {}
        learners.before_learn = self.adopt

    def offer(self, header: dict[str, Any], model_bytes: bytes) -> str:
        """Consider a verified snapshot: ``own`` (this learner's), ``older`` (superseded
        here) or ``pending`` (held until the model's next reward)."""
        name, version, epoch = header["model"], int(header["version"]), int(header.get("epoch", 0))
        verdict = self._compare(name, (epoch, version), header["sha256"])
        if verdict != "newer":
            return verdict
        offsets = {
            int(o["partition"]): int(o["offset"])
            for o in header["offsets"]
            if o["topic"] == self.publisher.rewards_topic
        }
        self.pending[name] = Offer(
            name,
            version,
            epoch,
            header["sha256"],
            int(header["examples_learned"]),
            int(header.get("chunks", {}).get("count", 0)),
            offsets,
            model_bytes,
        )
        return "pending"

    def _compare(self, name: str, stamp: tuple[int, int], sha256: str) -> str:
        """``(epoch, version)`` of a snapshot against this learner's last one."""
        state = self.publisher.state(name)
        mine = (int(state.get("epoch", 0)), state["version"])
        if stamp < mine:
            return "older"
        if stamp == mine and state.get("sha256", sha256) == sha256:
            return "own"
        return "newer"

    def adopt(self, name: str) -> Offer | None:
        """Adopt the pending offer of ``name``, if any still supersedes this learner's model.

        Returns what was adopted. A model VW cannot load with this learner's arguments is
        logged and dropped (the learner goes on with its own model).
        """
        offer = self.pending.pop(name, None)
        if offer is None:
            return None
        if self._compare(name, (offer.epoch, offer.version), offer.sha256) != "newer":
            return None
        counter = {
            state_key(name): orjson.dumps(
                {
                    "epoch": offer.epoch,
                    "version": offer.version,
                    "chunks": offer.chunks,
                    "examples": offer.examples,
                    "sha256": hashlib.sha256(offer.model_bytes).hexdigest(),
                }
            )
        }
        try:
            self.learners.adopt(
                name, offer.model_bytes, offer.examples, offer.offsets, extra=counter
            )
        except LearnerError as exc:
            log.error("cannot adopt snapshot %s v%d: %s", name, offer.version, exc)
            return None
        log.info(
            "adopted snapshot %s v%d (%d examples learned)", name, offer.version, offer.examples
        )
        return offer
