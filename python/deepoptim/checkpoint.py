"""Checkpoints on disk: ``save(path, obj)`` and ``load(path, into=None)``.

``obj`` is anything with ``state_dict()`` (an optimizer, a layer, ``nn.Sequential``) or a
state itself: dicts with ``str`` keys, lists, tuples, NumPy arrays, NumPy scalars and
Python ``int``, ``float``, ``bool``, ``str`` and ``None``, nested in any way. A round trip
gives back the same structure with the same types: a tuple stays a tuple, an ``int`` an
``int`` (however large), a ``float`` the same bits (NaN and inf included), an array the
same dtype and shape (0-d included), a ``np.float64`` a ``np.float64``.

The format is a NumPy ``.npz`` (a zip of ``.npy`` files) that loads with
``np.load(path, allow_pickle=False)``:

- ``__meta__``: a ``uint8`` array holding UTF-8 JSON ``{"format": "deepoptim.checkpoint",
  "version": 1, "kind": ..., "tree": ...}``, where ``tree`` describes the structure, every
  scalar exactly (floats as ``float.hex``), and each array or NumPy scalar by reference;
- ``a0``, ``a1``, ...: the arrays (NumPy scalars as 0-d arrays), stored uncompressed;
- the zip's archive comment ``deepoptim-sha256:<64 hex digits>``: the SHA-256 of every
  byte of the file before those 64 digits. ``load`` checks it before reading anything, so
  a truncated file or one flipped byte anywhere is refused.

Writes are atomic: the file is written to a temporary file in the same directory, flushed
and fsynced, renamed over ``path`` with ``os.replace`` and the directory is fsynced. A
writer killed midway leaves the previous checkpoint intact (and possibly a stale
``.<name>.*.tmp`` file beside it, which is safe to delete).

Examples:
    >>> import os, tempfile
    >>> import numpy as np
    >>> import deepoptim
    >>> from deepoptim.optim import Adam
    >>> params = [np.ones(3, np.float32)]
    >>> opt = Adam(params, lr=1e-2)
    >>> _ = opt.step([np.full(3, 0.5, np.float32)])
    >>> path = os.path.join(tempfile.mkdtemp(), "opt.ckpt")
    >>> deepoptim.save(path, opt)
    >>> restored = deepoptim.load(path, into=Adam([params[0].copy()], lr=1e-2))
    >>> restored.state_dict()["param_groups"][0]["step"]
    1
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any, Dict, List, Optional, Set, Tuple, TypeVar, Union

import numpy as np

__all__ = ["save", "load"]

FORMAT = "deepoptim.checkpoint"
VERSION = 1
_META = "__meta__"
_PREFIX = b"deepoptim-sha256:"
_DIGEST_LEN = 64  # hex digits of a SHA-256
_COMMENT_LEN = len(_PREFIX) + _DIGEST_LEN
_EOCD_LEN = 22  # the zip's end-of-central-directory record, before its comment
_CHUNK = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")


# ---- the structure as JSON -----------------------------------------------------------

def _encode(obj: Any, arrays: List[np.ndarray], where: str) -> Any:
    # NumPy scalars first: np.float64 is a float and np.bool_ is not a bool.
    if isinstance(obj, np.generic):
        if obj.dtype.hasobject:
            raise TypeError(f"{where}: cannot save a NumPy object scalar")
        arrays.append(np.asarray(obj))
        return {"t": "scalar", "ref": len(arrays) - 1}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"{where}: cannot save an array of dtype object (it would need pickle)")
        if type(obj) is not np.ndarray:
            raise TypeError(f"{where}: cannot save a {type(obj).__name__} (an ndarray subclass); pass np.asarray(x)")
        arrays.append(obj)
        return {"t": "array", "ref": len(arrays) - 1}
    t = type(obj)
    if obj is None:
        return {"t": "none"}
    if t is bool:
        return {"t": "bool", "v": obj}
    if t is int:
        return {"t": "int", "v": str(obj)}  # as text: exact for any size, in any JSON reader
    if t is float:
        return {"t": "float", "v": obj.hex()}  # exact bits, NaN and inf included
    if t is str:
        return {"t": "str", "v": obj}
    if t is dict:
        items = []
        for k, v in obj.items():
            if type(k) is not str:
                raise TypeError(f"{where}: dict keys must be str, got {type(k).__name__} {k!r}")
            items.append([k, _encode(v, arrays, f"{where}[{k!r}]")])
        return {"t": "dict", "items": items}
    if t is list or t is tuple:
        return {"t": t.__name__, "items": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]}
    raise TypeError(
        f"{where}: cannot save a {t.__module__}.{t.__qualname__}; a checkpoint holds dicts with str keys, "
        "lists, tuples, NumPy arrays and scalars, int, float, bool, str and None"
    )


def _decode(node: Any, arrays: Dict[int, np.ndarray], used: Set[int]) -> Any:
    t = node["t"]
    if t == "none":
        return None
    if t == "bool":
        if type(node["v"]) is not bool:
            raise ValueError("bool node without a bool")
        return node["v"]
    if t == "int":
        return int(node["v"])
    if t == "float":
        return float.fromhex(node["v"])
    if t == "str":
        if type(node["v"]) is not str:
            raise ValueError("str node without a str")
        return node["v"]
    if t == "dict":
        out = {}
        for k, v in node["items"]:
            if type(k) is not str or k in out:
                raise ValueError(f"bad dict key {k!r}")
            out[k] = _decode(v, arrays, used)
        return out
    if t == "list":
        return [_decode(v, arrays, used) for v in node["items"]]
    if t == "tuple":
        return tuple(_decode(v, arrays, used) for v in node["items"])
    if t in ("array", "scalar"):
        ref = node["ref"]
        if type(ref) is not int or ref not in arrays or ref in used:
            raise ValueError(f"bad array reference {ref!r}")
        used.add(ref)
        a = arrays[ref]
        if t == "scalar":
            if a.ndim != 0:
                raise ValueError(f"scalar reference {ref} is not 0-d")
            return a[()]
        return a
    raise ValueError(f"unknown node type {t!r}")


# ---- writing -------------------------------------------------------------------------

def _write_zip(f: Any, meta: bytes, arrays: List[np.ndarray]) -> None:
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        entries = [(_META, np.frombuffer(meta, dtype=np.uint8))] + [(f"a{i}", a) for i, a in enumerate(arrays)]
        for name, a in entries:
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)
        # Placeholder digest; the real one is written once the bytes before it are known.
        zf.comment = _PREFIX + b"0" * _DIGEST_LEN


def _sha256_of_head(f: Any, size: int) -> str:
    """SHA-256 of the first ``size`` bytes of the open binary file ``f``."""
    h = hashlib.sha256()
    f.seek(0)
    left = size
    while left:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            raise ValueError("file shorter than expected")
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _fsync_dir(directory: str) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows: directories cannot be opened for fsync
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(path: PathLike, obj: Any) -> None:
    """Write ``obj`` (or ``obj.state_dict()`` if it has one) to ``path`` atomically.

    The file is complete and checksummed when this returns; a crash before that leaves
    whatever was at ``path`` before. ``path`` is used as given (no suffix is added).
    Raises ``TypeError`` (naming where in the structure) for a value a checkpoint cannot
    hold, before anything is written.
    """
    path = os.fspath(path)
    kind = "state"
    state = obj
    if callable(getattr(obj, "state_dict", None)):
        state = obj.state_dict()
        kind = type(obj).__name__
    arrays: List[np.ndarray] = []
    tree = _encode(state, arrays, "state")
    meta = json.dumps(
        {"format": FORMAT, "version": VERSION, "kind": kind, "tree": tree}, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as f:
            _write_zip(f, meta, arrays)
            f.flush()
            size = f.seek(0, os.SEEK_END)
            digest = _sha256_of_head(f, size - _DIGEST_LEN)
            f.seek(size - _DIGEST_LEN)
            f.write(digest.encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


# ---- reading -------------------------------------------------------------------------

def _read_verified(f: Any, path: str) -> Tuple[Dict[str, Any], Dict[int, np.ndarray]]:
    size = f.seek(0, os.SEEK_END)
    if size < _EOCD_LEN + _COMMENT_LEN:
        raise ValueError(f"{path}: not a deepoptim checkpoint ({size} bytes: truncated, or another format)")
    f.seek(size - _EOCD_LEN - _COMMENT_LEN)
    tail = f.read(_EOCD_LEN + _COMMENT_LEN)
    eocd, comment = tail[:_EOCD_LEN], tail[_EOCD_LEN:]
    if (
        eocd[:4] != b"PK\x05\x06"
        or int.from_bytes(eocd[20:22], "little") != _COMMENT_LEN
        or not comment.startswith(_PREFIX)
    ):
        raise ValueError(
            f"{path}: not a deepoptim checkpoint (no checksum record at the end: the file is truncated, "
            "corrupted, or was not written by deepoptim.save)"
        )
    expected = comment[len(_PREFIX):].decode("ascii", errors="replace")
    actual = _sha256_of_head(f, size - _DIGEST_LEN)
    if actual != expected:
        raise ValueError(f"{path}: checksum mismatch (SHA-256 {actual}, recorded {expected}): the file is corrupted")
    f.seek(0)
    try:
        with np.load(f, allow_pickle=False) as npz:
            names = set(npz.files)
            if _META not in names:
                raise ValueError("no __meta__ entry")
            meta = json.loads(bytes(npz[_META]).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError("not a deepoptim checkpoint")
            if meta.get("version") != VERSION:
                raise ValueError(f"format version {meta.get('version')!r}, this deepoptim reads {VERSION}")
            arrays = {}
            for name in names - {_META}:
                if not (name[:1] == "a" and name[1:].isdigit()):
                    raise ValueError(f"unexpected entry {name!r}")
                arrays[int(name[1:])] = npz[name]
    except ValueError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, OSError, KeyError, ... from a malformed file
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    return meta, arrays


def load(path: PathLike, into: Optional[T] = None) -> Any:
    """Read a checkpoint written by :func:`save`.

    Without ``into``, returns the saved state (the same structure and types that were
    saved). With ``into=obj``, calls ``obj.load_state_dict(state)`` and returns ``obj``.

    Raises ``ValueError`` naming ``path`` if the file is truncated, corrupted (its
    SHA-256 does not match), or not a deepoptim checkpoint; ``into`` is then not touched.
    ``FileNotFoundError`` if there is no file.
    """
    path = os.fspath(path)
    if into is not None and not callable(getattr(into, "load_state_dict", None)):
        raise TypeError(f"into: expected an object with load_state_dict(), got {type(into).__name__}")
    with open(path, "rb") as f:
        try:
            meta, arrays = _read_verified(f, path)
        except ValueError as exc:
            if str(exc).startswith(f"{path}: "):
                raise
            raise ValueError(f"{path}: not a valid deepoptim checkpoint ({exc})") from exc
    try:
        used: Set[int] = set()
        state = _decode(meta["tree"], arrays, used)
        if used != set(arrays):
            raise ValueError(f"arrays {sorted(set(arrays) - used)} are not referenced")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: malformed checkpoint structure ({type(exc).__name__}: {exc})") from exc
    if into is None:
        return state
    into.load_state_dict(state)  # type: ignore[attr-defined]
    return into
