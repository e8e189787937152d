"""PNG plots of the load tests (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def throughput_latency_plot(series: dict[str, list], title: str, path: Path) -> Path:
    """One line per series: x = p95 latency (ms), y = throughput (inferences/s), points labelled by concurrency."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for label, points in series.items():
        xs = [p.p95_ms for p in points]
        ys = [p.throughput for p in points]
        ax.plot(xs, ys, marker="o", label=label)
        for p in points:
            ax.annotate(f"c={p.concurrency}", (p.p95_ms, p.throughput), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("p95 latency (ms)")
    ax.set_ylabel("throughput (inferences/s)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
