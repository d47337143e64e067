"""A batch run: every input either yields complete outputs or one FAILED line, and the run goes on.

Order of work: gather the paths and name every output (name collisions are an error before
anything else happens), build the extractor (a weights fault stops the run before any video
or output is touched), record the run's provenance and refuse a folder made with other
feature options (utils.records.provenance), then one video at a time: skip it if its outputs are
complete, extract it, write its outputs atomically, report.  Ctrl-C or SIGTERM stops the run
after the write in progress; the summary then starts with "interrupted;" or "terminated;"
(utils.run.stopping).
"""
import contextlib
import logging
import os
import time
from typing import (Any, Callable, ContextManager, Dict, List, Optional, Protocol, Sequence,
                    Tuple, Union)

import numpy as np

from utils.config import ExtractionConfig
from utils.console import ProgressLog, print_features, print_predictions, printable_path
from utils.networks import network
from utils.errors import EXPECTED_CAUSES, ExtractionError, InputError, launcher_exceptions, one_line
from utils.inputs.paths import collect_paths, excluded_folders, shard_paths
from utils.outputs.naming import output_names, output_root
from utils.outputs.store import STORES, Store
from utils.records.lock import shard_lock
from utils.records.manifests import latest_records
from utils.outputs.features.names import locate
from utils.records.provenance import check_rerun, new_run_id, run_record, write_run_record
from utils.records.run_report import RunReport, failed_name, manifest_name
from utils.records.schema import ManifestRecord, RunRecord
from utils.run.stopping import Terminated, stop_signals, writes_finish_first

log = logging.getLogger(__name__)


class Extractor(Protocol):
    """What the batch run drives (``models.s3d.ExtractS3D``, or a test double)."""

    device: Any
    labels: List[str]  # class names for show_pred

    def planned(self, paths: Sequence[str], progress: bool = False) -> ContextManager:
        """Within the block, ``extract`` of these paths (in this order) may be decoded ahead."""

    def extract(self, path: str, with_logits: bool = False) -> Dict[str, np.ndarray]:
        """The video's arrays (``logits`` too with ``with_logits``); raises ExtractionError."""

    def identity(self) -> Dict[str, Any]:
        """What decides its numbers besides the options: ``{"weights": {"source", "sha256"},
        "precision": the precision it really runs at, "device": ...}`` (for provenance)."""



class _Warnings(logging.Handler):
    """Collects the warnings about one video logged while it is extracted, for the manifest.

    Only those naming its path: the next video may be decoding in another thread meanwhile.
    """

    def __init__(self, path: str):
        super().__init__(logging.WARNING)
        self.path = path
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.path in message:
            self.messages.append(message)


@contextlib.contextmanager
def _collect_warnings(path: str):
    handler = _Warnings(path)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)


def _open_report(cfg: ExtractionConfig, root: str, started: float, run_id: str,
                 record: RunRecord) -> Tuple[RunReport, Dict[str, str]]:
    """Check the folder against ``record``, write it, open the manifest and failure list
    (every manifest read once); with the report, the input whose features each output name
    holds, by the manifests (``_sources``)."""
    manifest_file = os.path.join(root, manifest_name(cfg.shard, cfg.num_shards))
    per_manifest: Dict[str, Dict[str, ManifestRecord]] = {}
    latest = latest_records(root, per_manifest=per_manifest)
    _check_rerun(cfg, root, record, latest)
    try:
        write_run_record(root, record)
        report = RunReport(failed_file=os.path.join(root, failed_name(cfg.shard, cfg.num_shards)),
                           manifest_file=manifest_file, started=started, run_id=run_id,
                           previous=per_manifest.get(manifest_file, {}), launch=record.launch)
    except OSError as e:
        raise InputError(f"output_path: cannot write to {root} ({e.strerror or e})") from None
    # overwrite=true redoes every video: no name is held (``_taken`` is not asked)
    return report, {} if cfg.overwrite else _sources(root, latest, network(cfg.feature_type).keys)


def _check_rerun(cfg: ExtractionConfig, root: str, record: RunRecord,
                 latest: Dict[str, ManifestRecord]) -> None:
    """``check_rerun`` over the runs the manifests name and those the store's own files
    record (a shard ``.h5`` copied alone into a folder keeps its ``run:<id>`` records)."""
    store = STORES.get(cfg.on_extraction.value)
    held = store.held_runs(root, cfg.feature_type, record.features) \
        if store and not cfg.overwrite else []
    check_rerun(root, record, latest, cfg.overwrite, held)


def _sources(root: str, latest: Dict[str, ManifestRecord], keys: Sequence[str]
             ) -> Dict[str, str]:
    """Output name -> the input path whose features the manifests say it holds."""
    found: Dict[str, str] = {}
    for path, record in latest.items():
        if record.made and record.outputs:
            where = locate(root, next(iter(record.outputs.values())), keys)
            if where is not None:
                found[where[1]] = path
    return found


def run(cfg: ExtractionConfig,
        extractor: Union[Extractor, Callable[[ExtractionConfig], Extractor]]) -> RunReport:
    """Extract every video of this shard; return the report (``report.num_failed`` > 0: exit 1).

    ``extractor``: the one to drive, or a factory called with ``cfg`` once the inputs are
    known to be usable (so a bad list fails before the weights are loaded).  SIGTERM is
    raised as ``utils.run.stopping.Terminated`` (a KeyboardInterrupt) after the write in progress.
    """
    with stop_signals():
        return _run(cfg, extractor)


def _run(cfg: ExtractionConfig, extractor) -> RunReport:
    started = time.time()
    paths = collect_paths(cfg.video_paths, cfg.file_with_video_paths,
                          exclude=excluded_folders(cfg.output_path, cfg.tmp_path))
    # named on the whole list, so every shard agrees
    spec = network(cfg.feature_type)
    names = output_names(paths, spec.keys, cfg.output_layout.value, cfg.input_root)
    store_type = STORES.get(cfg.on_extraction.value)  # None: printed
    clash = store_type.name_clash(names, spec.keys) if store_type else ""
    if clash:
        raise InputError(clash)
    mine = shard_paths(list(zip(paths, names)), cfg.shard, cfg.num_shards)
    if not paths:
        log.warning("the list of videos is empty: nothing to do")
    root = output_root(cfg.output_path, spec.name)
    saving = cfg.on_extraction.value != "print"
    if saving and os.path.islink(root):  # like runs/: never written through
        raise InputError(f"output_path: {root} is a link (to {os.path.realpath(root)}); nothing "
                         "is written through it: remove the link, or move the folder it leads "
                         "to in its place")
    if not hasattr(extractor, "extract"):
        extractor = extractor(cfg)  # weights faults stop the run here
    if not saving:
        return _videos(cfg, extractor, RunReport(started=started), None, mine, len(paths))
    run_id = new_run_id()
    record = run_record(cfg, run_id, extractor.identity())
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(shard_lock(root, cfg.shard, cfg.num_shards, cfg.lock_wait_s))
        except InputError:
            if not _read_only(root):
                raise
            if cfg.overwrite:
                raise
            _check_rerun(cfg, root, record, latest_records(root))
            return _read_only_run(cfg, root, mine, started)
        report, sources = _open_report(cfg, root, started, run_id, record)
        store = _open_store(cfg, root, run_id, record.to_json(), on_lost=_lost_to(report))
        held.callback(_close_store, store)
        return _videos(cfg, extractor, report, store, mine, len(paths), sources)


def _open_store(cfg: ExtractionConfig, root: str, run_id: str = "", record=None,
                writable: bool = True, on_lost=None) -> Store:
    """Where this run's outputs go: the store of its ``on_extraction`` (``STORES``)."""
    return STORES[cfg.on_extraction.value].open(cfg, root, run_id, record or {},
                                                writable=writable, on_lost=on_lost)


def _lost_to(report: RunReport):
    """A video the HDF5 file could not take after all is reported failed at ``write``."""
    def lost(video_path: str, why: str) -> None:
        report.add_failed(video_path, "write", why)
    return lost


def _close_store(store) -> None:
    """Fold what the run wrote (HDF5); a failure leaves it in the journal for the next run."""
    if store is None:
        return
    try:
        store.close()
    except (OSError, ValueError) as e:
        log.error("%s: cannot bring the file up to date (%s); the finished videos stay in the "
                  "journal beside it and the next run adds them", getattr(store, "path", ""),
                  e.strerror or e)


def _read_only(root: str) -> bool:
    return os.path.isdir(root) and not os.access(root, os.W_OK)


def _read_only_run(cfg: ExtractionConfig, root: str, mine, started: float) -> RunReport:
    """A read-only output folder: fine when it already holds every video of the shard (each
    reported skipped, nothing written); otherwise the lock's error (exit 2)."""
    store = _open_store(cfg, root, writable=False)
    try:
        present = [(path, store.outputs(name), store.complete(name)) for path, name in mine]
    finally:
        store.close()
    missing = [path for path, _, done in present if done is None]
    if missing:
        one = len(missing) == 1
        raise InputError(f"output_path: {root} is read-only and {len(missing)} video"
                         f"{'' if one else 's'} of this shard {'is' if one else 'are'} not "
                         f"done (first: {missing[0]}); make it writable or choose another "
                         "folder")
    log.warning("output_path: %s is read-only; every video of this shard is done there, "
                "nothing is written", root)
    report = RunReport(started=started)
    for path, files, done in present:
        report.add_skipped(path, files, *done)
    log.info(report.summary())
    return report


def _videos(cfg: ExtractionConfig, extractor, report: RunReport, store, mine,
            total: int, sources: Optional[Dict[str, str]] = None) -> RunReport:
    """Skip, extract, write and report each video of this shard (under its lock);
    ``store``: where outputs go (None: printed); ``sources``: output name -> the input whose
    features it holds (``_sources``)."""
    log.info("%d video%s in this shard (%d in all), %s on %s", len(mine),
             "" if len(mine) == 1 else "s", total,
             f"features to {store.root}" if store else "printing features", extractor.device)
    progress = ProgressLog(len(mine), cfg.progress_every_s)
    # First the videos already done (skipped), then the list of those to extract, so the
    # extractor can decode the next one while the current one computes (num_workers) and
    # draw progress bars; a path asked for out of plan is simply extracted on its own.
    try:
        todo = []
        for path, name in mine:
            if store:
                escape = store.claim(name) or (
                    "" if cfg.overwrite else _taken(sources or {}, store, path, name))
                if escape:
                    report.add_failed(path, "write", escape)
                    continue
                present = None if cfg.overwrite else store.complete(name)
                if present is not None:
                    report.add_skipped(path, store.outputs(name), *present)
                    continue
            todo.append((path, name))
        if report.skipped:
            log.info("%d videos already have complete outputs (skipped), %d to extract",
                     report.skipped, len(todo))
        with extractor.planned([p for p, _ in todo], progress=True):
            for path, name in todo:
                _one_video(cfg, extractor, report, path, name, store)
                progress.update(report)
    except KeyboardInterrupt as e:
        _stopped(report, store, "terminated" if isinstance(e, Terminated) else "interrupted")
        raise
    except launcher_exceptions() as e:  # the launcher ends the task: it goes on to the launcher
        _stopped(report, store, f"stopped by the launcher ({type(e).__name__}: {one_line(e)})")
        raise
    _close_store(store)  # before the summary: a video the file could not take is a failure
    report.flush()
    progress.update(report, final=True)
    log.info(report.summary())
    return report


def _taken(sources: Dict[str, str], store, path: str, name: str) -> str:
    """Why the video cannot use its output name ('' when it can): the name already holds the
    features of another input, as its manifest record or the store's own record (an
    ``.h5`` group's ``video_path``) says: a flat layout's ``a/clip.mp4`` and ``b/clip.mp4``
    in two runs, or a mirror layout of two lists with other common folders."""
    owner = sources.get(name)
    if owner is None:  # the manifests do not say: the store's own record (an .h5 group's)
        owner = store.source(name)
    if owner is not None and not _same_file(owner, path):
        return (f"its output name '{printable_path(name)}' already holds the features of "
                f"{printable_path(owner)}; use output_layout=mirror (or input_root) to "
                "keep the inputs' folders in the names, or another output_path (or "
                "overwrite=true, which redoes every video)")
    return ""


def _same_file(a: str, b: str) -> bool:
    """The same path, or two paths of one file (a link, another mount of it)."""
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # gone, or a name the OS refuses
        return False


def _stopped(report: RunReport, store, how: str) -> None:
    """The run stops before its end: keep what is written, say so in the summary."""
    report.stopped = how
    _close_store(store)
    report.flush()
    log.info(report.summary())


def _one_video(cfg: ExtractionConfig, extractor: Extractor, report: RunReport, path: str,
               name: str, store) -> None:
    """Extract and write one video (``store``: where to, None to print); report the outcome."""
    try:
        with _collect_warnings(path) as warnings:
            arrays = extractor.extract(path, with_logits=cfg.show_pred)
    except launcher_exceptions():  # never the video's failure (utils.errors)
        raise
    except Exception as e:  # noqa: BLE001 - one video must never stop the batch
        # ExtractS3D tags its failures with their stage; another extractor's are "model" ones
        failure = ExtractionError.wrap("model", e)
        if failure.unexpected or (failure is not e and not isinstance(e, EXPECTED_CAUSES)):
            log.error("unexpected error on %s (please report it with this traceback)", path,
                      exc_info=True)
        else:
            log.debug("traceback for %s", path, exc_info=True)
        report.add_failed(path, failure.stage, failure.message)
        return
    spans = arrays["timestamps_ms"].tolist()
    with writes_finish_first():
        if cfg.show_pred:
            print_predictions(path, arrays.pop("logits"), spans, extractor.labels,
                              label_set=network(cfg.feature_type).labels.name)
        files = store.outputs(name) if store else {}
        try:
            if store:
                store.write(name, arrays, path)
            else:
                print_features(path, arrays, network(cfg.feature_type).keys)
        except launcher_exceptions():  # the launcher ends the task (utils.errors): never
            raise                      # the video's failure
        except Exception as e:  # noqa: BLE001 - one video's failure, never the run's
            # (KeyboardInterrupt, SystemExit and a launcher's own exceptions still stop it)
            if isinstance(e, OSError):
                log.debug("traceback for %s", path, exc_info=True)
                where = getattr(e, "filename", None) or os.path.dirname(
                    next(iter(files.values()), ""))
                report.add_failed(path, "write", f"{e.strerror or e}: {where}")
            else:
                log.error("unexpected error writing %s (please report it with this "
                          "traceback)", path, exc_info=True)
                report.add_failed(path, "write", f"{type(e).__name__}: {one_line(e)}")
            return
        seconds = spans[-1][1] / 1000.0 if spans else 0.0
        report.add_done(path, files, len(spans), seconds, warnings)
