"""``ltrr learn-offline``: train from a file of Reward/DSJSON lines exactly as the worker does,
so anyone can check that the streaming model equals the offline one."""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

from ltrr.agents.learning import Guard, Learners
from ltrr.state.store import MemoryStore


def learn_offline(
    path: Path,
    vw_args: tuple[str, ...],
    model: str,
    output: Path | None,
    compare: Path | None,
    guard: Guard | None = None,
) -> int:
    learners = Learners(MemoryStore(), vw_args, guard=guard)
    verdicts: Counter[str] = Counter()
    lines = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                lines += 1
                verdicts[learners.learn(line.strip()).kind] += 1
    report: dict[str, object] = {
        "file": str(path),
        "lines": lines,
        **verdicts,
        "vw_args": list(vw_args),
        "models": {},
    }
    for name in sorted(learners.models):
        data = learners.model_bytes(name)
        report["models"][name] = {  # type: ignore[index]
            "examples": learners.examples(name),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "average_loss": learners.average_loss(name),
        }
    if model not in learners.models:
        print(json.dumps(report, indent=2))
        print(f"ltrr learn-offline: no reward for model {model!r} in {path}", file=sys.stderr)
        return 1
    data = learners.model_bytes(model)
    if output:
        output.write_bytes(data)
        report["output"] = str(output)
    status = 0
    if compare:
        other = compare.read_bytes()
        report["identical_to"] = {
            "file": str(compare),
            "identical": other == data,
            "sha256": hashlib.sha256(other).hexdigest(),
        }
        status = 0 if other == data else 3
    print(json.dumps(report, indent=2))
    return status
