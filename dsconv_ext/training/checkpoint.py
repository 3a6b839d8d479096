"""Training checkpoints: written atomically, read back with validation.

``save_checkpoint`` writes to a temporary file in the destination's directory, flushes and
fsyncs it, then ``os.replace``s it over the destination: a crash or a kill at any moment leaves
either the previous checkpoint or the new one, never a half-written file under the real name.

``load_checkpoint`` reads with ``weights_only=True`` (no code runs from the file) and checks the
format tag and the keys a resume needs; anything unreadable becomes one ``CheckpointError`` line
that names the file (a truncated or overwritten file fails in the zip reader or the unpickler).
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch

FORMAT = "dsconv_ext.train/1"
REQUIRED = ("format", "config", "model", "optimizer", "scheduler", "epoch", "step", "step_in_epoch",
            "rng", "history", "running", "wall_time_s")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for resuming; one line."""


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(path: Union[str, Path], state: Mapping[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically with ``torch.save``."""
    state = dict(state)
    state["format"] = FORMAT
    _atomic_write(Path(path), lambda stream: torch.save(state, stream))


def write_json_atomic(path: Union[str, Path], data: Any) -> None:
    """``json.dump`` through the same temporary-file-and-rename path (metrics.json is read by
    other tools while training runs)."""
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    _atomic_write(Path(path), lambda stream: stream.write(text.encode()))


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """The checkpoint at ``path`` (on CPU), checked; raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt file can fail anywhere in the zip reader or unpickler
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({reason[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a dsconv-ext train checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    return state
