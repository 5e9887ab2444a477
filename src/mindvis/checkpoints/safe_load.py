"""Load .pth checkpoints without ever executing pickled code.

Design (why this is safe):
1. The gate: before anything is loaded, the file's pickle(s) run through an
   allow-list unpickler (`_GateUnpickler`, a `pickle.Unpickler` whose
   `find_class` decides). It is Python's own unpickling machine, so it sees
   exactly the globals a real load would ask for, whatever the opcodes do on
   the way (GLOBAL, STACK_GLOBAL with names built on the stack, memo tricks,
   INST, extension codes); decoy strings pushed and popped around them change
   nothing. Every global it is asked for must be on torch's weights-only
   allow-list (tensor rebuild functions, storages, dtypes, OrderedDict, ...)
   or be exactly `config.Config_<identifier>`, MinD-Vis's config classes. It
   never returns anything real: every allowed global and every persistent id
   comes back as an inert placeholder, so this pass calls no function of the
   file's choosing. The first other global refuses the file with
   `UnsafeCheckpointError`, naming the global it asked for.
2. The load: `torch.load(..., weights_only=True)`, torch's own allow-list
   unpickler, rebuilds the tensors. MinD-Vis's config classes are allowed for
   this one load only (`torch.serialization.safe_globals`) as fresh *stand-in*
   classes with no behaviour: unpickling can only create an empty instance and
   store the pickled attribute dict on it. Should torch refuse what the gate
   passed, the file is refused in our words (torch's own message, which
   suggests turning the check off, is never shown).
3. Stand-ins are turned into `ForeignConfig(class_name, fields)` records
   (plain dict of the pickled attributes) before the result is returned.

Nothing from the file is ever imported or called, and no global registry is
left modified after the load. Messages never suggest disabling a check.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mindvis.utils.errors import InputDataError

# MinD-Vis's config classes: module `config`, class `Config_<name>`
_CONFIG_GLOBAL = re.compile(r"^config\.(Config_[A-Za-z0-9_]+)$")


class UnsafeCheckpointError(InputDataError):
    """A checkpoint asks to load code we will not run (or is not a checkpoint at all)."""

    def __init__(self, path: str | Path | None, refused: list[str] | None = None, detail: str | None = None):
        self.refused = sorted(refused or [])
        if self.refused:
            problem = (
                "refused: unpickling it asks for " + ", ".join(self.refused) + ", which could run code, so nothing "
                "was loaded. Only tensors, plain containers and MinD-Vis `config.Config_*` objects are read"
            )
        else:
            problem = f"refused: {detail}"
        super().__init__(path, problem)


@dataclass(frozen=True)
class ForeignConfig:
    """A pickled MinD-Vis config object, read as data: its class name and attribute dict."""

    class_name: str  # e.g. "config.Config_MBM_fMRI"
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


class _ConfigStandIn:
    """Receives a pickled config's attributes; defines nothing that pickled data could trigger."""

    _mindvis_class_name = "config.Config_?"

    def __setstate__(self, state: Any) -> None:
        # object state is a dict (or a (dict, slots-dict) pair); keep only string-keyed data
        if isinstance(state, tuple) and len(state) == 2:
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError("config object state is not a dict of named fields")
        object.__setattr__(self, "_mindvis_fields", dict(state))


def _stand_in_for(qualified: str) -> type:
    name = qualified.split(".", 1)[1]
    return type(name, (_ConfigStandIn,), {"_mindvis_class_name": qualified})


# -- the gate ------------------------------------------------------------------
class _Inert:
    """What the gate hands back for every allowed global and persistent id: accepts any call,
    any state, any item, and does nothing (so no function of the file's choosing runs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:  # ADDITEMS on a placeholder set
        pass


def _python3_name(module: str, name: str) -> str:
    """Protocol-2 pickles (torch.save's default) say `__builtin__.eval`; unpicklers read `builtins.eval`."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class _Refused(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _GateUnpickler(pickle.Unpickler):
    """Unpickles with placeholders; `find_class` records every global asked for and, when
    `allowed` is given, refuses (raises _Refused) the first one outside it."""

    def __init__(self, file: io.BytesIO, allowed: set[str] | None):
        super().__init__(file)
        self.allowed = allowed
        self.asked: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        qualified = _python3_name(module, name)
        self.asked.add(qualified)
        if self.allowed is not None and qualified not in self.allowed and not _CONFIG_GLOBAL.match(qualified):
            raise _Refused(qualified)
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        return _Inert()


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickles torch.load would unpickle: data.pkl of the zip format, or the legacy stream."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(names) != 1:
                raise UnsafeCheckpointError(path, detail="not a torch.save archive (no single */data.pkl record)")
            return [zf.read(names[0])]
    return [path.read_bytes()]


def _run_gate(stream: bytes, allowed: set[str] | None, max_pickles: int = 5) -> tuple[set[str], str | None]:
    """(globals asked for, the first refused one or None). A legacy torch file is several pickles
    in a row (magic number, protocol, system info, the object, storage keys) then raw storage bytes;
    a damaged stream raises pickle.UnpicklingError (or what the unpickler raises)."""
    buf = io.BytesIO(stream)
    asked: set[str] = set()
    for index in range(max_pickles):
        if buf.tell() >= len(stream):
            break
        gate = _GateUnpickler(buf, allowed)
        try:
            gate.load()
        except _Refused as refused:
            return asked | gate.asked, refused.name
        except Exception:  # noqa: BLE001 - a damaged or non-pickle stream
            asked |= gate.asked
            if index == 0:
                raise
            break  # past the pickles of a legacy file: its raw storage bytes
        asked |= gate.asked
    return asked, None


def pickle_globals(stream: bytes, max_pickles: int = 5) -> set[str]:
    """Every `module.name` unpickling the stream (or a legacy torch file's pickles) asks for, as a
    real unpickler meets them (decoys cannot hide one). Executes nothing; a damaged stream gives
    what was asked for before the damage."""
    try:
        asked, _ = _run_gate(stream, None, max_pickles)
    except Exception:  # noqa: BLE001 - report what was found before the damage
        asked = set()
        buf = io.BytesIO(stream)
        gate = _GateUnpickler(buf, None)
        try:
            gate.load()
        except Exception:  # noqa: BLE001
            pass
        asked = gate.asked
    return asked


def _torch_allowed_globals() -> set[str]:
    from torch import _weights_only_unpickler as wou  # the allow-list torch.load itself enforces

    return set(wou._get_allowed_globals().keys())


# -- the loader ------------------------------------------------------------------
def _replace_stand_ins(obj: Any) -> Any:
    if isinstance(obj, _ConfigStandIn):
        return ForeignConfig(type(obj)._mindvis_class_name, dict(getattr(obj, "_mindvis_fields", {})))
    if isinstance(obj, type) and issubclass(obj, _ConfigStandIn):  # a class pickled by reference
        return ForeignConfig(obj._mindvis_class_name, {})
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _replace_stand_ins(obj[key])
        return obj
    if isinstance(obj, list):
        return [_replace_stand_ins(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_replace_stand_ins(v) for v in obj)
    return obj


def _torch_reason(exc: BaseException) -> str:
    """torch's own reason for refusing, without its advice to turn the check off."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if "weights_only" not in ln and "trust" not in ln and "safe_globals" not in ln
            and "add_safe_globals" not in ln]
    reason = (keep or ["the file is not a plain weights file"])[0]
    return reason.split(" Please use `torch.serialization")[0][:300]


def safe_load(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """A checkpoint's contents, read as data: tensors, plain containers, MinD-Vis config objects.

    mmap: map the tensors' storage instead of reading it (zip-format files only; a caller
    that needs only the config of a large file reads almost nothing).
    Raises InputDataError when the file is missing or corrupt, and UnsafeCheckpointError
    (naming the global it asked for) when unpickling it would need any other class or function.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "checkpoint file not found")
    try:
        streams = _pickle_streams(path)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error, NotImplementedError) as exc:
        raise InputDataError(path, f"cannot read checkpoint (truncated or corrupt?): {exc}") from None

    allowed = _torch_allowed_globals()
    asked: set[str] = set()
    for stream in streams:
        try:
            found, refused = _run_gate(stream, allowed)
        except RecursionError:
            raise InputDataError(path, "corrupt checkpoint: its pickle nests too deeply") from None
        except Exception as exc:  # noqa: BLE001 - the unpickler's view of a damaged stream
            raise InputDataError(path, f"corrupt or truncated checkpoint: its pickle does not unpickle "
                                       f"({type(exc).__name__}: {str(exc)[:200]})") from None
        if refused is not None:
            raise UnsafeCheckpointError(path, [refused])
        asked |= found
    stand_ins = [(_stand_in_for(name), name) for name in sorted(asked) if _CONFIG_GLOBAL.match(name)]

    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location=map_location, weights_only=True,
                             mmap=bool(mmap) and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(path, detail=f"torch's weights-only unpickler does not read it "
                                                 f"({_torch_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - any other failure means a damaged file
        raise InputDataError(path, f"corrupt or truncated checkpoint ({type(exc).__name__}: "
                                   f"{_torch_reason(exc)})") from None
    return _replace_stand_ins(obj)
