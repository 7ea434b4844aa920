"""The report's chart: ops/s per variant against state size, log scales (matplotlib, optional)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .suite import HISTORY, LATEST, PUT, Result

PANELS = (
    ("put, durable (fsync per checkpoint)", PUT, True),
    ("put, not durable", PUT, False),
    ("latest: newest checkpoint, decoded", LATEST, None),
    ("history scan: checkpoints listed per second", HISTORY, None),
)


def draw(results: Sequence[Result], path: Path) -> str | None:
    """Write the chart to ``path``; return why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    figure, axes = plt.subplots(2, 2, figsize=(13, 10), layout="constrained")
    for axis, (title, operation, durable) in zip(axes.flat, PANELS, strict=True):
        rows = [
            r
            for r in results
            if r.operation == operation and r.summary is not None and r.durable == durable
        ]
        for index, variant in enumerate(dict.fromkeys(r.variant for r in rows)):
            mine = [r for r in rows if r.variant == variant]
            axis.plot(
                [r.state_bytes for r in mine],
                [r.summary.rate * r.items for r in mine if r.summary is not None],
                marker="osD^v<>phX*"[index % 11],
                linewidth=2.5 if variant.startswith("lmdbstate") else 1.2,
                label=variant,
            )
        axis.set(xscale="log", yscale="log", title=title, xlabel="state size (msgpack bytes)")
        axis.set_ylabel("checkpoints/s" if operation == HISTORY else "ops/s")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("lmdbstate and its peers (one run; higher is better)")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None
