"""Where a video's outputs go: its output name and the file of each key."""
import os
from typing import Dict, List

from utils.errors import InputError
from utils.files import NAME_MAX, fit_name
from utils.inputs import absolute_path

KEYS = ("s3d", "timestamps_ms", "fps")
EXTENSIONS = {"save_numpy": "npy", "save_pickle": "pkl"}
# the longest "_<key>.<ext>" an output name gets (``_timestamps_ms.npy``: 18 bytes)
LONGEST_SUFFIX = max(len(f"_{key}.{ext}") for key in KEYS for ext in EXTENSIONS.values())


def output_files(root: str, name: str, on_extraction: str) -> Dict[str, str]:
    """``{key: <root>/<name>_<key>.<ext>}`` for a saving sink; ``{}`` for ``print``."""
    ext = EXTENSIONS.get(on_extraction)
    if ext is None:
        return {}
    return {key: os.path.join(root, f"{name}_{key}.{ext}") for key in KEYS}


def output_names(paths: List[str], layout: str = "flat") -> List[str]:
    """Each video's output name, relative to ``<output_path>/s3d``, without ``_<key>.<ext>``.

    ``flat``: the file's stem.  ``mirror``: its folders kept, relative to the working
    directory (or from the filesystem root for paths outside it).  A stem too long for its
    output files' names (over 237 bytes) is shortened to a prefix and a hash of the whole
    stem (``utils.files.fit_name``).  Two inputs that would share a name are an error,
    raised before any work starts.
    """
    names: List[str] = []
    owner: Dict[str, str] = {}
    cwd = os.path.normpath(absolute_path("."))  # where the user ran the command, also under Hydra
    for p in paths:
        stem = fit_name(os.path.splitext(os.path.basename(p))[0], NAME_MAX - LONGEST_SUFFIX)
        if layout == "mirror":
            rel = os.path.relpath(p, cwd) if os.path.commonpath([p, cwd]) == cwd else p.lstrip(os.sep)
            name = os.path.join(os.path.dirname(rel), stem)
        else:
            name = stem
        if name in owner:
            hint = ("use output_layout=mirror to keep the inputs' folders"
                    if layout == "flat" and os.path.dirname(owner[name]) != os.path.dirname(p)
                    else "rename one of them")
            raise InputError(f"output name collision: {owner[name]} and {p} would both write "
                             f"'{name}_*'; {hint}")
        owner[name] = p
        names.append(name)
    return names
