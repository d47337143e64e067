"""``pack`` (a folder of ``.npy`` / ``.pkl`` outputs -> one ``.h5``) and ``merge_h5`` (shard
files -> one ``.h5``): the layout of ``utils.outputs.h5_format``, written whole or not at all,
and refused before anything is written when a video cannot be stored."""
import errno
import logging
import os
from typing import Dict, Optional, Sequence, Tuple


from utils.console import printable_path
from utils.errors import one_line
from utils.files import atomic_path, is_utf8
from utils.outputs import h5_format
from utils.outputs.features.names import OutputError, regular_file
from utils.outputs.features.read import FileFeatures, H5Features, load
from utils.outputs.resume import check_outputs

log = logging.getLogger(__name__)


def _check_out(out: str, force: bool) -> None:
    if os.path.isdir(out):
        raise OutputError(f"{out} is a folder; expected the path of the .h5 file to write")
    if os.path.lexists(out) and not force:
        raise OutputError(f"{out} exists; --force replaces it")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise OutputError(f"{folder}: no such folder (for {out})")


# room a new file needs beyond its inputs' bytes: the file's own, and for each input file
# (a video's key file, or a whole .h5) a share of the ~1.5 KB of metadata a video takes
SLACK_BYTES = 2**20
FILE_SLACK_BYTES = 1024


def write_h5(out: str, fill, need: int) -> None:
    """Write ``out`` whole or not at all: ``fill(f)`` fills a new file under a temporary name
    beside ``out``, which is fsynced and renamed over ``out``; on any error (or Ctrl-C) the
    temporary is removed and ``out`` is left as it was.  ``need``: the bytes the file may
    take at most, checked free and reserved before h5py writes (h5py crashes the process on
    a full disk): a full disk is an ``OutputError``."""
    try:
        with atomic_path(out) as tmp:
            with h5_format.create_reserved(tmp, need, f"writing {out}") as f:
                fill(f)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise OutputError(f"{out}: not enough free space ({e.strerror}); nothing was "
                          "written") from None


def _bytes_of(paths) -> int:
    """The bytes of these files (those that can be read), plus the slack of ``write_h5``."""
    total = SLACK_BYTES
    for path in paths:
        try:
            total += os.stat(path).st_size + FILE_SLACK_BYTES
        except OSError:
            continue
    return total


def _clash_message(source: str, clash: Tuple[str, str], keys: Sequence[str]) -> str:
    video, other = clash
    key = other[len(video) + 1:].split("/")[0]
    return (f"{printable_path(source)}: videos '{printable_path(video)}' and '{printable_path(other)}' cannot "
            f"both be stored in one .h5 file: '{printable_path(video)}/{key}' is the {key} dataset of the "
            f"first, where the second's group would go; rename one of them (nothing was "
            f"written)")


def _write_video(f, name: str, arrays, video_path: str, run: Optional[str], where: str) -> None:
    """``h5_format.write_video``, its refusals (a name the layout or HDF5 cannot hold) as an
    ``OutputError`` naming the video and where it comes from."""
    try:
        h5_format.write_video(f, name, arrays, video_path, run)
    except UnicodeEncodeError:
        raise OutputError(f"{printable_path(where)}: video '{printable_path(name)}' cannot be stored: "
                          "its name is not UTF-8 text, and HDF5 stores names as UTF-8 (nothing "
                          "was written)") from None
    except ValueError as e:
        raise OutputError(f"{printable_path(where)}: {printable_path(one_line(e))} (nothing was "
                          "written)") from None  # it names the video


def _file_of(files: Dict[str, str], key: str) -> str:
    """The file of ``key`` in a video's set ``{key: path}``: where it is, or, missing, where it
    would be (beside the others, ``<name>_<key>.<ext>``)."""
    if key in files or not files:
        return files.get(key, "")
    other, path = next(iter(files.items()))
    stem, _, ext = path.rpartition(".")
    return f"{stem[:-len(other) - 1]}_{key}.{ext}"


def pack(folder: str, out: str, force: bool = False, format: Optional[str] = None
         ) -> Tuple[int, int]:
    """A folder of ``.npy`` (or ``.pkl``) outputs -> one ``.h5`` file of ``utils.outputs.h5_format``'s
    layout (``video_path`` and ``run`` from the folder's manifests when they name the video,
    the run records from ``runs/``).  An incomplete or unreadable set
    (``utils.outputs.resume.check_outputs``) is left out with one warning naming the file at
    fault and why.  Returns (videos packed, sets left out)."""
    if format == "h5":
        raise OutputError("pack reads .npy or .pkl outputs; .h5 files are combined by merge")
    features = load(folder, format=format)
    if features.format == "h5":
        features.close()
        raise OutputError(f"{features.source} holds .h5 files; combine them with merge")
    assert isinstance(features, FileFeatures)
    _check_out(out, force)
    keys = features.output_keys
    for name in features:
        if not is_utf8(name):
            raise OutputError(f"{printable_path(features.files(name)[keys[0]])}: the video's "
                              "name is not UTF-8 text (an undecodable byte in the file name), "
                              "and HDF5 stores names as UTF-8; rename its files, then pack "
                              "again (nothing was written)")
    clash = h5_format.name_clash(list(features), keys)
    if clash is not None:
        raise OutputError(_clash_message(features.source, clash, keys))
    counts = [0, 0]

    def fill(f):
        h5_format.init_file(f, features.feature_type or "")
        h5_format.add_runs(f, features.runs())
        for name in sorted(list(features) + features.incomplete):
            files = features.files(name, incomplete=True)
            verdict = check_outputs(files, features.output_features)
            if verdict.done is None:
                log.warning("%s: %s; video '%s' not packed (an incomplete or unreadable output "
                            "set)", printable_path(_file_of(files, verdict.key)), printable_path(verdict.why),
                            printable_path(name))
                counts[1] += 1
                continue
            _write_video(f, name, features.read(name), features.video_path(name) or "",
                         features.run(name), printable_path(files[keys[0]]))
            counts[0] += 1

    write_h5(out, fill, _bytes_of(path for name in list(features) + features.incomplete
                                  for path in features.files(name, incomplete=True).values()))
    return counts[0], counts[1]


def merge_h5(out: str, inputs: Sequence[str], force: bool = False) -> Tuple[int, int]:
    """Shard files -> one ``.h5`` (a video in two inputs is an ``OutputError`` naming both;
    the run records of all are kept).  A video that is not a complete set (a key missing, a
    dataset of the wrong dtype or shape: ``utils.outputs.resume.check_arrays``) or cannot be
    read (bit rot in a compressed chunk, a filter not built in) is left out with one warning
    naming the file, the video and why.  Returns (videos merged, videos left out)."""
    for i, path in enumerate(inputs):
        if not regular_file(path):
            raise OutputError(f"{path}: no such file (or not a regular file)")
        for other in inputs[:i]:
            if os.path.samefile(path, other):
                raise OutputError(f"{path} is given twice ({other})")
    _check_out(out, force)
    with H5Features(list(inputs), ", ".join(inputs), warn=False) as features:
        for name in features:
            if not is_utf8(name):
                raise OutputError(f"{printable_path(features.file_of(name))}: video "
                                  f"'{printable_path(name)}' has a name that is not UTF-8 text; it "
                                  "cannot be stored by this tool (nothing was written)")
        keys = features.output_keys
        clash = h5_format.name_clash(sorted(features), keys)
        if clash is not None:
            raise OutputError(_clash_message(
                f"{features.file_of(clash[0])}, {features.file_of(clash[1])}", clash, keys))

        counts = [0, 0]

        def fill(f):
            h5_format.init_file(f, features.feature_type or "")
            h5_format.add_runs(f, features.runs())
            for name in features.incomplete:
                path, lacked = features.lacking(name)
                log.warning("%s: video '%s' lacks %s; not merged (an incomplete output set)",
                            printable_path(path), printable_path(name), ", ".join(lacked))
                counts[1] += 1
            for name in sorted(features):
                try:
                    arrays = features.read(name)
                except OutputError as e:  # it names the file, the video and why
                    log.warning("%s; not merged", printable_path(str(e)))
                    counts[1] += 1
                    continue
                _write_video(f, name, arrays, features.video_path(name) or "",
                             features.run(name), features.file_of(name))
                counts[0] += 1

        write_h5(out, fill, _bytes_of(inputs))
        return counts[0], counts[1]
