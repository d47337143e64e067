"""Numpy arrays out of pickles and ``.npy`` files, without ever running code from the file.

A pickle can name any importable callable and have it called while it loads; this reader
only lets through the few numpy names that rebuild an array, a dtype or a numpy scalar
(``ndarray``, ``dtype``, ``_reconstruct``, ``_frombuffer``, ``scalar``), and the two protocol
2 uses for bytes (``_codecs.encode``, latin-1 only; ``bytes()``, empty only).  Strings, numbers, lists, tuples and
dicts need no name at all.  Anything else (``os.system``, ``builtins.eval``,
a class of some package...) is refused with :class:`UnsafePickleError`, naming it, before it
is imported.

* ``restricted_load(file)``: one pickled object (the ``.pkl`` outputs of ``save_pickle``).
* ``load_npy(path)``: a ``.npy`` file; plain arrays are read by numpy with
  ``allow_pickle=False``, and only an object array (``dtype('O')``, e.g. a list of words saved
  by ``np.save``, which stores its elements as a pickle after the header) goes through
  ``restricted_load``.
* ``read_npy_header(file)``: the shape, order and dtype a ``.npy`` file announces (versions
  1.0, 2.0 and 3.0), read without its data.
"""
import pickle
from typing import Any, BinaryIO, Dict, Tuple

import numpy as np

try:  # numpy 2 moved numpy.lib.format's code (its private header reader too) to _format_impl
    from numpy.lib import _format_impl as _npy_format
except ImportError:
    from numpy.lib import format as _npy_format  # type: ignore[no-redef]

_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core


def _latin1(text: str, encoding: str) -> bytes:
    """Pickle protocol 2 writes bytes as ``_codecs.encode(text, "latin1")``: that, nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}: only latin1 is read")
    return text.encode("latin1")


def _empty_bytes(*args) -> bytes:
    """Pickle protocol 2 writes ``b""`` as ``bytes()``: that call, no other."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments: only the empty call is read")
    return b""


def _allowed() -> Dict[Tuple[str, str], Any]:
    """``(module, name)`` -> object, for the names numpy's pickles use (both numpy 1 and 2
    spell them: ``numpy.core.multiarray`` and ``numpy._core.multiarray``)."""
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
             ("_codecs", "encode"): _latin1,
             ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes}
    for package in ("numpy.core", "numpy._core"):
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                             ("numeric", "_frombuffer")):
            obj = getattr(getattr(_core, module, None), name, None)
            if obj is not None:
                found[(f"{package}.{module}", name)] = obj
    return found


ALLOWED = _allowed()


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle refused: it names something that is not one of numpy's array-building names
    (``module`` and ``name`` say what), or holds a value its reader does not take."""

    def __init__(self, message: str, module: str = "", name: str = ""):
        super().__init__(message)
        self.module = module
        self.name = name


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"it holds {module}.{name}, which is not a numpy array or "
                                    "string and could run code", module, name) from None


def restricted_load(file: BinaryIO) -> Any:
    """The object pickled in ``file``, if it is made of numpy arrays, dtypes, numpy scalars
    and plain Python values only; raises ``UnsafePickleError`` otherwise (nothing is run)."""
    return _Unpickler(file).load()


def read_npy_header(f: BinaryIO) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the header of the ``.npy`` file ``f`` (at its
    start; left at the array's data).  Versions 1.0 and 2.0 (Latin-1 text), and 3.0 (UTF-8:
    field names beyond Latin-1); ``ValueError`` for anything else."""
    version = np.lib.format.read_magic(f)
    shape, fortran, dtype = _npy_format._read_array_header(f, version)
    return tuple(shape), fortran, np.dtype(dtype)


def load_npy(path: str) -> np.ndarray:
    """The array of a ``.npy`` file; an object array is unpickled with ``restricted_load``.

    Raises ``ValueError`` for a file that is not a ``.npy`` array, ``UnsafePickleError`` for
    an object array whose pickle names anything else, ``OSError`` when it cannot be read.
    """
    with open(path, "rb") as f:
        shape, _, dtype = read_npy_header(f)
        if not dtype.hasobject:  # the same open file: read once
            f.seek(0)
            return np.load(f, allow_pickle=False)
        array = restricted_load(f)
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise ValueError(f"the pickled data is not the array its header announces "
                         f"(shape {tuple(shape)})")
    return array
