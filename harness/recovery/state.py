"""Resumable training state: trainable weights, optimizer (and fp16 scaler) state, step, losses.

Each save is a complete folder ``step-NNNNNNNN`` written atomically; the small file ``latest``
(written atomically after it) names the newest, and older folders are deleted only then. A
process killed at any point (``kill -9`` included) leaves the previous state or the new one.
The state records the key of the job that wrote it; another job's state is ignored and
replaced, never resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from harness import atomic


class TrainState:
    def __init__(self, folder: Path, job_key: str):
        self.folder = Path(folder)
        self.job_key = job_key

    def load(self, model, optimizer, scaler=None) -> dict | None:
        """Restore the newest state of this job into ``model``/``optimizer``; its metadata
        (``step``, ``losses``, ...) or None when there is nothing of this job to resume."""
        latest = self.folder / "latest"
        if not latest.exists():
            return None
        folder = self.folder / latest.read_text().strip()
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("job_key") != self.job_key:
            return None
        from safetensors.torch import load_file

        saved = load_file(folder / "trainable.safetensors")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.requires_grad:
                    param.copy_(saved[name])
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        return meta

    def save(self, model, optimizer, scaler, meta: dict) -> None:
        from safetensors.torch import save_file

        name = f"step-{meta['step']:08d}"
        meta = {**meta, "job_key": self.job_key, "scaler": scaler.state_dict() if scaler else None}
        trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}

        def fill(tmp: Path) -> None:
            save_file(trainable, tmp / "trainable.safetensors")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

        atomic.write_dir(self.folder / name, fill)
        atomic.write_text(self.folder / "latest", name)
        for old in self.folder.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
