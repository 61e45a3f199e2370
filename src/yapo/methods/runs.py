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

Nothing silently wrong (docs/reliability.md):

* the folder is locked (``DIR/.yapo.lock``, :mod:`yapo._lock`) from :meth:`RunFolder.start`
  until the run object is released or its process ends, so two processes never write
  into one run;
* a folder "holds a run" when it has *any* run artefact (config, metrics, checkpoints,
  vector, plot), not only ``config.json``; a file or a symbolic link where the run
  folder or one of its artefacts should be is refused before training starts;
* ``--resume`` compares a hash of the data (prompt, chosen and rejected of every pair,
  :func:`pairs_digest`) with the one the run started with;
* a checkpoint with a NaN/infinite tensor is never written, and on reading
  :meth:`RunFolder.last_good_checkpoint` skips unreadable or non-finite ones (with a
  warning), so "the last good checkpoint" is good;
* the leftovers of saves interrupted by a kill (``.NAME.*.tmp``, ``.NAME.old``) are
  cleaned when the folder is opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from yapo._finite import finite_problem
from yapo._io import (
    append_jsonl,
    atomic_dir,
    recover_leftovers,
    write_json,
    write_text,
)
from yapo._lock import FolderLock
from yapo.errors import YapoError
from yapo.methods.reuse import decide, differences
from yapo.report.plots import plot_loss
from yapo.vectors.base import SteeringVector

logger = logging.getLogger(__name__)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
VECTOR = "vector"
PLOT = "loss.png"
STATE_TENSORS = "trainer_state.safetensors"
STATE_INFO = "trainer_state.json"
ARTEFACTS = (CONFIG, METRICS, CHECKPOINTS, VECTOR, PLOT)
DATA_DIGEST = "data_sha256"
EVAL_DATA_DIGEST = "eval_data_sha256"


def pairs_digest(pairs: Iterable[Any]) -> str:
    """SHA-256 of the prompt, chosen and rejected text of every pair, in order.

    What ``--resume`` compares: a run continues only on exactly the data it started
    with (swapping chosen and rejected, editing one prompt or reordering changes it).
    """
    digest = hashlib.sha256()
    for pair in pairs:
        fields = [pair.prompt, pair.chosen, pair.rejected]
        digest.update(json.dumps(fields, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


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
        self.lock = FolderLock(self.path)
        self._finalizer: weakref.finalize[Any, Any] | None = None

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

        The folder is locked first (a second process gets :class:`yapo._lock.RunLocked`).
        A folder that already holds (any part of) a run is refused unless ``resume``
        (the settings and the data must then match) or ``overwrite`` (it is cleared).
        """
        self._check_paths()
        if not self.writer:
            return self._start(config, resume, overwrite)
        self.acquire()
        try:
            for done in recover_leftovers(self.path) + recover_leftovers(self.checkpoints_path):
                logger.info("%s", done)
            return self._start(config, resume, overwrite)
        except BaseException:
            self.release()
            raise

    def _start(self, config: dict[str, Any], resume: bool, overwrite: bool) -> bool:
        present = self.artefacts()
        if present and overwrite and not resume:
            if self.writer:
                for name in (CONFIG, METRICS, PLOT):
                    (self.path / name).unlink(missing_ok=True)
                for name in (CHECKPOINTS, VECTOR):
                    shutil.rmtree(self.path / name, ignore_errors=True)
            present = []
        if present and not resume:
            raise YapoError(
                f"{self.path} already holds a training run ({', '.join(present)}); pass "
                "--resume to continue it, --overwrite to replace it, or choose another --out"
            )
        if present:
            if not self.config_path.is_file():
                raise YapoError(
                    f"cannot resume {self.path}: it holds {', '.join(present)} but no "
                    f"{CONFIG}, so what was trained there is unknown; use --overwrite or "
                    "another --out"
                )
            saved = self.read_config()
            before, now = saved.get("settings", {}), config.get("settings", {})
            _check_same_data(self.path, before, now)
            finished = bool(saved.get("finished"))
            if decide(before, now, finished=finished, resumable=True, on_change="refuse") == (
                "refuse"
            ):
                raise YapoError(
                    f"cannot resume {self.path}: its settings differ from this call's "
                    f"({'; '.join(differences(before, now))}); resume with the same settings "
                    "or use a new --out"
                )
            return True  # resume, or reuse: a finished run's newest checkpoint is its end
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.config_path, config)
        return False

    def artefacts(self) -> list[str]:
        """The run artefacts present in the folder (any one of them means "a run")."""
        return [name for name in ARTEFACTS if (self.path / name).exists()]

    def _check_paths(self) -> None:
        """A file or link where the folder or an artefact goes: refused before any work."""
        if self.path.exists() and not self.path.is_dir():
            raise YapoError(f"--out {self.path} is a file, not a folder; choose another --out")
        for name in ARTEFACTS:
            target = self.path / name
            if target.is_symlink():
                raise YapoError(
                    f"{target} is a symbolic link; yapo does not write through links "
                    "(remove it or choose another --out)"
                )
            if name in (CHECKPOINTS, VECTOR) and target.exists() and not target.is_dir():
                raise YapoError(f"{target} is a file where the run's {name}/ folder goes")

    def acquire(self) -> None:
        """Lock the folder for this process (released by :meth:`release` or at exit)."""
        if not self.lock.held:
            self.lock.acquire()
            self._finalizer = weakref.finalize(self, self.lock.release)

    def release(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

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
        for key, tensor in checkpoint.tensors.items():
            problem = finite_problem(tensor) if not key.startswith("rng.") else None
            if problem is not None:
                raise YapoError(f"refusing to write checkpoint {name}: {key}: {problem}")
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
        """Read one checkpoint; unreadable or non-finite ones raise a :class:`YapoError`."""
        try:
            tensors = load_file(str(folder / STATE_TENSORS))
            info = json.loads((folder / STATE_INFO).read_text(encoding="utf-8"))
            int(info["step"])
        except Exception as exc:
            raise YapoError(f"cannot read checkpoint {folder}: {exc}") from exc
        for key, tensor in tensors.items():
            problem = finite_problem(tensor) if not key.startswith("rng.") else None
            if problem is not None:
                raise YapoError(f"checkpoint {folder} is not usable: {key}: {problem}")
        return Checkpoint(tensors, info)

    def last_good_checkpoint(self, warn: bool = True) -> tuple[Path, Checkpoint] | None:
        """The newest checkpoint that reads and is finite; newer broken ones are skipped.

        A kill can only leave a complete checkpoint (they are written atomically), but a
        disk error or a hand edit can break one: then the previous one is used, with a
        warning that names the skipped folder and why.
        """
        for _, folder in reversed(self.checkpoints()):
            try:
                return folder, self.load_checkpoint(folder)
            except YapoError as exc:
                if warn:
                    logger.warning("skipping checkpoint %s: %s", folder.name, exc)
        return None

    # ------------------------------------------------------------------ plot
    def plot(self, records: list[dict[str, Any]], title: str) -> None:
        if self.writer:
            plot_loss(records, self.plot_path, title)


def _check_same_data(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    for key, what in ((DATA_DIGEST, "training"), (EVAL_DATA_DIGEST, "evaluation")):
        if key not in current:
            continue
        if saved.get(key) != current[key]:
            before = saved.get(key)
            raise YapoError(
                f"cannot resume {path}: the {what} data is not the data this run started "
                f"with (its prompt/chosen/rejected hash was "
                f"{before[:12] if isinstance(before, str) else 'not recorded'}, now "
                f"{str(current[key])[:12]}); resume with the same data or use a new --out"
            )
