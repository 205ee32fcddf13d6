"""The JSONL metrics log of a run (`metrics.jsonl`): one record per logging step.

A record holds the means, over the steps since the previous record, of the loss and of every metric the
objective returns (plus `grad_norm`), then `step`, `lr`, `samples_per_s`, and the held-out values
(`heldout_*`, `pixal3d.training.heldout`) on evaluation steps. The sums stay on the device between records
(`LogWindow`), so a training step never waits for the host.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    if lines and not _is_json(lines[-1]):  # a process killed mid-write leaves a partial last line
        logger.warning("%s: dropping a partial last line (%d characters)", path, len(lines[-1]))
        lines.pop()
    lines = [line for line in lines if line and json.loads(line)["step"] <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


class LogWindow:
    """Sums of the logged values over the steps since the last log line, kept on device (no per-step sync).

    A log line reports their means; a checkpoint stores the open window (`state_dict`), so a resumed run logs
    the same values as an uninterrupted one.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None
        self.steps = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
        if self.sums is None:
            self.names, self.sums = list(values), stacked
        else:
            self.sums += stacked
        self.steps += 1

    def means(self, ddp: bool) -> dict[str, float]:
        """The window's means (rank-averaged under DDP: gloo has no AVG, so sum then divide); one host sync."""
        values = self.sums / self.steps
        if ddp:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values = values / dist.get_world_size()
        return dict(zip(self.names, values.tolist(), strict=True))

    def reset(self) -> None:
        self.names, self.sums, self.steps = [], None, 0

    def state_dict(self, ddp: bool) -> dict[str, Any]:
        """The open window, rank-averaged (every rank must call it under DDP)."""
        if self.sums is None:
            return {"names": [], "sums": [], "steps": 0}
        sums = self.sums.clone()
        if ddp:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
            sums = sums / dist.get_world_size()
        return {"names": self.names, "sums": sums.tolist(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.reset()
        if state["steps"]:
            self.names, self.steps = list(state["names"]), int(state["steps"])
            self.sums = torch.tensor(state["sums"], dtype=torch.float32, device=device)
