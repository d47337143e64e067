"""The word list (``s3d_dict.npy``): a 1-D numpy array of words, read without running code.

``np.save`` writes a list of Python strings either as a unicode array (``<U..``, read by numpy
with ``allow_pickle=False``) or, as an object array, as a pickle after the ``.npy`` header.
The second kind is read with ``utils.outputs.safe_pickle``, which accepts numpy arrays and strings
and refuses any other name the pickle holds, before anything runs.  Either way the result
must be a 1-D array of strings, or the file is refused with one ``WeightsError`` line.
"""
import os
from typing import List


from utils.errors import WeightsError, one_line
from utils.outputs.safe_pickle import UnsafePickleError, load_npy


def read_word_list(path: str) -> List[str]:
    """The words of a ``.npy`` word list, in order."""
    where = f"dict_path {path}"
    if os.path.isdir(path):
        raise WeightsError(f"{where}: is a directory, expected the word list s3d_dict.npy")
    if not os.path.isfile(path):
        raise WeightsError(f"{where}: no such file")
    try:
        array = load_npy(path)
    except UnsafePickleError as e:
        raise WeightsError(f"{path}: refused to load it: {e}") from None
    except OSError as e:
        raise WeightsError(f"{where}: cannot read it ({one_line(e.strerror or e, 200)})") from None
    except Exception as e:  # noqa: BLE001 -- damaged .npy / pickle data fails in many ways
        cause = f"{type(e).__name__}: {one_line(e, 200)}" if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a word list (.npy array of words): {cause}") from None
    if array.ndim != 1 or array.size == 0:
        raise WeightsError(f"{path}: not a word list: expected a 1-D array of words, found "
                           f"shape {array.shape}")
    if array.dtype.kind != "U" and not array.dtype.hasobject:
        raise WeightsError(f"{path}: not a word list: expected strings, found dtype {array.dtype}")
    bad = next((w for w in array if not isinstance(w, str)), None)  # np.str_ is a str
    if bad is not None:
        raise WeightsError(f"{path}: not a word list: expected strings, found a "
                           f"{type(bad).__name__} ({one_line(repr(bad), 60)})")
    return [str(w) for w in array]
