"""Learning quality on real loops; prints one JSON object.

Runs ``ltrr simulate`` (the whole loop: embedded broker, learning worker, retrieval worker,
HTTP, Kafka, VW) on each world and seed, and reports per world and seed what its summary.json
measured: mean expected reward of the learned policy, ``union``, each single strategy, the
per-kind and per-query oracles; the best static baseline (best of union and the single
strategies) and the gap closed between it and the per-query oracle over the whole run and the
last quarter; recall@budget; wall time; and whether every event was accounted for. Per world,
``learned_wins`` says whether learned >= union and >= the best single strategy, whole run and
last quarter, on every seed.

Worlds: each BEIR-layout collection given (default: every folder of ../shared/collections
beside the repository, if present) and the music world (``--no-music`` leaves it out).
Item vectors are cached in ``--out``/vectors, so each collection is embedded once.

Usage: python bench/quality.py [COLLECTION_DIR ...] [--queries 4000] [--seeds 7,8,9]
                               [--no-music] [--out ltrr-quality] [--extra="--flag value"]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_COLLECTIONS = ROOT.parent / "shared" / "collections"
SINGLES = ("lexical", "semantic", "memory", "popular", "fresh")


def worlds(collections: list[Path], music: bool) -> list[tuple[str, Path | None]]:
    if not collections and DEFAULT_COLLECTIONS.is_dir():
        found = DEFAULT_COLLECTIONS.iterdir()
        collections = sorted(p for p in found if (p / "corpus.jsonl").is_file())
    out: list[tuple[str, Path | None]] = [(p.name, p) for p in collections]
    if music:
        out.append(("music", None))
    return out


def run_one(
    name: str, directory: Path | None, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    out = args.out / f"{name}-seed{seed}"
    command = [
        sys.executable, "-m", "ltrr.cli", "simulate",
        "--queries", str(args.queries), "--seed", str(seed), "--out", str(out),
        "--vector-cache-dir", str(args.out / "vectors"),
    ]  # fmt: skip
    if directory is not None:
        command += ["--beir", str(directory)]
    command += shlex.split(args.extra)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = round(time.monotonic() - started, 1)
    (args.out / f"{name}-seed{seed}.log").write_text(done.stderr)
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        return {"world": name, "seed": seed, "error": done.stderr[-2000:], "wall_seconds": wall}
    summary = orjson.loads(summary_path.read_bytes())
    return row(name, seed, summary, wall, done.returncode)


def row(name: str, seed: int, s: dict[str, Any], wall: float, code: int) -> dict[str, Any]:
    mean, last = s["mean_reward"], s["last_quarter_mean_reward"]
    singles = [k for k in SINGLES if k in mean]
    best = max(singles, key=lambda k: mean[k])
    best_last = max(singles, key=lambda k: last[k])
    return {
        "world": name,
        "seed": seed,
        "queries": s["queries"],
        "mean_reward": {
            k: mean[k] for k in ("learned", "union", *singles, "oracle", "oracle_per_query")
        },
        "last_quarter_mean_reward": {
            k: last[k] for k in ("learned", "union", *singles, "oracle", "oracle_per_query")
        },
        "best_single": best,
        "best_single_last_quarter": best_last,
        "best_static_baseline": s["best_static_baseline"],
        "gap_closed": s["gap_closed"],
        "last_quarter_gap_closed": s["last_quarter_gap_closed"],
        "gap_headroom": s.get("gap_headroom"),
        "last_quarter_gap_headroom": s.get("last_quarter_gap_headroom"),
        "learned_wins": mean["learned"] >= max(mean["union"], mean[best])
        and last["learned"] >= max(last["union"], last[best_last]),
        "recall_at_budget": s["recall_at_budget"],
        "wall_seconds": wall,
        "every_event_accounted_for": s.get("every_event_accounted_for"),
        "exit_code": code,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("collections", nargs="*", type=Path, help="BEIR-layout collections")
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--seeds", default="7,8,9", help="comma-separated seeds (7,8,9)")
    parser.add_argument("--no-music", action="store_true", help="leave the music world out")
    parser.add_argument("--out", type=Path, default=Path("ltrr-quality"))
    parser.add_argument(
        "--extra",
        default="",
        help="further ltrr simulate flags; with '=' as they start with '-': "
        "--extra='--history-features --entities 1000'",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    rows = []
    for name, directory in worlds(args.collections, not args.no_music):
        for seed in seeds:
            rows.append(run_one(name, directory, seed, args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    by_world: dict[str, dict[str, Any]] = {}
    for r in rows:
        w = by_world.setdefault(r["world"], {"runs": []})
        w["runs"].append(r)
    for w in by_world.values():
        good = [r for r in w["runs"] if "error" not in r]
        w["learned_wins_every_seed"] = bool(good) and all(r["learned_wins"] for r in good)
        w["every_event_accounted_for"] = bool(good) and all(
            r["every_event_accounted_for"] for r in good
        )
        if good:
            for key in ("gap_closed", "last_quarter_gap_closed"):
                values = [r[key] for r in good if r[key] is not None]
                w[f"mean_{key}"] = round(sum(values) / len(values), 4) if values else None
    print(json.dumps({"queries": args.queries, "seeds": seeds, "worlds": by_world}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
