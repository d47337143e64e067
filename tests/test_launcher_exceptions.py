"""Issue 21, point 2: a launcher's control exception (submitit's ``UncompletedJobError``,
raised from its signal handler when it will not requeue a timed-out task) is never a video's
failure: it stops the shard, as SIGTERM does, and goes on to the launcher."""
import logging

import numpy as np
import pytest
import torch

from batch_helpers import ExtractorDouble, make_cfg, read_jsonl
from utils.run.batch_run import run
from utils.errors import LAUNCHER_EXCEPTIONS, launcher_exceptions
from videos import synth

submitit_utils = pytest.importorskip("submitit.core.utils")


def _arrays():
    return {"s3d": np.ones((1, 1024), np.float32), "timestamps_ms": np.array([[0.0, 520.0]]),
            "fps": np.float64(25)}


class StoppedByLauncher(ExtractorDouble):
    """Extracts the first video; on the second, the launcher's handler raises (as submitit's
    ``checkpoint_and_try_requeue`` does once ``max_num_timeout`` is reached)."""
    device, labels = torch.device("cpu"), []

    def __init__(self, error):
        self.error = error
        self.calls = []

    def extract(self, path, with_logits=False):
        self.calls.append(path)
        if len(self.calls) == 2:
            raise self.error
        return _arrays()


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    d = tmp_path_factory.mktemp("three")
    return [synth(str(d / f"{n}.mp4"), seconds=0.6, size="64x48") for n in "abc"]


@pytest.mark.parametrize("error", [
    submitit_utils.UncompletedJobError("Job not requeued because: timed-out too many times."),
    submitit_utils.FailedJobError("a subclass is one too"),
])
def test_launcher_exception_propagates_and_blames_no_video(three, tmp_path, caplog, error):
    caplog.set_level(logging.INFO)
    extractor = StoppedByLauncher(error)
    with pytest.raises(type(error)) as raised:
        run(make_cfg(three, str(tmp_path / "out")), extractor=extractor)
    assert raised.value is error
    assert extractor.calls == three[:2]  # stopped at once: the third video never started
    s3d = tmp_path / "out" / "s3d"
    records = read_jsonl(str(s3d / "manifest-0-of-1.jsonl"))
    assert [(r["path"], r["status"]) for r in records] == [(three[0], "done")]
    assert read_jsonl(str(s3d / "failed.jsonl")) == []
    assert "FAILED" not in caplog.text
    [summary] = [r.getMessage() for r in caplog.records if "done 1, skipped 0" in r.getMessage()]
    assert summary.startswith(f"stopped by the launcher ({type(error).__name__}: ")
    assert "failed 0" in summary


class Extracts(ExtractorDouble):
    device, labels = torch.device("cpu"), []

    def extract(self, path, with_logits=False):
        return _arrays()


def test_a_launcher_exception_during_a_write_stops_the_run(three, tmp_path, monkeypatch):
    """The handler may fire while the second video's files are written: that stops the
    shard (nothing reported failed), never a write failure the run goes on after."""
    from utils.outputs import file_store
    error = submitit_utils.UncompletedJobError("timed-out too many times")
    writes = []
    real = file_store.write_outputs

    def write(arrays, files):
        writes.append(files)
        if len(writes) == 2:
            raise error
        real(arrays, files)

    monkeypatch.setattr(file_store, "write_outputs", write)
    with pytest.raises(type(error)):
        run(make_cfg(three, str(tmp_path / "out")), extractor=Extracts())
    s3d = tmp_path / "out" / "s3d"
    records = read_jsonl(str(s3d / "manifest-0-of-1.jsonl"))
    assert [(r["path"], r["status"]) for r in records] == [(three[0], "done")]
    assert len(writes) == 2 and read_jsonl(str(s3d / "failed.jsonl")) == []


def test_other_errors_are_still_the_videos_failure(three, tmp_path):
    """The rule is narrow: a RuntimeError that is not the launcher's is the video's."""
    report = run(make_cfg(three, str(tmp_path / "out")),
                 extractor=StoppedByLauncher(RuntimeError("Job not requeued")))
    assert (report.done, dict(report.failed)) == (2, {"model": 1})


def test_launcher_exceptions_are_looked_up_never_imported(monkeypatch):
    """Listed by module and name; a module not imported contributes nothing (and is not
    imported by the lookup)."""
    import sys

    assert ("submitit.core.utils", "UncompletedJobError") in LAUNCHER_EXCEPTIONS
    assert submitit_utils.UncompletedJobError in launcher_exceptions()
    monkeypatch.setattr("utils.errors.LAUNCHER_EXCEPTIONS",
                        (("no_such_launcher.errors", "Stop"),))
    assert launcher_exceptions() == ()
    assert "no_such_launcher" not in sys.modules


@pytest.mark.parametrize("where", ["network", "decoder"])
def test_raised_inside_the_network_or_the_decoder_it_still_blames_no_video(
        three, tmp_path, monkeypatch, random_model, where):
    """On a real SLURM the handler fires while the network (or, decoding inline, the decoder)
    runs, whose catch-alls tag any error with the video's stage: found by the integration
    test (tests/test_slurm_integration.py). Here it is raised there, in a real extractor."""
    from models.s3d import ExtractS3D
    from models.s3d.inference import BatchRunner
    from utils.video import pipeline

    error = submitit_utils.UncompletedJobError("Job not requeued because: timed-out too many times.")
    calls = []

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return original(*args, **kwargs)

    if where == "network":
        original = BatchRunner.forward
        monkeypatch.setattr(BatchRunner, "forward", lambda self, frames: stop(self, frames))
    else:
        original = pipeline.collate
        monkeypatch.setattr(pipeline, "collate", stop)
    extractor = ExtractS3D(model=random_model, device="cpu", stack_size=13, step_size=13,
                           num_workers=0)
    with pytest.raises(type(error)):
        run(make_cfg(three, str(tmp_path / "out")), extractor=extractor)
    s3d = tmp_path / "out" / "s3d"
    assert read_jsonl(str(s3d / "failed.jsonl")) == []
    assert [r["status"] for r in read_jsonl(str(s3d / "manifest-0-of-1.jsonl"))] == ["done"]
