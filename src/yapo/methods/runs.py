"""Run folders: configuration, metrics log, checkpoints, the final vector, the loss plot.

Layout of a run folder ``DIR``::

    DIR/config.json          what was trained, on what, with which settings
    DIR/metrics.jsonl        one JSON line per optimizer step ("kind": "train") and per
                             evaluation ("kind": "eval")
    DIR/checkpoints/epoch-0003/   after every epoch (and step-0000120/ with
                             --checkpoint-every): vector/ (a loadable vector folder)
                             + trainer_state.safetensors + trainer_state.json
    DIR/vector/              the final vector (``yapo.load_vector(DIR / "vector")``)
    DIR/loss.png             training and evaluation loss

Everything is written atomically (``yapo._io``), so a run killed at any moment leaves
either the previous or the new version of each file. Checkpoints hold no pickle:
tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from yapo._io import append_jsonl, atomic_dir, atomic_path, write_json, write_text
from yapo.errors import YapoError
from yapo.vectors.base import SteeringVector

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
VECTOR = "vector"
PLOT = "loss.png"
STATE_TENSORS = "trainer_state.safetensors"
STATE_INFO = "trainer_state.json"


@dataclass
class Checkpoint:
    """Trainer state: ``tensors`` (safetensors) and ``info`` (JSON)."""

    tensors: dict[str, Tensor]
    info: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.info["step"])


class RunFolder:
    """One training run's folder. Only the main process of a multi-process run writes."""

    def __init__(self, path: str | os.PathLike[str], writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def vector_path(self) -> Path:
        return self.path / VECTOR

    @property
    def plot_path(self) -> Path:
        return self.path / PLOT

    @property
    def checkpoints_path(self) -> Path:
        return self.path / CHECKPOINTS

    # ---------------------------------------------------------------- config
    def start(self, config: dict[str, Any], resume: bool, overwrite: bool = False) -> bool:
        """Prepare the folder; return True when an earlier run is being continued.

        A folder that already holds a run is refused unless ``resume`` (the settings
        must then match) or ``overwrite`` (it is cleared first).
        """
        exists = self.config_path.is_file()
        if exists and overwrite and not resume:
            if self.writer:
                for name in (CONFIG, METRICS, PLOT):
                    (self.path / name).unlink(missing_ok=True)
                for name in (CHECKPOINTS, VECTOR):
                    shutil.rmtree(self.path / name, ignore_errors=True)
            exists = False
        if exists and not resume:
            raise YapoError(
                f"{self.path} already holds a training run; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        if exists:
            saved = self.read_config()
            diffs = _config_differences(saved.get("settings", {}), config.get("settings", {}))
            if diffs:
                raise YapoError(
                    f"cannot resume {self.path}: its settings differ from this call's "
                    f"({'; '.join(diffs)}); resume with the same settings or use a new --out"
                )
            return True
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.config_path, config)
        return False

    def read_config(self) -> dict[str, Any]:
        try:
            data = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise YapoError(f"cannot read {self.config_path}: {exc}") from exc
        if not isinstance(data, dict):
            raise YapoError(f"{self.config_path} is not a JSON object")
        return data

    def update_config(self, **fields: Any) -> None:
        if self.writer:
            data = self.read_config()
            data.update(fields)
            write_json(self.config_path, data)

    # --------------------------------------------------------------- metrics
    def append(self, record: dict[str, Any]) -> None:
        if self.writer:
            append_jsonl(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut short by a crash: everything after it is stale
        return records

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Keep only the records up to ``step`` (those written before its checkpoint)."""
        kept = [r for r in self.read_metrics() if int(r.get("step", 0)) <= step]
        if self.writer:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
            write_text(self.metrics_path, text)
        return kept

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self, name: str, checkpoint: Checkpoint, vector: SteeringVector) -> Path:
        target = self.checkpoints_path / name
        if not self.writer:
            return target
        with atomic_dir(target) as tmp:
            vector.save(tmp / VECTOR)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in checkpoint.tensors.items()},
                str(tmp / STATE_TENSORS),
            )
            write_json(tmp / STATE_INFO, checkpoint.info)
        return target

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints as (step, folder), oldest first."""
        found = []
        if self.checkpoints_path.is_dir():
            for folder in self.checkpoints_path.iterdir():
                info = folder / STATE_INFO
                if folder.name.startswith(".") or not info.is_file():
                    continue
                try:
                    step = int(json.loads(info.read_text(encoding="utf-8"))["step"])
                except (OSError, ValueError, KeyError, json.JSONDecodeError):
                    continue
                found.append((step, folder))
        return sorted(found)

    def remove_step_checkpoints(self, keep: Path) -> None:
        """Delete mid-epoch checkpoints other than ``keep`` (epoch ones are all kept)."""
        if not self.writer:
            return
        for _, folder in self.checkpoints():
            if folder.name.startswith("step-") and folder != keep:
                shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def load_checkpoint(folder: Path) -> Checkpoint:
        try:
            tensors = load_file(str(folder / STATE_TENSORS))
            info = json.loads((folder / STATE_INFO).read_text(encoding="utf-8"))
        except Exception as exc:
            raise YapoError(f"cannot read checkpoint {folder}: {exc}") from exc
        return Checkpoint(tensors, info)

    # ------------------------------------------------------------------ plot
    def plot(self, records: list[dict[str, Any]], title: str) -> None:
        if self.writer:
            plot_loss(records, self.plot_path, title)


def _config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    current_json = json.loads(json.dumps(current))  # tuples -> lists, as saved
    return [
        f"{k}: {saved.get(k)!r} then, {current_json.get(k)!r} now"
        for k in keys
        if saved.get(k) != current_json.get(k)
    ]


def plot_loss(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training loss per step (by direction, with a running mean) and evaluation loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for d, colour in ((1, "tab:blue"), (-1, "tab:orange")):
        points = [(r["step"], r["loss"]) for r in train if r.get("d") == d]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, s=6, alpha=0.4, color=colour, label=f"train loss, d = {d:+d}")
    if train:
        window = max(1, min(25, len(train) // 10))
        losses = [r["loss"] for r in train]
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1])
            / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(
            [r["step"] for r in train],
            smooth,
            color="black",
            lw=1.2,
            label=f"running mean ({window} steps)",
        )
    for key, style in (("eval_loss_d+1", "s--"), ("eval_loss_d-1", "o--")):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, ms=4, label=key.replace("_", " "))
    ax.axhline(0.1, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("bi-directional DPO loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
