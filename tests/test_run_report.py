"""Issue 4, points 1, 4, 5 and 6: FAILED lines, the summary, exit status, ``failed.jsonl`` and
retrying from it, name collisions and ``output_layout=mirror``, faults before any video."""
import json
import os
import shutil
import traceback

import pytest
import torch
from omegaconf import OmegaConf

from batch_helpers import (ExtractorDouble, KEYS, assert_same_outputs, cli_args, load_set, make_cfg,
                           output_files_under, read_jsonl, run_cli)
from utils.run.batch_run import run
from models import build_extractor
from models.s3d.spec import SPEC as S3D
from utils.run.cli import run_from_hydra
from utils.records.run_report import RunReport
from utils.errors import InputError
from utils.inputs.paths import collect_paths
from utils.outputs.naming import output_names
from videos import synth


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {"good": synth(str(d / "good.mp4"), seconds=0.6, size="64x48"),
            "short": synth(str(d / "short.mp4"), seconds=0.2, size="64x48"),  # 5 frames
            "text": str(d / "text.mp4"), "missing": str(d / "later.mp4"), "dir": str(d)}


@pytest.fixture(scope="module")
def made_text(clips):
    with open(clips["text"], "w") as f:
        f.write("not a video\n")
    return clips






def _error_lines(stderr: str):
    return [ln for ln in stderr.splitlines() if ln.strip()]


# -- exit status, FAILED lines, failed.jsonl, retry: the real command line -----------------

def test_mixed_batch_exit_status_failed_jsonl_and_retry(made_text, random_checkpoint, tmp_path):
    c = made_text
    out = str(tmp_path / "out")
    root = os.path.join(out, "s3d")
    order = [c["good"], c["missing"], c["short"], c["text"]]
    listing = tmp_path / "videos.txt"
    listing.write_text("\n".join(order) + "\n", encoding="utf-8")

    proc = run_cli(cli_args(random_checkpoint, out, file_with_video_paths=str(listing)),
                   cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    failed_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("FAILED ")]
    assert failed_lines[:2] == [
        f"FAILED {c['missing']}: open: no such file",
        f"FAILED {c['short']}: too_short: 5 frames at 25 fps, fewer than stack_size=13"]
    assert failed_lines[2].startswith(f"FAILED {c['text']}: open: not a readable video (")
    assert "Invalid data" in failed_lines[2] and len(failed_lines) == 3
    summary = _error_lines(proc.stderr)[-1]
    assert summary.startswith("done 1, skipped 0 (already present), failed 3 (open 2, too_short 1); ")
    assert f"failures listed in {os.path.join(root, 'failed.jsonl')}" in summary
    records = read_jsonl(os.path.join(root, "failed.jsonl"))
    assert [(r["path"], r["stage"]) for r in records] == [
        (c["missing"], "open"), (c["short"], "too_short"), (c["text"], "open")]
    assert all(set(r) == {"path", "stage", "message", "run"} for r in records)
    assert [r["message"] for r in records] == [ln.split(": ", 2)[2] for ln in failed_lines]
    good_first = load_set(root, "good")

    # retry from failed.jsonl as it is, once the missing video has appeared
    shutil.copy(c["good"], c["missing"])
    proc = run_cli(cli_args(random_checkpoint, out,
                            file_with_video_paths=os.path.join(root, "failed.jsonl")),
                   cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert _error_lines(proc.stderr)[-1].startswith("done 1, skipped 0 (already present), "
                                                    "failed 2 (open 1, too_short 1)")
    assert [r["path"] for r in read_jsonl(os.path.join(root, "failed.jsonl"))] == [
        c["short"], c["text"]]
    manifest = read_jsonl(os.path.join(root, "manifest-0-of-1.jsonl"))
    # the manifest keeps the video the retry did not touch (good), by its latest record
    latest = {r["path"]: r["status"] for r in manifest}
    assert latest == {c["good"]: "done", c["missing"]: "done", c["short"]: "failed",
                      c["text"]: "failed"}
    assert_same_outputs(load_set(root, "later"), good_first)  # the same video, another name

    # nothing fails: exit 0 (everything already present)
    proc = run_cli(cli_args(random_checkpoint, out,
                            video_paths=[c["good"], c["missing"]]), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert _error_lines(proc.stderr)[-1].startswith("done 0, skipped 2 (already present), failed 0;")
    # failed.jsonl still lists the failures this run did not touch (latest record: failed)
    assert [r["path"] for r in read_jsonl(os.path.join(root, "failed.jsonl"))] == [
        c["short"], c["text"]]
    assert_same_outputs(load_set(root, "good"), good_first, tol=0)


def test_debug_shows_the_traceback_of_a_failed_video(clips, random_checkpoint, tmp_path, capsys,
                                                    restore_logging):
    missing = os.path.join(clips["dir"], "nowhere.mp4")
    for debug in (False, True):
        cfg = OmegaConf.structured(make_cfg([missing], str(tmp_path / "out"),
                                            weights_path=random_checkpoint, debug=debug))
        assert run_from_hydra(cfg, build_extractor) == 1
        err = capsys.readouterr().err
        assert f"FAILED {missing}: open: no such file" in err
        assert ("Traceback" in err) is debug


def test_unexpected_error_fails_that_video_only_with_a_traceback(clips, tmp_path, caplog):
    """A bug (not an expected failure) still never stops the batch; its traceback is shown."""

    class Buggy(ExtractorDouble):
        device, labels = torch.device("cpu"), []

        def __init__(self):
            self.calls = 0

        def extract(self, path, with_logits=False):
            self.calls += 1
            if self.calls == 1:
                raise TypeError("unsupported operand")
            import numpy as np
            return {"s3d": np.ones((1, 1024), np.float32), "timestamps_ms": np.array([[0.0, 1.0]]),
                    "fps": np.float64(25)}

    report = run(make_cfg([clips["good"], clips["short"]], str(tmp_path / "out")),
                 extractor=Buggy())
    assert (report.done, dict(report.failed)) == (1, {"model": 1})
    [record] = read_jsonl(str(tmp_path / "out" / "s3d" / "failed.jsonl"))
    assert record["message"] == "TypeError: unsupported operand"
    assert any(r.exc_info and "please report" in r.getMessage() for r in caplog.records)


def test_unexpected_error_in_decoding_code_is_a_decode_failure(clips, extractor, tmp_path,
                                                                monkeypatch, caplog):
    """The real extractor tags a bug in its decoding stage as ``decode``, with its traceback."""
    from utils.video.preprocess import KyleminFrames

    def broken(self, frame):
        raise TypeError("bad frame")

    monkeypatch.setattr(KyleminFrames, "__call__", broken)
    report = run(make_cfg([clips["good"]], str(tmp_path / "out")), extractor=extractor)
    assert (report.done, dict(report.failed)) == (0, {"decode": 1})
    [record] = read_jsonl(str(tmp_path / "out" / "s3d" / "failed.jsonl"))
    assert dict(record, run=None) == {"path": clips["good"], "stage": "decode",
                                      "message": "TypeError: bad frame", "run": None}
    [bug] = [r for r in caplog.records if "please report" in r.getMessage()]
    assert bug.exc_info and "in broken" in "".join(traceback.format_exception(*bug.exc_info))


# -- faults before any video ---------------------------------------------------------------

def test_weights_fault_is_one_line_before_any_video(clips, tmp_path):
    out = tmp_path / "out"
    (out / "s3d").mkdir(parents=True)
    (out / "s3d" / "failed.jsonl").write_text('{"path": "/x.mp4", "stage": "open", "message": "m"}\n')
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    proc = run_cli(cli_args(str(bad), str(out), video_paths=[clips["good"]]),
                   cwd=str(tmp_path))
    assert proc.returncode == 2
    [line] = _error_lines(proc.stderr)
    assert line.startswith("error: ") and str(bad) in line
    # nothing touched: the previous run's report is still there, nothing else written
    assert output_files_under(str(out)) == ["s3d/failed.jsonl"]
    assert "/x.mp4" in (out / "s3d" / "failed.jsonl").read_text()


def test_wrong_checkpoint_and_config_faults_in_process(clips, random_model, tmp_path, capsys,
                                                       restore_logging):
    wrong = tmp_path / "wrong.pt"
    state = {k: v for k, v in random_model.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, wrong)
    out = tmp_path / "out"
    cfg = OmegaConf.structured(make_cfg([clips["good"]], str(out), weights_path=str(wrong)))
    assert run_from_hydra(cfg, build_extractor) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: ") and "missing key" in line
    assert not out.exists()
    # a list file that cannot be read
    cfg = OmegaConf.structured(make_cfg(None, str(out), weights_path=str(wrong),
                                        file_with_video_paths=str(tmp_path / "none.txt")))
    assert run_from_hydra(cfg, build_extractor) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: file_with_video_paths: cannot read")
    assert not out.exists()


def test_config_fault_is_one_line(tmp_path):
    proc = run_cli(["video_paths=[a.mp4]", "stack_size=5"], cwd=str(tmp_path))
    assert proc.returncode == 2
    [line] = _error_lines(proc.stderr)
    assert line.startswith("error: stack_size: 5")
    assert os.listdir(tmp_path) == []


# -- name collisions and output_layout=mirror ----------------------------------------------

def test_name_collision_stops_the_run_before_any_work(clips, random_checkpoint, tmp_path):
    for sub in ("day 1", "day 2"):
        (tmp_path / sub).mkdir()
        shutil.copy(clips["good"], tmp_path / sub / "clip.mp4")
    paths = [str(tmp_path / "day 1" / "clip.mp4"), str(tmp_path / "day 2" / "clip.mp4")]
    proc = run_cli(cli_args(random_checkpoint, str(tmp_path / "out"),
                            video_paths=paths),
                   cwd=str(tmp_path))
    assert proc.returncode == 2
    [line] = _error_lines(proc.stderr)
    assert line == (f"error: output name collision: {paths[0]} and {paths[1]} would both write "
                    "'clip_*'; use output_layout=mirror to keep the inputs' folders")
    assert not (tmp_path / "out").exists()


def test_mirror_layout_keeps_the_folders(clips, extractor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for sub in ("day 1", "day 2"):
        (tmp_path / "videos" / sub).mkdir(parents=True)
        shutil.copy(clips["good"], tmp_path / "videos" / sub / "clip.mp4")
    listed = ["videos/day 1/clip.mp4", str(tmp_path / "videos" / "day 2" / "clip.mp4")]
    report = run(make_cfg(listed, "out", output_layout="mirror", input_root=str(tmp_path)),
                 extractor=extractor)
    assert report.done == 2
    root = str(tmp_path / "out" / "s3d")
    assert output_files_under(root) == sorted(
        [os.path.join("videos", d, f"clip_{k}.npy") for d in ("day 1", "day 2") for k in KEYS]
        + ["failed.jsonl", "manifest-0-of-1.jsonl"])
    a = load_set(os.path.join(root, "videos", "day 1"), "clip")
    assert_same_outputs(load_set(os.path.join(root, "videos", "day 2"), "clip"), a, tol=0)


def test_output_names_flat_and_mirror(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = [str(tmp_path / "a" / "x.mp4"), str(tmp_path / "b" / "x.mkv")]
    assert output_names(inside, S3D.keys, "mirror", str(tmp_path)) == ["a/x", "b/x"]
    assert output_names(["/data/v/x.mp4"], S3D.keys, "mirror") == ["data/v/x"]
    with pytest.raises(InputError, match="output_layout=mirror"):
        output_names(inside, S3D.keys, "flat")
    with pytest.raises(InputError, match="rename one of them"):
        output_names([str(tmp_path / "a" / "x.mp4"), str(tmp_path / "a" / "x.mkv")], S3D.keys, "mirror")


# -- list files and the report itself ------------------------------------------------------

def test_list_file_takes_plain_paths_and_json_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = ["a.mp4", "", "  ", json.dumps({"path": "/v/b.mp4", "stage": "open", "message": "m"}),
             json.dumps({"path": "/v/é \"c\".mp4"}, ensure_ascii=False), "{not json}.mp4",
             "./a.mp4", json.dumps({"path": "/v/new\nline.mp4"})]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert collect_paths(None, str(listing)) == [
        str(tmp_path / "a.mp4"), "/v/b.mp4", '/v/é "c".mp4', str(tmp_path / "{not json}.mp4"),
        "/v/new\nline.mp4"]


def test_failed_jsonl_round_trips_any_path(tmp_path):
    """Even a file name that is not valid UTF-8 (surrogate-escaped by Python) comes back."""
    odd = os.path.join(str(tmp_path), "caf\udce9 'x'.mp4")
    report = RunReport(failed_file=str(tmp_path / "s3d" / "failed.jsonl"))
    report.add_failed(odd, "open", "no such file\nsecond line")
    [record] = read_jsonl(str(tmp_path / "s3d" / "failed.jsonl"))
    assert record == {"path": odd, "stage": "open", "message": "no such file second line"}
    assert collect_paths(None, str(tmp_path / "s3d" / "failed.jsonl")) == [odd]
    assert "failed 1 (open 1)" in report.summary()


def test_shards_write_their_own_failure_lists(clips, extractor, tmp_path):
    missing = [os.path.join(clips["dir"], f"gone{i}.mp4") for i in range(5)]
    for shard in (0, 1):
        report = run(make_cfg(missing, str(tmp_path), shard=shard, num_shards=2),
                     extractor=extractor)
        assert report.num_failed == (3 if shard == 0 else 2)
    root = str(tmp_path / "s3d")
    assert [r["path"] for r in read_jsonl(os.path.join(root, "failed-0-of-2.jsonl"))] == missing[0::2]
    assert [r["path"] for r in read_jsonl(os.path.join(root, "failed-1-of-2.jsonl"))] == missing[1::2]


def test_many_failures_rewrite_failed_jsonl_a_bounded_number_of_times(tmp_path, monkeypatch):
    """A run where most videos fail must not rewrite a growing failed.jsonl for each one
    (quadratic bytes on a million-video list): at most every FAILED_EVERY_S, and at the end."""
    import utils.records.run_report as run_report
    writes = []
    real = run_report.write_bytes

    def counting(path, data):
        writes.append(path)
        real(path, data)

    monkeypatch.setattr(run_report, "write_bytes", counting)
    failed = str(tmp_path / "failed.jsonl")
    report = run_report.RunReport(failed_file=failed, manifest_file=str(tmp_path / "m.jsonl"))
    for i in range(2000):
        report.add_failed(f"/v/{i}.mp4", "decode", "no frames")
    report.flush()
    assert writes.count(failed) <= 4  # at start, the first failure, maybe one timed, the end
    with open(failed, encoding="utf-8") as f:
        assert [json.loads(line)["path"] for line in f] == [f"/v/{i}.mp4" for i in range(2000)]


def test_a_rerun_reads_each_manifest_once_and_only_the_run_records_it_names(tmp_path,
                                                                             monkeypatch):
    """At a run's start: the shard's manifest is read once (for the rerun check and the
    report alike), and of the run records only those the manifests name (a folder rerun
    many times keeps a record per run)."""
    from test_h5_output import _Table, _paths
    import utils.records.jsonl as jsonl_module
    import utils.records.provenance as provenance
    paths = _paths(tmp_path, ["p", "q"])
    out = str(tmp_path / "out")
    for _ in range(3):  # three runs, three records; the outputs are the first run's
        run(make_cfg(paths, out), _Table({"p": 1.0, "q": 2.0}))
    reads, opened = [], []
    real_read, real_open = jsonl_module.read_records, provenance.open_regular
    import utils.records.manifests as manifests_module
    for module in (jsonl_module, manifests_module):  # every way a manifest is read
        monkeypatch.setattr(module, "read_records",
                            lambda path, *a: reads.append(path) or real_read(path, *a))
    monkeypatch.setattr(provenance, "open_regular",
                        lambda path, *a: opened.append(path) or real_open(path, *a))
    report = run(make_cfg(paths, out), _Table({"p": 1.0, "q": 2.0}))
    assert report.skipped == 2
    assert reads.count(os.path.join(out, "s3d", "manifest-0-of-1.jsonl")) == 1
    records = [n for n in os.listdir(os.path.join(out, "s3d", "runs")) if n.endswith(".json")]
    assert len(records) == 4 and len(opened) == 1
