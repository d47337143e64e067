"""One reader for every output format: ``load(path)`` -> video name -> {key: array}.

    from utils.outputs.features import load
    features = load("output/s3d")            # a folder of .npy, .pkl or .h5 outputs, or one .h5
    for name in features:                    # output names; listing reads no array
        arrays = features[name]              # {"s3d": (Tv, 1024) float32, "timestamps_ms": ...}

``path`` may be:

- ``<output_path>/<feature_type>``: a folder of ``<name>_<key>.npy`` (or ``.pkl``) files,
  nested folders included (``output_layout=mirror``), or of shard files
  ``<feature_type>-<k>-of-<K>.h5`` directly in the folder (only names of that form:
  ``utils.outputs.h5_format.h5_shard``);
- ``<output_path>`` itself, when it holds exactly one network's folder (and no outputs,
  manifest or ``runs/`` of its own);
- one ``.h5`` file.

The names are found without reading arrays: files by their names (the keys of the network:
its registered spec's, else those the files show; hidden files and temporaries skipped), HDF5
groups by their links (``utils.outputs.h5_format.video_names``).  A video's arrays are read when it is accessed:
``.npy`` with ``allow_pickle=False`` (``mmap=True``: memory-mapped), ``.pkl`` through the
restricted unpickler (numpy arrays and numbers only: data never runs code), HDF5 through
``utils.outputs.h5_format.read_video``.  Only complete sets are listed: a name lacking one of its
key's files (a run killed while renaming them), or an HDF5 group lacking a key's dataset, is
left out, counted in ``incomplete`` and warned about once; an HDF5 video whose datasets are
not a complete set (``utils.outputs.resume.check_arrays``) or use a filter not built in is an
``OutputError`` when read.  Files of another network's keys are ``strays``, not listed.
A folder holding outputs of several formats is an error unless ``format=`` chooses one; a video found in two ``.h5`` files is an error naming both.  A
journal beside an ``.h5`` (videos finished after its last checkpoint) is warned about: the
same command run again folds them in.  Anything unreadable raises ``OutputError`` (a
``ValueError``) naming the file.

    python -m utils.outputs.features summary PATH [--json] [--format npy|pkl|h5]
    python -m utils.outputs.features pack FOLDER OUT.h5 [--force]      # .npy / .pkl outputs -> one .h5
    python -m utils.outputs.features merge OUT.h5 IN.h5 [IN.h5 ...] [--force]

``pack`` and ``merge`` write the layout of ``utils.outputs.h5_format`` to a temporary beside OUT,
fsync it and rename it over OUT (never an existing OUT without ``--force``).  A video the
layout cannot hold (its group would pass through another video's dataset: mirror ``a.mp4``
and ``a/s3d/y.mp4``; a name that is not UTF-8, from an undecodable byte of a file name) fails
the whole command before anything is written.  Exit status: 0; 1 when ``pack`` or ``merge``
left out incomplete or unreadable sets; 2 with one ``error:`` line for unusable input.

The package, by job: ``names`` (how outputs are named and found on disk), ``read`` (``load``
and the ``Features`` mappings), ``summary``, ``pack`` (pack and merge), ``cli`` (the command
line; ``__main__`` runs it).
"""
from utils.outputs.features.cli import main
from utils.outputs.features.names import OutputError, locate, registered_keys
from utils.outputs.features.pack import merge_h5, pack
from utils.outputs.features.read import Features, FileFeatures, H5Features, load
from utils.outputs.features.summary import format_features_summary, summarize

__all__ = ["registered_keys", "Features", "FileFeatures", "H5Features", "OutputError",
           "format_features_summary", "load", "locate", "main", "merge_h5", "pack", "summarize"]
