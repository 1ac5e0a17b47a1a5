"""Loading weights and training state without running code from the file.

A ``torch.save`` file is a pickle, and unpickling can call any function the file names. Every file of
weights or state TurboTrain reads therefore goes through :func:`safe_torch_load`
(``torch.load(weights_only=True)``: tensors, containers and plain values only, plus the globals of an
explicit allow-list) or is a safetensors file, which holds no code.

Engine checkpoints are read by DeepSpeed and Accelerate, whose loaders are not ours (DeepSpeed's checkpoint
engine unpickles with ``weights_only=False``). :func:`check_engine_checkpoint` first loads every
pickle-bearing file of the folder with the restricted unpickler, allowing exactly the globals that
TurboTrain's own checkpoints contain (:data:`ENGINE_CHECKPOINT_GLOBALS`). Unpickling is deterministic, so
a file that passes can only construct those objects when DeepSpeed loads it afterwards (a file replaced
between the check and the load is outside what this guards against).
"""

from __future__ import annotations

import importlib
import pickle
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"})
"""Files read as ``torch.save`` pickles whatever their content (DeepSpeed ``*.pt``, Accelerate ``*.bin``/``*.pkl``)."""
NO_CODE_SUFFIXES = frozenset({".safetensors"})
"""Formats that cannot carry code, never unpickled (their bytes may look like anything)."""
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip container; a raw pickle (protocol >= 2)

ENGINE_CHECKPOINT_GLOBALS: dict[str, str] = {
    "numpy._core.multiarray._reconstruct": "Accelerate random_states_*.pkl: numpy's RNG state (a uint32 array)",
    "numpy.core.multiarray._reconstruct": "the same function as written by numpy 1.x",
    "numpy.ndarray": "Accelerate random_states_*.pkl: the array type of numpy's RNG state",
    "numpy.dtype": "Accelerate random_states_*.pkl: the array's dtype (uint32)",
    "numpy.dtypes.UInt32DType": "Accelerate random_states_*.pkl: the class of that dtype, which the unpickler "
                                "meets when it restores the dtype's state (not named in the file itself)",
    "deepspeed.runtime.zero.config.ZeroStageEnum": "DeepSpeed optim states: the ZeRO stage (an int enum)",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler": "DeepSpeed optim states: the (static) loss scaler's "
                                                     "numbers (cur_scale, dynamic=False)",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler": "DeepSpeed fp16 optim states (GPU only): the dynamic "
                                                            "loss scaler's numbers and dtype",
    "deepspeed.utils.tensor_fragment.fragment_address": "DeepSpeed ZeRO-1/2 optim states: (numel, start) of "
                                                        "each parameter in the flat partition (a dataclass of ints)",
}
"""Globals an engine checkpoint may name besides torch's own ``weights_only`` set, with why each is needed
(found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` and restricted loads on checkpoints of
tiny CPU runs of every engine: ZeRO 1/2/3, ZeRO-2 with CPU offload and the plain engine, fp32 and bf16, plain
fp16; DeepSpeed fp16 needs a GPU: its ``DynamicLossScaler`` is taken from DeepSpeed's ``state_dict`` code and
checked on DeepSpeed's own object; the numpy 1.x name is that release's spelling of the same function)."""


class CheckpointError(ValueError):
    """A path that is not a TurboTrain run / stage / checkpoint, or one that cannot be loaded."""


class UnsafeCheckpointError(CheckpointError):
    """A weights or state file that would construct objects outside the allow-list (possibly run code)."""


def is_pickle_file(path: Path) -> bool:
    """True for a file that a torch / pickle loader would unpickle: a pickle suffix, or pickle / zip magic
    bytes (whatever the name), except formats that hold no code."""
    if not path.is_file() or path.suffix in NO_CODE_SUFFIXES:
        return False
    if path.suffix in PICKLE_SUFFIXES:
        return True
    with path.open("rb") as f:
        head = f.read(4)
    return any(head.startswith(magic) for magic in _PICKLE_MAGIC)


def _resolve(name: str) -> Any:
    """The object behind a dotted allow-list name (imports its module)."""
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _allowed_objects(allowed: set[str], found: list[str] | None) -> list[tuple[Any, str]]:
    """``(object, name)`` pairs for ``safe_globals``: the allowed names the file names (imported), then every
    allowed name whose module is already imported. An object the unpickler meets without a name in the file
    (e.g. ``numpy.dtypes.UInt32DType``, the type of a dtype that ``numpy.dtype`` returns) exists in memory,
    so its module is imported; a file of another format (``found`` None) gets the whole allow-list. A plain
    checkpoint thus never imports DeepSpeed."""
    named = allowed if found is None else allowed & set(found)
    pairs = {name: _resolve(name) for name in named}
    for name in allowed - named:
        if name.rpartition(".")[0] in sys.modules:
            pairs[name] = _resolve(name)
    return [(obj, name) for name, obj in sorted(pairs.items())]


def _unsafe_globals(path: Path) -> list[str] | None:
    """Globals of a ``torch.save`` zip file outside torch's own safe set, found without unpickling; None for
    a file of another format (the restricted load below still guards it)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (ValueError, RuntimeError, KeyError, OSError):  # no data.pkl, torchscript, broken zip
        return None


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    """The reason in torch's long ``weights_only`` error message (e.g. ``Unsupported global: GLOBAL os.system``)."""
    text = str(err)
    _, marker, rest = text.partition("WeightsUnpickler error:")
    reason = rest.split("Check the documentation")[0] if marker else text
    return " ".join(reason.split()) or type(err).__name__


def safe_torch_load(path: str | Path, *, allowed: Iterable[str] = (), mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, allowing the globals named in ``allowed`` too.

    A file naming any other global raises :class:`UnsafeCheckpointError` that names the file and the
    globals; any other failure to read it raises :class:`CheckpointError`. ``mmap`` maps the tensors'
    storage instead of reading it (a zip-format file only; others are read).
    """
    path = Path(path)
    allowed = set(allowed)
    found = _unsafe_globals(path)
    if found is not None:
        disallowed = [name for name in found if name not in allowed]
        if disallowed:
            raise UnsafeCheckpointError(f"cannot load {path}: it names global(s) outside the allow-list (unpickling "
                                        f"it could run code): {', '.join(disallowed)}")
    try:
        extra = _allowed_objects(allowed, found)
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location="cpu", weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(f"cannot load {path}: the restricted (weights_only) unpickler refused it (a "
                                    f"corrupt file, or one that could run code): {_unpickler_reason(err)}") from err
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, AttributeError, ImportError) as err:
        raise CheckpointError(f"cannot load {path}: not a readable torch file: {type(err).__name__}: {err}") from err


def engine_pickle_files(folder: Path) -> list[Path]:
    """Every file under an engine checkpoint folder that DeepSpeed or Accelerate could unpickle."""
    return sorted(p for p in Path(folder).rglob("*") if is_pickle_file(p))


def check_engine_checkpoint(folder: str | Path) -> list[Path]:
    """Load every pickle-bearing file of ``folder`` restricted to :data:`ENGINE_CHECKPOINT_GLOBALS`; raises
    :class:`UnsafeCheckpointError` / :class:`CheckpointError` naming the first file that fails. Returns the
    files checked. Cheap: tensors are memory-mapped, not read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"engine checkpoint folder does not exist: {folder}")
    odd = sorted(p for p in folder.rglob("*") if not (p.is_file() or p.is_dir()))
    if odd:  # a FIFO, socket, device or dangling link: its content at load time cannot be checked now
        raise CheckpointError(f"cannot load {odd[0]}: not a regular file (in the engine checkpoint {folder})")
    files = engine_pickle_files(folder)
    for path in files:
        safe_torch_load(path, allowed=ENGINE_CHECKPOINT_GLOBALS, mmap=True)
    return files
