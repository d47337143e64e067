"""Where a video's outputs go: its output name and the file of each key."""
import os
from typing import Dict, List, Optional, Sequence

from utils.errors import InputError
from utils.files import NAME_MAX, fit_name
from utils.inputs.paths import absolute_path

EXTENSIONS = {"save_numpy": "npy", "save_pickle": "pkl"}


def longest_suffix(keys: Sequence[str]) -> int:
    """The longest ``_<key>.<ext>`` an output name of these keys gets, in bytes
    (``_video_embedding.npy``: 20 for s3d_howto100m's, ``_timestamps_ms.npy``: 18 for s3d's)."""
    return max(len(f"_{key}.{ext}".encode("utf-8")) for key in keys for ext in EXTENSIONS.values())


def output_root(output_path: str, feature_type: str) -> str:
    """The folder a network's outputs (and the run's manifests) go to: ``<output_path>/<type>``."""
    return os.path.join(absolute_path(output_path), feature_type)


def output_files(root: str, name: str, on_extraction: str,
                 keys: Sequence[str]) -> Dict[str, str]:
    """``{key: <root>/<name>_<key>.<ext>}`` for a saving sink; ``{}`` for ``print``."""
    ext = EXTENSIONS.get(on_extraction)
    if ext is None:
        return {}
    return {key: os.path.join(root, f"{name}_{key}.{ext}") for key in keys}


def output_names(paths: List[str], keys: Sequence[str], layout: str = "flat",
                 input_root: Optional[str] = None) -> List[str]:
    """Each video's output name, relative to ``<output_path>/<feature_type>``, without
    ``_<key>.<ext>``.

    ``flat``: the file's stem.  ``mirror``: its folders kept, relative to ``input_root``
    (null: from the filesystem root), so a video's outputs land in the same place whichever
    folder the command runs from and whichever other videos are listed.  A stem too long for
    its output files' names (``<stem>_<key>.<ext>`` over 255 bytes for one of the network's
    ``keys``) is shortened to a prefix and a hash of the whole stem (``utils.files.fit_name``).  Two inputs that would share a name, or an input outside
    ``input_root``, are an error raised before any work.
    """
    names: List[str] = []
    owner: Dict[str, str] = {}
    root = os.path.normpath(absolute_path(input_root)) if input_root else os.sep
    room = NAME_MAX - longest_suffix(keys)
    for p in paths:
        stem = fit_name(os.path.splitext(os.path.basename(p))[0], room)
        if layout == "mirror":
            if os.path.commonpath([p, root]) != root:
                raise InputError(f"input_root: {p} is not under {root}; set input_root to a "
                                 "folder that holds every input (or null)")
            name = os.path.join(os.path.dirname(os.path.relpath(p, root)), stem)
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
