"""A cheap learning-quality probe: the loop in one process (``ltrr.sim.inprocess``), with the
plans, warm start and VW arguments of ``ltrr simulate``; prints one JSON line per world and
seed: mean reward of learned, union, the best single strategy and the per-query oracle, gap
closed (whole run, last quarter), the learned plan mix in the last quarter, every configured
plan's mean reward over the run and its last quarter (which fixed plan would have been best in
hindsight, and by how much), and the standard deviation of the rewards users gave (the noise
the learner has to see through).

No broker, no HTTP, no reward window: a reward is learned right after its search and a model
swapped in every ``--snapshot-every`` rewards, so the policy lags less than in ``ltrr
simulate``. Use it to compare settings; confirm with ``bench/quality.py``.

Usage: python bench/probe.py WORLD [WORLD ...] [--queries 800] [--seeds 1,2]
       [--vw-args TEXT] [--history] [--keep-void-plans] [--cache DIR]
       (WORLD: a BEIR-layout folder, or ``music``)
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ltrr.retrieval.policy import Policy
from ltrr.sim.beir import BeirWorld
from ltrr.sim.inprocess import LocalBackend
from ltrr.sim.runner import SimConfig, Simulation, World
from ltrr.sim.world import MusicWorld, WorldConfig
from ltrr.simulate import SIM_VW_ARGS, STRATEGIES, _plan_ids, simulation_plans


def build(name: str, seed: int, now_ms: int) -> World:
    if name == "music":
        return MusicWorld(WorldConfig(entities=2000, seed=seed), now_ms=now_ms)
    return BeirWorld(Path(name), seed=seed)


def _plan_means(steps: Any, plan_ids: list[str]) -> dict[str, float]:
    """Mean expected reward of every configured plan over ``steps``, best first: which fixed
    plan would have been best in hindsight."""
    n = max(1, len(steps))
    means = {p: round(sum(s.plans[i] for s in steps) / n, 4) for i, p in enumerate(plan_ids)}
    return dict(sorted(means.items(), key=lambda item: -item[1]))


def probe(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    world = build(name, seed, time.time_ns() // 1_000_000)
    names = STRATEGIES.split(",")
    plans = args.plans or simulation_plans(names)
    ids = _plan_ids(plans)
    union = "+".join(names)
    policy = Policy(epsilon=0.2, default_plan=ids.index(union) if union in ids else None)
    backend = LocalBackend(
        world.catalog(),
        strategies=STRATEGIES,
        plans=plans,
        cache_dir=args.cache / (f"music-{seed}" if name == "music" else Path(name).name),
        vw_args=shlex.split(args.vw_args),
        snapshot_every=args.snapshot_every,
        policy=policy,
        history=args.history,
        skip_void_plans=not args.keep_void_plans,
    )
    sim = Simulation(
        world,
        backend,
        strategies=names,
        total_budget=100,
        config=SimConfig(queries=args.queries, seed=seed),
    )
    board = sim.run()
    assert board is not None
    summary = board.summary()
    mean, last = summary["mean_reward"], summary["last_quarter_mean_reward"]
    singles = {s: mean[s] for s in names if s in mean}
    best = max(singles, key=lambda s: singles[s])
    quarter = board.steps[-max(1, len(board) // 4) :]
    mix = Counter(s.plan for s in quarter).most_common(4)
    return {
        "world": Path(name).name,
        "seed": seed,
        "learned": mean["learned"],
        "union": mean.get("union"),
        "best_single": f"{best} {singles[best]}",
        "oracle_per_query": mean["oracle_per_query"],
        "gap_closed": summary["gap_closed"],
        "last": {k: last[k] for k in ("learned", "union", "oracle_per_query") if k in last},
        "last_gap_closed": summary["last_quarter_gap_closed"],
        "last_mix": {p: round(c / len(quarter), 2) for p, c in mix},
        # the standard deviation of the rewards users actually gave: the learner's noise
        "realized_sd": round(statistics.stdev(s.realized for s in board.steps), 4),
        "plan_means": _plan_means(board.steps, board.plan_ids[: board.configured]),
        "last_plan_means": _plan_means(quarter, board.plan_ids[: board.configured]),
        "history": args.history,
        "keep_void_plans": args.keep_void_plans,
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("worlds", nargs="+", help="BEIR-layout folders, or 'music'")
    parser.add_argument("--queries", type=int, default=800)
    parser.add_argument("--seeds", default="1,2", help="comma-separated seeds (1,2)")
    parser.add_argument("--vw-args", default=" ".join(SIM_VW_ARGS))
    parser.add_argument("--plans", default="", help="plan spec (default: as ltrr simulate)")
    parser.add_argument(
        "--history",
        action="store_true",
        help="add the query-strategy history features (ltrr/retrieval/history.py)",
    )
    parser.add_argument(
        "--keep-void-plans",
        action="store_true",
        help="offer every plan for every query, even those that copy another plan because a "
        "strategy of theirs ranks nothing for the query (Searcher skip_void_plans=False)",
    )
    parser.add_argument("--snapshot-every", type=int, default=200)
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/ltrr-probe-vectors"), help="vector cache"
    )
    args = parser.parse_args()
    for name in args.worlds:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            print(json.dumps(probe(name, seed, args)), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
