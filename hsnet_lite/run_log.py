"""Per-epoch training log: a CSV rewritten atomically each epoch, plus TensorBoard when
``torch.utils.tensorboard`` imports (optional dependency)."""
from __future__ import annotations

import os

from .atomic_io import write_csv_atomic

LOG_FIELDS = ("epoch", "train_loss", "train_miou", "val_loss", "val_miou", "val_fb_iou", "lr", "seconds")


def _tensorboard_writer(folder: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is not installed: the CSV is the log
        return None
    return SummaryWriter(folder)


class RunLog:
    """Keeps every epoch's row; ``enabled=False`` (ranks other than 0) writes nothing."""

    def __init__(self, folder: str, rows: list[dict] | None = None, enabled: bool = True,
                 tensorboard: bool = True) -> None:
        self.path = os.path.join(folder, "log.csv")
        self.rows = list(rows or [])
        self.enabled = enabled
        self.tb = _tensorboard_writer(os.path.join(folder, "tensorboard")) if enabled and tensorboard else None

    def add(self, row: dict) -> None:
        """Append an epoch's row, rewrite the CSV, and add its scalars to TensorBoard."""
        self.rows.append(row)
        if not self.enabled:
            return
        write_csv_atomic(self.path, self.rows, LOG_FIELDS)
        if self.tb is not None:
            for key in LOG_FIELDS[1:]:
                self.tb.add_scalar(key.replace("_", "/", 1), row[key], row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def format_row(row: dict) -> str:
    """A one-line human summary of an epoch."""
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} mIoU {row['train_miou']:.1f} | "
            f"val loss {row['val_loss']:.4f} mIoU {row['val_miou']:.1f} FB-IoU {row['val_fb_iou']:.1f} | "
            f"lr {row['lr']:g} | {row['seconds']:.0f}s")
