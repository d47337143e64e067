"""Outputs in files of their own: one ``.npy`` or ``.pkl`` file per key and video.

A ``utils.outputs.store.Store``, like ``utils.outputs.h5_store.H5Store`` (where does a video go,
is it done, write it, close), so ``utils.run.batch_run`` treats every saving sink alike.
"""
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from utils.config import ExtractionConfig
from utils.networks import network
from utils.files import find_temporaries, remove_temporaries
from utils.outputs.naming import output_files
from utils.outputs.resume import outputs_complete
from utils.outputs.serialization import write_outputs


class FileStore:
    """``root``: the network's output folder; ``sink``: save_numpy or save_pickle.
    ``writable=False``: only answers ``complete`` (nothing is removed or written)."""

    def __init__(self, root: str, sink: str, keys: Sequence[str],
                 features: Sequence[Tuple[str, int]], writable: bool = True):
        self.root = root
        self.sink = sink
        self.keys = tuple(keys)
        self.features = features
        self.writable = writable
        self.temporaries = find_temporaries(root) if writable else {}

    @classmethod
    def open(cls, cfg: ExtractionConfig, root: str, run_id: str = "",
             record: Optional[Dict[str, Any]] = None, writable: bool = True,
             on_lost=None) -> "FileStore":
        spec = network(cfg.feature_type)
        return cls(root, cfg.on_extraction.value, spec.keys, spec.features, writable=writable)

    @staticmethod
    def name_clash(names: Sequence[str], keys: Sequence[str]) -> str:
        """'': files of distinct output names never clash."""
        return ""

    @staticmethod
    def held_runs(root: str, feature_type: str, features: Dict[str, Any]) -> list:
        """[]: the files record no run (the manifests and ``runs/`` do)."""
        return []

    def source(self, name: str) -> Optional[str]:
        """None: the files do not record their input (the manifests do)."""
        return None

    def outputs(self, name: str) -> Dict[str, str]:
        return output_files(self.root, name, self.sink, self.keys)

    def claim(self, name: str) -> str:
        """Why the video's files cannot be written ('' when they can); leftover temporaries
        of a killed run are removed."""
        files = self.outputs(name)
        real_root = os.path.realpath(self.root)
        for path in files.values():
            folder = os.path.realpath(os.path.dirname(path))
            if os.path.commonpath([folder, real_root]) != real_root:
                return (f"{os.path.dirname(path)} leads out of output_path (a link to {folder}); "
                        "nothing is written through it")
        if self.writable:
            remove_temporaries(files.values(), self.temporaries)
        return ""

    def complete(self, name: str) -> Optional[Tuple[int, float]]:
        return outputs_complete(self.outputs(name), self.features)

    def write(self, name: str, arrays: Mapping[str, np.ndarray], video_path: str) -> None:
        write_outputs(arrays, self.outputs(name))

    def close(self) -> None:
        pass
