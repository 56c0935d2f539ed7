"""Loss curves from OUT/metrics.jsonl as a PNG (matplotlib, headless Agg backend)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file; a line cut short by a crash is skipped."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def loss_plot(rows: list[dict[str, Any]], stages: list[str] | None = None) -> bytes:
    """PNG bytes: train and validation loss per stage (one panel each), BLEU if logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [s for s in dict.fromkeys(r.get("stage") for r in rows) if isinstance(s, str)]
    stages = [s for s in (stages or present) if s in present] or present
    fig, axes = plt.subplots(1, max(len(stages), 1), figsize=(4.5 * max(len(stages), 1), 3.6),
                             squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=False):
        train = [r for r in rows if r.get("stage") == stage and r.get("kind") == "train"]
        valid = [r for r in rows if r.get("stage") == stage and r.get("kind") == "valid"]
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
        ax.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-",
                label="valid", lw=1.5, ms=3)
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        bleu = [r for r in valid if "bleu" in r]
        if bleu:
            twin = ax.twinx()
            twin.plot([r["step"] for r in bleu], [r["bleu"] for r in bleu], "s--", color="C2",
                      label="BLEU", lw=1, ms=3)
            twin.set_ylabel("BLEU")
            twin.legend(loc="upper center", fontsize=8)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def plot_file(metrics_path: Path, out: Path, stages: list[str] | None = None) -> Path:
    out.write_bytes(loss_plot(read_metrics(metrics_path), stages))
    return out
