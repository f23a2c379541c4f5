"""The simulation report: Markdown with PNG plots, plus ``summary.json`` (machine-readable)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import orjson

from ltrr.sim.scoreboard import LEARNED, ORACLE, QUERY_ORACLE, UNIFORM, Scoreboard

matplotlib.use("Agg")  # files only, no display
from matplotlib import pyplot as plt

_STYLE = {
    LEARNED: ("black", "-", 2.4),
    ORACLE: ("dimgray", "--", 1.6),
    QUERY_ORACLE: ("silver", "--", 1.6),
}


def _style(name: str) -> dict[str, Any]:
    color, line, width = _STYLE.get(name, (None, ":" if name == UNIFORM else "-", 1.2))
    return {"color": color, "linestyle": line, "linewidth": width}


def _moving(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _cumulative(values: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def plot_rewards(series: Mapping[str, Sequence[float]], path: Path) -> None:
    n = len(series[LEARNED])
    window = max(20, n // 20)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for name, values in series.items():
        top.plot(_moving(values, window), label=name, **_style(name))
    top.set_ylabel(f"expected reward per query\n(moving mean of {window})")
    top.set_title("Learned retrieval plans vs. static baselines on the same queries")
    top.legend(loc="lower right", fontsize=8, ncol=3)
    top.grid(alpha=0.3)
    learned = _cumulative(series[LEARNED])
    for name, values in series.items():
        if name == LEARNED:
            continue
        regret = [b - a for a, b in zip(learned, _cumulative(values), strict=True)]
        bottom.plot(regret, label=name, **_style(name))
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("cumulative regret of learned\n(baseline - learned; < 0: learned ahead)")
    bottom.set_xlabel("query")
    bottom.legend(loc="lower left", fontsize=8, ncol=3)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_recall(recall: Mapping[str, float], path: Path) -> None:
    names = list(recall)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    palette = {LEARNED: "black", ORACLE: "dimgray", QUERY_ORACLE: "silver"}
    colors = [palette.get(n, "tab:blue") for n in names]
    ax.bar(names, [recall[n] for n in names], color=colors)
    for i, n in enumerate(names):
        ax.text(i, recall[n] + 0.01, f"{recall[n]:.2f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("recall@budget")
    ax.set_title("Share of relevant entities in each policy's candidate set")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_plan_mix(mix: Mapping[str, Mapping[str, float]], path: Path) -> None:
    kinds = list(mix)
    plans = sorted({p for shares in mix.values() for p in shares})
    top = sorted(plans, key=lambda p: -sum(mix[k].get(p, 0.0) for k in kinds))[:9]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    bottoms = [0.0] * len(kinds)
    cmap = plt.get_cmap("tab10")
    for i, plan in enumerate([*top, "other"]):
        if plan == "other":
            shares = [1.0 - sum(mix[k].get(p, 0.0) for p in top) for k in kinds]
        else:
            shares = [mix[k].get(plan, 0.0) for k in kinds]
        ax.bar(kinds, shares, bottom=bottoms, label=plan, color=cmap(i % 10))
        bottoms = [b + s for b, s in zip(bottoms, shares, strict=True)]
    ax.set_ylabel("share of queries")
    ax.set_title("Plans the learned policy chose, per query kind (second half of the run)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    board: Scoreboard, out_dir: Path, *, title: str, facts: Mapping[str, Any]
) -> dict[str, Any]:
    """Write report.md, summary.json and the plots into ``out_dir``; return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {**board.summary(), **facts}
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if not board.steps:
        (out_dir / "report.md").write_text(f"# {title}\n\nNo query was simulated.\n", "utf-8")
        return summary
    plot_rewards(board.series(), out_dir / "rewards.png")
    plot_recall(summary["recall_at_budget"], out_dir / "recall.png")
    plot_plan_mix(summary["learned_plan_mix_by_kind_second_half"], out_dir / "plans.png")
    (out_dir / "report.md").write_text(markdown(summary, title), "utf-8")
    return summary


def markdown(summary: Mapping[str, Any], title: str) -> str:
    mean, cum = summary["mean_reward"], summary["cumulative_reward"]
    last, recall = summary["last_quarter_mean_reward"], summary["recall_at_budget"]
    regret = summary["regret_vs"]
    room_run = headroom_text(summary.get("gap_headroom"))
    room_last = headroom_text(summary.get("last_quarter_gap_headroom"))
    lines = [
        f"# {title}",
        "",
        f"{summary['queries']} queries; final model version {summary['final_model_version']}.",
        "",
        f"- Learned policy beats every static baseline on cumulative reward: "
        f"**{'yes' if summary['beats_every_static_baseline'] else 'no'}** "
        f"(best static baseline: `{summary['best_static_baseline']}`, regret of learned vs. it "
        f"{regret[summary['best_static_baseline']]:+.1f}; negative means learned is ahead).",
        f"- Gap closed between the best static baseline and the per-query oracle: "
        f"**{_fmt(summary['gap_closed'])}** over the whole run, "
        f"**{_fmt(summary['last_quarter_gap_closed'])}** in the last quarter (best static "
        f"baseline there: `{summary['best_static_baseline_last_quarter']}`; 0 = no gain from "
        f"learning, 1 = the best plan for every query). The gap itself (per-query oracle "
        f"above the best static baseline, mean reward): {room_run} over the run, "
        f"{room_last} in the last quarter; "
        f"a ratio over a gap of a few thousandths moves a lot on a few queries.",
        f"- Learned / per-kind oracle expected reward in the last quarter of the run: "
        f"{summary['last_quarter_learned_over_oracle']}.",
        f"- Realized reward of the learned policy (sampled clicks): "
        f"{summary['realized_mean_reward']} per query.",
        "",
        "Rewards are the click model's expected reward of what each policy would show for the",
        "same query (sim/clicks.py); `oracle` is the best fixed plan per query kind in hindsight,",
        "`oracle_per_query` the best configured plan for each query in hindsight; the best static",
        "baseline is the best of `union` and the single strategies.",
        "",
        "| policy | mean reward | cumulative | regret of learned vs. it | last quarter "
        "| recall@budget |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in mean:
        lines.append(
            f"| {name} | {mean[name]:.4f} | {cum[name]:.1f} | "
            f"{regret.get(name, 0.0):+.1f} | {last[name]:.4f} | {recall.get(name, 0.0):.3f} |"
        )
    lines += ["", "![rewards](rewards.png)", "", "## Per query kind (mean expected reward)", ""]
    per_kind = summary["per_kind_mean_reward"]
    names = list(mean)
    lines.append("| kind | queries | " + " | ".join(names) + " | oracle plan |")
    lines.append("|---|---:|" + "---:|" * len(names) + "---|")
    for kind, row in per_kind.items():
        cells = " | ".join(f"{row[n]:.3f}" for n in names)
        lines.append(
            f"| {kind} | {row['queries']} | {cells} | `{summary['oracle_plan_by_kind'][kind]}` |"
        )
    lines += ["", "## Plans the learned policy chose", "", "![plans](plans.png)", ""]
    for kind, shares in summary["learned_plan_mix_by_kind_second_half"].items():
        top = ", ".join(f"`{p}` {s:.0%}" for p, s in list(shares.items())[:3])
        lines.append(f"- **{kind}**: {top}")
    lines += ["", "## Recall@budget", "", "![recall](recall.png)", ""]
    facts = {k: v for k, v in summary.items() if k not in _SUMMARY_KEYS}
    if facts:
        lines += ["## Run", ""]
        lines += [f"- {k}: {v}" for k, v in facts.items()]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a (no gap)" if value is None else f"{value:.2f}"


def headroom_text(value: float | None) -> str:
    """A gap in mean reward (per-query oracle minus best static), as the reports print it."""
    return "n/a" if value is None else f"{value:.4f}"


_SUMMARY_KEYS = {
    "best_static_baseline_last_quarter",
    "gap_closed",
    "last_quarter_gap_closed",
    "gap_headroom",
    "last_quarter_gap_headroom",
    "queries",
    "mean_reward",
    "cumulative_reward",
    "regret_vs",
    "best_static_baseline",
    "beats_every_static_baseline",
    "last_quarter_mean_reward",
    "last_quarter_learned_over_oracle",
    "realized_mean_reward",
    "recall_at_budget",
    "oracle_plan_by_kind",
    "learned_plan_mix_by_kind_second_half",
    "per_kind_mean_reward",
    "final_model_version",
}
