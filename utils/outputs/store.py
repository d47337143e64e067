"""Where a saving run's outputs go: the ``Store`` protocol ``utils.run.batch_run`` drives, and
``STORES``, the store of each ``on_extraction`` value.

Adding an output format touches four places: its store module (a class with the methods of
``Store``, beside ``file_store.py`` and ``h5_store.py``), its entry in ``STORES`` below, its
reader in ``utils/outputs/features/read.py`` (``load`` reads every format), and its
``on_extraction`` value in ``utils/config.py``.  What "complete" means stays
``utils.outputs.resume.arrays_complete``.
"""
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Type

import numpy as np

from utils.config import ExtractionConfig
from utils.outputs.file_store import FileStore
from utils.outputs.h5_store import H5Store


class Store(Protocol):
    """The outputs of one shard of a run, in one format."""

    root: str  # the network's output folder

    @classmethod
    def open(cls, cfg: ExtractionConfig, root: str, run_id: str, record: Dict[str, Any],
             writable: bool = True, on_lost: Optional[Callable[[str, str], None]] = None
             ) -> "Store":
        """The store of this run's shard (``record``: its provenance record; ``writable=False``:
        a read-only folder, only ``outputs`` and ``complete`` are asked; ``on_lost``: told of a
        video that could not be kept after ``write`` returned, with why)."""

    @staticmethod
    def name_clash(names: Sequence[str], keys: Sequence[str]) -> str:
        """Why these output names (the whole list) cannot be stored together ('' when they
        can); asked before any work."""

    @staticmethod
    def held_runs(root: str, feature_type: str, features: Dict[str, Any]
                  ) -> List[Tuple[str, Dict[str, Any]]]:
        """``(where, features)`` of the runs that made outputs in the folder with other
        ``features``, as the output files themselves record them (beside the manifests' run
        records); asked by the rerun check."""

    def source(self, name: str) -> Optional[str]:
        """The input whose features the output name holds, as the outputs record it (None:
        not there, or not recorded); a video whose path differs is refused."""

    def outputs(self, name: str) -> Dict[str, str]:
        """Where each key of the video goes (the manifest names them)."""

    def claim(self, name: str) -> str:
        """Why the video's outputs cannot be written ('' when they can); asked before it is
        extracted."""

    def complete(self, name: str) -> Optional[Tuple[int, float]]:
        """``(Tv, seconds of video)`` when the video's outputs are there whole (a rerun skips
        it); None otherwise."""

    def write(self, name: str, arrays: Mapping[str, np.ndarray], video_path: str) -> None:
        """Store the video's arrays: done once this returns; ``OSError`` (disk full) leaves
        nothing half written."""

    def close(self) -> None:
        """Finish what the run wrote (again: nothing happens)."""


# on_extraction -> the store of its outputs (``print`` has none)
STORES: Dict[str, Type[Store]] = {
    "save_numpy": FileStore,
    "save_pickle": FileStore,
    "save_h5": H5Store,
}
