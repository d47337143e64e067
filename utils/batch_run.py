"""A batch run: every input either yields complete outputs or one FAILED line, and the run goes on."""
import logging
import os
from typing import Optional

import av.error

from models.s3d.extractor import ExtractS3D
from utils.config import ExtractionConfig
from utils.failures import ExtractionError
from utils.run_report import RunReport
from utils.sinks import output_files, outputs_complete, print_features, print_predictions, write_outputs
from utils.video_paths import _absolute, collect_paths, output_names, shard_paths

log = logging.getLogger(__name__)


def run(cfg: ExtractionConfig, extractor: Optional[ExtractS3D] = None) -> RunReport:
    """Extract every video of this shard; return the report (``report.num_failed`` > 0: exit 1)."""
    paths = collect_paths(cfg.video_paths, cfg.file_with_video_paths)
    names = output_names(paths, str(cfg.output_layout.value))  # on the whole list: shards agree
    mine = shard_paths(list(zip(paths, names)), cfg.shard, cfg.num_shards)
    sink = cfg.on_extraction.value
    root = os.path.join(_absolute(cfg.output_path), "s3d")
    saving = sink != "print"
    suffix = "" if cfg.num_shards == 1 else f"-{cfg.shard}-of-{cfg.num_shards}"
    report = RunReport(
        failed_file=os.path.join(root, f"failed{suffix}.jsonl") if saving else None,
        manifest_file=(os.path.join(root, f"manifest-{cfg.shard}-of-{cfg.num_shards}.jsonl")
                       if saving else None))
    if extractor is None:
        extractor = ExtractS3D.from_config(cfg)
    log.info("%d videos in this shard (%d in all), %s on %s", len(mine), len(paths),
             "features to " + root if saving else "printing features", extractor.device)
    for path, name in mine:
        files = output_files(root, name, sink)
        if saving and not cfg.overwrite and outputs_complete(files):
            report.add_skipped(path, files)
            continue
        try:
            arrays = extractor.extract(path, with_logits=cfg.show_pred)
        except ExtractionError as e:
            report.add_failed(path, e.stage, e.message)
            continue
        except av.error.FFmpegError as e:
            report.add_failed(path, "decode", str(e))
            continue
        except (RuntimeError, ValueError, OSError) as e:
            log.debug("traceback for %s", path, exc_info=True)
            report.add_failed(path, "model", f"{type(e).__name__}: {e}")
            continue
        spans = arrays["timestamps_ms"].tolist()
        if cfg.show_pred:
            print_predictions(path, arrays.pop("logits"), spans, extractor.labels)
        try:
            if saving:
                write_outputs(arrays, files)
            else:
                print_features(path, arrays)
        except OSError as e:
            report.add_failed(path, "write", f"{e.strerror or e}: {getattr(e, 'filename', '') or root}")
            continue
        seconds = spans[-1][1] / 1000.0 if spans else 0.0
        report.add_done(path, files, len(spans), seconds)
    log.info(report.summary())
    return report
