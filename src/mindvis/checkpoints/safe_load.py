"""Load .pth checkpoints without ever executing pickled code.

Design (why this is safe):
1. Every load is `torch.load(..., weights_only=True)`. torch's weights-only
   unpickler resolves a GLOBAL only from an allow-list (tensor rebuild
   functions, storages, dtypes, OrderedDict, ...) and refuses everything else,
   so `os.system`, `builtins.eval`, `subprocess.Popen`, ... are never resolved,
   let alone called.
2. MinD-Vis stores its run configuration as a pickled instance of a class in
   a module named `config` (e.g. `config.Config_MBM_fMRI`). We never import
   that module. Before loading, we disassemble the pickle statically with
   `pickletools.genops` (reads opcodes, runs nothing) and list its globals.
   A global is accepted only when it is already on torch's allow-list or its
   name is exactly `config.Config_<identifier>`. For each accepted config name
   we allow-list, for this one load only (`torch.serialization.safe_globals`),
   a fresh *stand-in* class: it has no behaviour; unpickling can only create
   an empty instance (`cls.__new__`) and store the pickled attribute dict on
   it. Any other global makes us refuse up front with `UnsafeCheckpointError`
   naming every refused `module.name`; torch's unpickler would refuse them too
   (belt and braces).
3. Stand-ins are turned into `ForeignConfig(class_name, fields)` records
   (plain dict of the pickled attributes) before the result is returned.

Nothing from the file is ever imported or called, and no global registry is
left modified after the load.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import re
import zipfile
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
                "refusing to load: the pickle references " + ", ".join(self.refused) + ", which may run code. "
                "Only tensors, plain containers and MinD-Vis `config.Config_*` objects are accepted"
            )
        else:
            problem = f"refusing to load: {detail}"
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


# -- static inspection ---------------------------------------------------------
def _python3_name(module: str, name: str) -> str:
    """Protocol-2 pickles (torch.save's default) say `__builtin__.eval`; unpicklers read `builtins.eval`."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickles torch.load would unpickle: data.pkl of the zip format, or the legacy stream."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(names) != 1:
                raise UnsafeCheckpointError(path, detail="not a torch.save archive (no single */data.pkl record)")
            return [zf.read(names[0])]
    return [path.read_bytes()]


def pickle_globals(stream: bytes, max_pickles: int = 5) -> set[str]:
    """Every `module.name` a pickle (or a legacy torch file's pickles) would look up. Executes nothing."""
    found: set[str] = set()
    buf = io.BytesIO(stream)
    for _ in range(max_pickles):  # legacy files: magic, protocol, sys info, data, storage keys
        if buf.tell() >= len(stream):
            break
        strings: list[str] = []  # recent string pushes, to resolve STACK_GLOBAL (protocol 4+)
        memo: dict[int, str] = {}
        n_memo = 0
        try:
            for op, arg, _pos in pickletools.genops(buf):
                if op.name == "GLOBAL":
                    module, name = str(arg).split(" ", 1)
                    found.add(_python3_name(module, name))
                elif op.name == "STACK_GLOBAL":
                    found.add(_python3_name(strings[-2], strings[-1]) if len(strings) >= 2
                              else "<unresolved STACK_GLOBAL>")
                elif op.name in ("INST", "OBJ"):
                    found.add(f"{str(arg).replace(' ', '.')}" if arg else "<protocol-0 OBJ>")
                elif isinstance(arg, str) and "UNICODE" in op.name:
                    strings.append(arg)
                elif op.name == "MEMOIZE":
                    if strings:
                        memo[n_memo] = strings[-1]
                    n_memo += 1
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    strings.append(memo[int(arg)])
        except (ValueError, EOFError, pickle.UnpicklingError):
            # trailing raw storage bytes of a legacy file, or a truncated stream
            break
    return found


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


def safe_load(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` that also reads MinD-Vis's pickled config objects as data.

    mmap: map the tensors' storage instead of reading it (zip-format files only; a caller
    that needs only the config of a large file reads almost nothing).
    Raises InputDataError when the file is missing or corrupt, and
    UnsafeCheckpointError (naming each refused `module.name`) when it would
    need any other class or function.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "checkpoint file not found")
    try:
        streams = _pickle_streams(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputDataError(path, f"cannot read checkpoint: {exc}") from None
    referenced: set[str] = set()
    for stream in streams:
        referenced |= pickle_globals(stream)

    allowed = _torch_allowed_globals()
    stand_ins: list[tuple[type, str]] = []
    refused: list[str] = []
    for name in sorted(referenced - allowed):
        if _CONFIG_GLOBAL.match(name):
            stand_ins.append((_stand_in_for(name), name))
        else:
            refused.append(name)
    if refused:
        raise UnsafeCheckpointError(path, refused)

    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location=map_location, weights_only=True,
                             mmap=bool(mmap) and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(path, detail=f"torch's weights-only unpickler refused it: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any other failure means a damaged file
        raise InputDataError(path, f"corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from None
    return _replace_stand_ins(obj)
