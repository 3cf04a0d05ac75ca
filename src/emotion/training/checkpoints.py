"""A training run's checkpoint folder, and the one commit point that keeps all of a run's outputs consistent.

Usage (trainer.train does this):
    run = RunFiles(Path(cfg.checkpoint_dir), best_path, last_path, log_path)
    run.clear()                                 # --restart: deletes only files train.py wrote, refuses otherwise
    state = run.load_state(fingerprint)         # None without state.json; UserError when it is damaged
    run.publish(state)                          # repair: best/last models and the CSV log as state.json says
    each epoch:
        names = run.save_epoch(model, epoch, improved)   # epoch_NNN.keras, last_NNN.h5 (+ best_NNN.h5)
        run.commit(state)                                # state.json is replaced: the commit point
        run.publish(state); run.prune(state)

Files in checkpoint_dir, all written by train.py (nothing else is ever deleted there):
  epoch_NNN.keras  model + optimizer after epoch NNN (what a resumed run loads)
  last_NNN.h5      the model after epoch NNN, published as <model>_last.h5
  best_NNN.h5      the best model (by monitor) up to epoch NNN, published as model_save_path
  state.json       epochs done, the three files in force, the log rows, the best score, random states
A kill before state.json is replaced leaves the previous epoch's files in force (they are deleted only
after the commit); a kill after it is repaired by publish() at the next start. Published files are hard
links to the checkpoint files (copies across file systems), each replaced atomically.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from pathlib import Path

from emotion.common import atomic, files
from emotion.common.errors import UserError

STATE = "state.json"
_OWN_FILE = re.compile(r"^(epoch_\d{3,}\.keras|last_\d{3,}\.h5|best_\d{3,}\.h5|state\.json)$")
LOG_FIELDS = ["epoch", "phase", "loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1",
              "learning_rate", "images_per_s", "seconds"]
_LATER_FIELDS = ("macro_f1",)  # added after the first runs: a run started before resumes with them empty
_NUMERIC_FIELDS = [f for f in LOG_FIELDS if f != "phase"]
# Optimizer slot variables per model weight, as saved in a .keras checkpoint.
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_own_name(name: str) -> bool:
    """A file name train.py writes in checkpoint_dir (or the temp name of one)."""
    found = atomic.temp_target(name)
    return bool(_OWN_FILE.match(found[0] if found else name))


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when h5py reports it only in its message."""
    return isinstance(exc, OSError) and (exc.errno in _DISK_FULL or "No space left" in str(exc))


def estimate_bytes(params: int, optimizer: str) -> tuple[int, int]:
    """(bytes of one epoch_NNN.keras, bytes of one .h5 model) for a model of `params` float32 parameters."""
    h5 = 4 * params + (2 << 20)  # + HDF5 metadata and the model config
    keras_file = 4 * params * (1 + OPTIMIZER_SLOTS[optimizer]) + (4 << 20)
    return keras_file, h5


def peak_bytes(params: int, optimizer: str, cross_device: bool) -> int:
    """The most train.py holds on disk at once. In checkpoint_dir, while epoch N is written and before epoch
    N-1's files go: two checkpoints, two last models and an older best model (a new best is a hard link to
    the new last one). The published best and last are hard links, except on another file system: two
    copies plus one temp copy while one is replaced."""
    keras_file, h5 = estimate_bytes(params, optimizer)
    return 2 * keras_file + 3 * h5 + (3 * h5 if cross_device else 0)


def _device(path: Path) -> int:
    return os.stat(files.nearest_existing(path)).st_dev


def _bad_state(path: Path, why: str) -> UserError:
    return UserError(f"{path} is damaged ({why}): pass --restart to start over (the checkpoint of the run "
                     f"cannot be resumed)")


def check_rows(rows, where: Path) -> list[dict]:
    """The log rows, each with every LOG_FIELDS column and numbers where numbers belong; UserError otherwise."""
    if not isinstance(rows, list):
        raise _bad_state(where, "the log rows are not a list")
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or any(k not in row for k in LOG_FIELDS if k not in _LATER_FIELDS):
            raise _bad_state(where, f"log row {i} lacks columns")
        for key in _NUMERIC_FIELDS:
            if key in _LATER_FIELDS and row.get(key, "") == "":  # training_log.csv writes it empty
                continue
            try:
                value = float(row[key])
            except (TypeError, ValueError):
                raise _bad_state(where, f"log row {i}: {key} {row[key]!r} is not a number") from None
            if key == "epoch" and (value != i):
                raise _bad_state(where, f"log row {i} is epoch {row[key]!r}")
    return rows


class RunFiles:
    """The files of one training run: checkpoint_dir and the published best/last models and CSV log."""

    def __init__(self, ckpt_dir: Path, best_path: Path, last_path: Path, log_path: Path):
        self.dir, self.best_path, self.last_path, self.log_path = Path(ckpt_dir), best_path, last_path, log_path
        self.state_path = self.dir / STATE

    # ---- start of a run

    def clear(self, published: set[str] = frozenset()) -> None:
        """--restart: delete train.py's own files in checkpoint_dir (state.json first); refuse, deleting nothing,
        when the folder holds anything else (a folder, a symlink, a file of another name) or a live writer's temp.
        published: names of other files train.py writes when they share this folder (model_save_path put in
        checkpoint_dir): kept, and not counted as foreign."""
        if not self.dir.exists():
            return
        if not self.dir.is_dir():
            raise UserError(f"checkpoint_dir {self.dir} is not a folder: point --set checkpoint_dir=PATH at one")
        entries = [e for e in sorted(self.dir.iterdir()) if not (e.name in published and e.is_file())]
        foreign = [e.name for e in entries if not (is_own_name(e.name) and e.is_file() and not e.is_symlink())]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise UserError(f"--restart deletes only train.py's own files, but checkpoint_dir {self.dir} also holds "
                            f"{shown}: move them away, or point --set checkpoint_dir=PATH at a folder of its own")
        live = [e.name for e in entries if (t := atomic.temp_target(e.name)) and atomic.pid_alive(t[1])]
        if live:
            raise UserError(f"another process is writing {live[0]} in {self.dir}: wait for that training run "
                            f"to end (or stop it) before --restart")
        for entry in sorted(entries, key=lambda e: e.name != STATE):
            entry.unlink()

    def remove_stale_temps(self, other_names: dict[Path, set[str]]) -> list[Path]:
        """Temp files of killed writers: in checkpoint_dir, and of the given file names in other folders."""
        removed = atomic.remove_stale_temps(self.dir, lambda name: bool(_OWN_FILE.match(name)))
        for folder, names in other_names.items():
            removed += atomic.remove_stale_temps(folder, names.__contains__)
        return removed

    def load_state(self, fingerprint: str) -> dict | None:
        """state.json, checked: None when there is none; UserError (one line, what to do) when it is damaged,
        names a missing file, or belongs to a run with another config."""
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad_state(self.state_path, f"not JSON: {exc}") from None
        except OSError as exc:
            raise UserError(f"cannot read {self.state_path}: {exc.strerror or exc}") from None
        if not isinstance(state, dict):
            raise _bad_state(self.state_path, "not a JSON object")
        if state.get("fingerprint") != fingerprint:
            raise UserError(f"{self.dir} holds a checkpoint of a run with another config: pass --restart "
                            f"to start over, or point --set checkpoint_dir=PATH elsewhere")
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise _bad_state(self.state_path, f"epoch {epoch!r} is not a whole number >= 1")
        if "rows" not in state:  # written before state.json held the log: read the CSV
            state["rows"] = self._read_csv(epoch)
        check_rows(state["rows"], self.state_path)
        if len(state["rows"]) != epoch:
            raise _bad_state(self.state_path, f"{len(state['rows'])} log rows for {epoch} epochs")
        best = state.get("best")
        if not isinstance(best, (int, float)) or isinstance(best, bool) or not math.isfinite(best):
            raise _bad_state(self.state_path, f"best score {best!r} is not a number")
        for key in ("checkpoint", "last_model", "best_model"):
            name = state.get(key)
            if name is None and key != "checkpoint":
                continue  # older state.json files name no models
            if not isinstance(name, str) or not _OWN_FILE.match(name):
                raise _bad_state(self.state_path, f"{key} {name!r} is not a checkpoint file name")
            if not (self.dir / name).is_file():
                raise UserError(f"{self.dir / name}, named by {self.state_path}, is missing: pass --restart to "
                                f"start over (or put the file back)")
        return state

    def _read_csv(self, upto_epoch: int) -> list[dict]:
        import csv
        if not self.log_path.exists():
            raise UserError(f"{self.log_path} is missing, and {self.state_path} needs its rows: pass --restart "
                            f"to start over")
        try:
            with self.log_path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            rows = [r for r in rows if r.get("epoch") is None or not r["epoch"].isdigit()
                    or int(r["epoch"]) <= upto_epoch]
            return check_rows(rows, self.log_path)
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            raise _bad_state(self.log_path, str(exc)) from None

    # ---- each epoch

    def save_epoch(self, model, epoch: int, improved: bool, best_model: str | None) -> dict:
        """Write epoch `epoch`'s files, none in force yet: {"checkpoint", "last_model", "best_model"} names.
        A full disk is one UserError; what it half-wrote is removed, the files in force are untouched."""
        from emotion.model import network as model_lib
        names = {"checkpoint": f"epoch_{epoch:03d}.keras", "last_model": f"last_{epoch:03d}.h5",
                 "best_model": f"best_{epoch:03d}.h5" if improved else best_model}
        try:
            model_lib.save_model_atomic(model, self.dir / names["checkpoint"])
            model_lib.save_model_atomic(model, self.dir / names["last_model"])
            if improved:
                files.link_or_copy(self.dir / names["last_model"], self.dir / names["best_model"], replace=True)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            for key in ("checkpoint", "last_model") + (("best_model",) if improved else ()):
                (self.dir / names[key]).unlink(missing_ok=True)
            self._disk_full(exc, f"saving epoch {epoch}")
        return names

    def _disk_full(self, exc: OSError, doing: str):
        """Raise the one-line UserError for a full disk met while `doing`."""
        free = shutil.disk_usage(self.dir).free / 2 ** 20
        raise UserError(f"disk full while {doing} ({free:.0f} MB free at {self.dir}): the last finished epoch is "
                        f"kept; free some space and run the same command again to resume") from None

    def commit(self, state: dict) -> None:
        """Replace state.json (atomically): from here on, the files it names are the run's."""
        try:
            atomic.write_text(self.state_path, json.dumps(state, indent=2) + "\n")
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self._disk_full(exc, "writing state.json")

    def publish(self, state: dict) -> None:
        """Make model_save_path, <model>_last.h5 and training_log.csv what state.json says (idempotent)."""
        try:
            for key, dest in (("best_model", self.best_path), ("last_model", self.last_path)):
                if state.get(key) and not _same_inode(self.dir / state[key], dest):
                    files.link_or_copy(self.dir / state[key], dest, replace=True)
            text = log_text(state["rows"])
            if not self.log_path.is_file() or self.log_path.read_bytes() != text.encode():
                atomic.write_text(self.log_path, text)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self._disk_full(exc, "publishing the models")

    def published(self, state: dict, best: bool = True) -> bool:
        """Whether publish(state) would change nothing: the last (and with `best` the best) model hold the bytes
        of the checkpoint files state.json names, and training_log.csv its rows."""
        pairs = [("last_model", self.last_path)] + ([("best_model", self.best_path)] if best else [])
        for key, dest in pairs:
            if state.get(key) and not (_same_inode(self.dir / state[key], dest) or (
                    dest.is_file() and files.sha256(dest) == files.sha256(self.dir / state[key]))):
                return False
        return self.log_path.is_file() and self.log_path.read_bytes() == log_text(state["rows"]).encode()

    def prune(self, state: dict) -> None:
        """Delete checkpoint files that state.json does not name (earlier epochs, an uncommitted epoch)."""
        keep = {STATE, *(state.get(k) for k in ("checkpoint", "last_model", "best_model"))}
        for entry in self.dir.iterdir():
            if _OWN_FILE.match(entry.name) and entry.name not in keep and entry.is_file() and not entry.is_symlink():
                entry.unlink()

    def own_bytes(self) -> int:
        """Bytes of the checkpoint files already there (they count in the disk peak)."""
        if not self.dir.is_dir():
            return 0
        return sum(e.stat().st_size for e in self.dir.iterdir() if _OWN_FILE.match(e.name) and e.is_file())

    def check_disk(self, params: int, optimizer: str) -> None:
        """UserError before training when the peak of peak_bytes() does not fit (what is there already counts)."""
        cross = _device(self.dir) != _device(self.best_path.parent)
        need = peak_bytes(params, optimizer, cross_device=False) - self.own_bytes()
        needs = {self.dir: need}
        if cross:
            needs[self.best_path.parent] = peak_bytes(params, optimizer, True) - peak_bytes(params, optimizer, False)
        for path, need in needs.items():
            path.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(path).free
            if free < need:
                raise UserError(f"only {free / 2**20:.0f} MB free at {path}; checkpoints need about "
                                f"{need / 2**20:.0f} MB: free some space or point checkpoint_dir/model_save_path "
                                f"elsewhere")


def log_text(rows: list[dict]) -> str:
    """training_log.csv's content for these rows."""
    import csv
    import io
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _same_inode(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
