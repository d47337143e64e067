"""Issue 11: every output knows what made it; safe reruns; manifests that survive retries;
SIGTERM; progress lines in logs; output places independent of the working directory; no code
runs from an output folder."""
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from batch_helpers import (KEYS, MAIN, assert_same_outputs, cli_args, load_set, read_jsonl,
                           run_cli)
from models.s3d.spec import SPEC as S3D
from utils.console import ProgressLog
from utils.errors import InputError
from utils.outputs.naming import output_files, output_names
from utils.records.provenance import FEATURE_OPTIONS, differences, folder_runs
from utils.records.run_report import RunReport
from utils.outputs.safe_pickle import UnsafePickleError
from utils.outputs.serialization import safe_pickle_load, write_outputs
from videos import synth


def safe_pickle_loads(data: bytes) -> object:
    """The output reader's unpickling of ``data`` (``serialization.safe_pickle_load``)."""
    return safe_pickle_load(io.BytesIO(data))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {n: synth(str(folder / f"{n}.mp4"), seconds=1.2, size="96x64") for n in "abc"}


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _merge(out, listing=None):
    args = [sys.executable, "-m", "utils.records.manifests", str(out)]
    if listing:
        args += ["--file_with_video_paths", str(listing)]
    repo = os.path.dirname(MAIN)
    return subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=120)


def _error_lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_provenance_safe_reruns_retries_and_progress(clips, random_checkpoint, tmp_path):
    """One folder through a user's month: a run with a failure, a retry from failed.jsonl, a
    rerun with another stack_size (refused), then overwrite=true over part of the folder."""
    work = tmp_path / "work"
    work.mkdir()
    missing = str(work / "c.mp4")  # listed, not there yet
    listing = work / "videos.txt"
    listing.write_text(f"{clips['a']}\n{clips['b']}\n{missing}\n", encoding="utf-8")
    out = work / "out"
    root = out / "s3d"
    base = cli_args(random_checkpoint, str(out), file_with_video_paths=str(listing))

    # 1. the first run: c fails; the run's record says what made the features
    proc = run_cli(base + ["progress_every_s=0.001"], cwd=str(work))
    assert proc.returncode == 1, proc.stderr
    [first] = folder_runs(str(root)).values()
    features = first["features"]
    assert {k: features[k] for k in FEATURE_OPTIONS} == {
        "feature_type": "s3d", "stack_size": 13, "step_size": 13, "extraction_fps": 25.0,
        "preprocess": "kylemin", "precision": "fp32", "output_layout": "flat", "input_root": None}
    assert features["weights"] == {"source": random_checkpoint,
                                   "sha256": _sha256(random_checkpoint)}
    import av
    import torch
    assert first["versions"]["torch"] == torch.__version__
    assert first["versions"]["av"] == av.__version__
    assert first["versions"]["ffmpeg"]["libavcodec"] == ".".join(
        map(str, av.library_versions["libavcodec"]))
    assert first["device"] == "cpu" and first["options"]["batch_size"] is None
    records = read_jsonl(root / "manifest-0-of-1.jsonl")
    assert [(r["status"], r["run"]) for r in records] == [
        ("done", first["run"]), ("done", first["run"]), ("failed", first["run"])]
    # off a terminal, plain progress lines (stderr is a pipe here)
    progress = [ln for ln in proc.stderr.splitlines() if ln.startswith("progress: ")]
    assert progress[0].startswith("progress: 1/3 videos (done 1, skipped 0, failed 0)")
    assert progress[-1].startswith("progress: 3/3 videos (done 2, skipped 0, failed 1)")
    assert all("stacks/s" in ln and "ETA" in ln for ln in progress)

    # 2. retry the failure from failed.jsonl (other speed options never block)
    shutil.copy(clips["c"], missing)
    proc = run_cli(cli_args(random_checkpoint, str(out), batch_size=2, num_workers=0,
                            progress_every_s=0, file_with_video_paths=str(root / "failed.jsonl")),
                   cwd=str(work))
    assert proc.returncode == 0, proc.stderr
    assert "progress: " not in proc.stderr  # progress_every_s=0 turns the lines off
    runs = folder_runs(str(root))
    [second] = [r for r in runs.values() if r["run"] != first["run"]]
    latest = {r["path"]: r for r in read_jsonl(root / "manifest-0-of-1.jsonl")}
    assert {p: (r["status"], r["run"]) for p, r in latest.items()} == {
        clips["a"]: ("done", first["run"]), clips["b"]: ("done", first["run"]),
        missing: ("done", second["run"])}
    assert read_jsonl(root / "failed.jsonl") == []
    merged = _merge(out, listing)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "inputs: 3 listed, 3 reported, 0 not reported yet" in merged.stdout

    # 3. the same list with another stack_size: refused before any video, naming the option
    before = sorted(os.listdir(root)), sorted(os.listdir(root / "runs"))
    proc = run_cli(base[:-2] + [a for a in base[-2:]] + ["stack_size=14", "step_size=14"],
                   cwd=str(work))
    assert proc.returncode == 2, proc.stderr
    [line] = _error_lines(proc.stderr)
    assert "stack_size 13 there vs 14 now" in line and "step_size 13 there vs 14 now" in line
    assert "another output_path" in line and "overwrite=true" in line
    assert (sorted(os.listdir(root)), sorted(os.listdir(root / "runs"))) == before

    # 4. overwrite=true with the new options over part of the folder: each record still names
    # the run that made it, and the merger reports the folder as mixed
    proc = run_cli(cli_args(random_checkpoint, str(out), stack_size=14, overwrite="true",
                            video_paths=[clips["a"]]), cwd=str(work))
    assert proc.returncode == 0, proc.stderr
    [third] = [r for r in folder_runs(str(root)).values()
               if r["run"] not in (first["run"], second["run"])]
    latest = {r["path"]: r for r in read_jsonl(root / "manifest-0-of-1.jsonl")}
    assert latest[clips["a"]]["run"] == third["run"]
    assert latest[clips["b"]]["run"] == first["run"]
    assert load_set(str(root), "a")["s3d"].shape[0] == 2  # 30 frames -> (30 - 14) // 14 + 1
    merged = _merge(out)
    assert merged.returncode == 1
    assert "mixed: the videos were made with 2 different option sets" in merged.stdout


def test_rerun_with_the_same_options_resumes(clips, random_checkpoint, tmp_path):
    out = tmp_path / "out"
    args = cli_args(random_checkpoint, str(out), video_paths=[clips["a"]])
    assert run_cli(args, cwd=str(tmp_path)).returncode == 0
    proc = run_cli(args + ["device=cpu"], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "done 0, skipped 1" in proc.stderr
    done, skipped = read_jsonl(out / "s3d" / "manifest-0-of-1.jsonl")
    assert (done["status"], skipped["status"]) == ("done", "skipped")
    assert skipped["run"] == done["run"]  # the run that made the outputs
    assert len(folder_runs(str(out / "s3d"))) == 2


def test_folder_made_before_records_warns_and_goes_on(clips, random_checkpoint, tmp_path):
    out = tmp_path / "out"
    root = out / "s3d"
    args = cli_args(random_checkpoint, str(out), video_paths=[clips["a"], clips["b"]])
    assert run_cli(args, cwd=str(tmp_path)).returncode == 0
    shutil.rmtree(root / "runs")  # as an older version left it
    for line in read_jsonl(root / "manifest-0-of-1.jsonl"):
        assert line["status"] == "done"
    proc = run_cli(args + ["stack_size=14"], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "no record of the options" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: ")


class _Evil:
    """Unpickling it would create a file: the attack on a shared output folder."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_crafted_pickle_runs_no_code_and_the_video_is_redone(clips, random_checkpoint,
                                                               tmp_path):
    out = tmp_path / "out"
    root = out / "s3d"
    files = output_files(str(root), "a", "save_pickle", S3D.keys)
    write_outputs({"s3d": np.zeros((2, 1024), np.float32),
                   "timestamps_ms": np.array([[0, 520], [520, 1040]], np.float64),
                   "fps": np.float64(25)}, files)
    pwned = tmp_path / "pwned"
    with open(files["fps"], "wb") as f:
        pickle.dump(_Evil(str(pwned)), f)
    with pytest.raises(UnsafePickleError):  # the reader itself refuses it
        safe_pickle_loads(open(files["fps"], "rb").read())
    proc = run_cli(cli_args(random_checkpoint, str(out), on_extraction="save_pickle",
                            video_paths=[clips["a"]]), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert not pwned.exists()
    assert "refused to load io.open" in proc.stderr and "extracted again" in proc.stderr
    [record] = read_jsonl(root / "manifest-0-of-1.jsonl")
    assert record["status"] == "done"
    with open(files["fps"], "rb") as f:
        assert safe_pickle_loads(f.read()) == 25.0
    features = safe_pickle_loads(open(files["s3d"], "rb").read())
    assert features.shape == (2, 1024) and np.abs(features).sum() > 0  # not the zeros planted


def test_safe_unpickler_reads_what_we_and_numpy_write():
    for value in (np.zeros((2, 3), np.float32), np.float64(25), np.arange(6.0).reshape(3, 2), 3.5):
        for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
            np.testing.assert_array_equal(safe_pickle_loads(pickle.dumps(value, protocol)), value)
    for bad in ([1, 2], {"a": 1}, np.array(["x", None], dtype=object), "text"):
        with pytest.raises(UnsafePickleError):
            safe_pickle_loads(pickle.dumps(bad))


def test_sigterm_stops_after_the_write_and_the_rerun_completes(random_checkpoint, tmp_path):
    """SIGTERM (SLURM's preemption): exit 143, a 'terminated;' summary, complete files only;
    the rerun equals an uninterrupted run.  A second SIGTERM exits at once."""
    names = [f"v{i}" for i in range(5)]
    videos = [synth(str(tmp_path / f"{n}.mp4"), seconds=1.2, size="64x48") for n in names]
    out = tmp_path / "out"
    root = out / "s3d"
    args = [sys.executable, MAIN] + cli_args(random_checkpoint, str(out), video_paths=videos)
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def done_records():
        path = root / "manifest-0-of-1.jsonl"
        return [r for r in read_jsonl(path) if r["status"] == "done"] if path.exists() else []

    proc = subprocess.Popen(args, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: done_records(), proc), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert any(ln.startswith("terminated; done ") for ln in err.splitlines()), err
    finished = [os.path.splitext(os.path.basename(r["path"]))[0] for r in done_records()]
    assert 1 <= len(finished) < len(names)
    assert sorted(n for n in os.listdir(root) if n.endswith(".npy")) == sorted(
        f"{n}_{k}.npy" for n in finished for k in KEYS)  # whole sets, no temporary left

    # a second SIGTERM while the first is being honoured: out at once, still no partial file
    proc = subprocess.Popen(args, cwd=str(tmp_path), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: "in this shard" in _peek(proc), proc, poll_stderr=True)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    for n in os.listdir(root):
        if n.endswith(".npy"):
            np.load(root / n, allow_pickle=False)

    proc = subprocess.run(args, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    reference = tmp_path / "reference"
    proc = subprocess.run([sys.executable, MAIN] + cli_args(random_checkpoint, str(reference),
                                                            video_paths=videos),
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for n in names:
        assert_same_outputs(load_set(str(root), n), load_set(str(reference / "s3d"), n), tol=0)


_stderr_seen = {}


def _peek(proc) -> str:
    """What the process has written to stderr so far (read line by line, without blocking
    past a line)."""
    return _stderr_seen.get(proc.pid, "")


def _wait_for(predicate, proc, timeout=240, poll_stderr=False) -> bool:
    """Wait for a file state (or, with ``poll_stderr``, a line of the process's stderr)."""
    import time

    end = time.time() + timeout
    while time.time() < end:
        if poll_stderr:
            line = proc.stderr.readline()
            _stderr_seen[proc.pid] = _stderr_seen.get(proc.pid, "") + line
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        if not poll_stderr:
            time.sleep(0.02)
    return False


# -- units --------------------------------------------------------------------------------
def test_progress_lines_count_and_estimate():
    now = [0.0]
    report = RunReport()
    progress = ProgressLog(4, every_s=60, enabled=True, clock=lambda: now[0])
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("utils.console")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        report.done, report.stacks = 1, 10
        now[0] = 30.0
        progress.update(report)  # too early: nothing
        now[0] = 61.0
        progress.update(report)
        report.done, report.skipped, report.stacks = 2, 1, 20
        now[0] = 70.0
        progress.update(report)  # 9 s after the last line: nothing
        progress.update(report, final=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert lines == [
        "progress: 1/4 videos (done 1, skipped 0, failed 0), 10 stacks, 0.16 stacks/s, "
        "0:01:01 elapsed, ETA 0:03:03",
        "progress: 3/4 videos (done 2, skipped 1, failed 0), 20 stacks, 0.29 stacks/s, "
        "0:01:10 elapsed, ETA 0:00:35"]


def test_manifest_keeps_other_videos_and_skipped_keeps_warnings(tmp_path):
    manifest, failed = tmp_path / "manifest-0-of-1.jsonl", tmp_path / "failed.jsonl"
    first = RunReport(str(failed), str(manifest), run_id="r1")
    first.add_done("/v/a.mp4", {}, 3, 1.5, warnings=["/v/a.mp4: the video stops at 1 s"])
    first.add_done("/v/b.mp4", {}, 2, 1.0)
    first.add_failed("/v/c.mp4", "open", "no such file")
    assert [r["path"] for r in read_jsonl(failed)] == ["/v/c.mp4"]
    # a retry of c, and a, which is now skipped
    second = RunReport(str(failed), str(manifest), run_id="r2")
    second.add_skipped("/v/a.mp4", {}, 3, 1.5)
    second.add_done("/v/c.mp4", {}, 1, 0.6)
    latest = {r["path"]: r for r in read_jsonl(manifest)}
    assert latest["/v/a.mp4"]["status"] == "skipped"
    assert latest["/v/a.mp4"]["run"] == "r1"  # the run that made its outputs
    assert latest["/v/a.mp4"]["warnings"] == ["/v/a.mp4: the video stops at 1 s"]
    assert latest["/v/b.mp4"] == {"path": "/v/b.mp4", "status": "done", "outputs": {},
                                  "Tv": 2, "seconds": 1.0, "run": "r1"}
    assert latest["/v/c.mp4"]["run"] == "r2"
    assert read_jsonl(failed) == []
    assert len(read_jsonl(manifest)) == 5  # compacted to one line a video at start, then appended


def test_feature_differences_name_each_option():
    old = {"stack_size": 64, "preprocess": "kylemin", "weights": {"source": "x", "sha256": "ab"}}
    new = dict(old, stack_size=32, weights={"source": "y", "sha256": "cd"})
    assert differences(old, new) == [("stack_size", 64, 32),
                                      ("weights", "x (sha256 ab)", "y (sha256 cd)")]
    assert differences(old, dict(old)) == []


def test_the_rerun_check_compares_the_options_marked_as_changing_features():
    """The compared options come from the marks on the option fields (utils/config.py), not a
    list kept by hand: today's marks, and a new marked option entering the check by itself."""
    from dataclasses import dataclass

    from utils.config import ExtractionConfig, feature_options, option
    from utils.records.provenance import run_record

    assert FEATURE_OPTIONS == feature_options() == (
        "feature_type", "stack_size", "step_size", "extraction_fps", "preprocess", "precision",
        "output_layout", "input_root")

    @dataclass
    class WithSharpening(ExtractionConfig):
        sharpen: float = option(0.0, "a made-up option that changes the features", feature=True)
        chatty: bool = option(False, "a made-up option that does not", feature=False)

    def features(**kw):
        cfg = WithSharpening(video_paths="a.mp4", device="cpu", **kw)
        return run_record(cfg, "r", {"weights": {"source": "w", "sha256": "ab"}}).features

    assert differences(features(sharpen=0.5), features(sharpen=0.5, chatty=True)) == []
    assert differences(features(sharpen=0.0), features(sharpen=0.5)) == [("sharpen", 0.0, 0.5)]


def test_input_root_is_compared_as_the_folder_it_names(tmp_path, monkeypatch):
    """/x/v, /x/v/ and a relative v run from /x are one folder: never a change of options
    (issue 19); another folder still is. Old records keep the string they hold."""
    from utils.config import ExtractionConfig
    from utils.records.provenance import run_record

    monkeypatch.chdir(tmp_path)

    def features(root):
        cfg = ExtractionConfig(video_paths="a.mp4", device="cpu", output_layout="mirror",
                               input_root=root)
        return run_record(cfg, "r", {"weights": {"source": "w", "sha256": "ab"}}).features

    same = [features(str(tmp_path / "v")), features(str(tmp_path / "v") + "/"), features("v"),
            dict(features("v"), input_root=str(tmp_path / "v") + "//")]  # an old record's string
    assert all(differences(a, b) == [] for a in same for b in same)
    assert [d[0] for d in differences(same[0], features("w"))] == ["input_root"]


def test_mirror_names_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    videos = ["/data/day1/clip.mp4", "/data/day2/clip.mp4", "/other/x.mkv"]
    names = []
    for cwd in (tmp_path, tmp_path.parent):
        monkeypatch.chdir(cwd)
        names.append(output_names(videos, S3D.keys, "mirror"))
        names.append(output_names(videos[1:], S3D.keys, "mirror"))  # another list: same places
    assert names[0] == ["data/day1/clip", "data/day2/clip", "other/x"] == names[2]
    assert names[1] == names[3] == names[0][1:]
    assert output_names(videos[:2], S3D.keys, "mirror", input_root="/data") == ["day1/clip", "day2/clip"]
    with pytest.raises(InputError, match="input_root: /other/x.mkv is not under /data"):
        output_names(videos, S3D.keys, "mirror", input_root="/data")


def test_run_records_are_json_readable_without_our_code(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "20260101T000000Z-abcdef.json").write_text(json.dumps(
        {"format": 1, "run": "20260101T000000Z-abcdef", "features": {}}))
    (folder / "broken.json").write_text("{not json")
    assert list(folder_runs(str(tmp_path))) == ["20260101T000000Z-abcdef"]


def test_a_newline_in_a_path_cannot_forge_a_failed_line(caplog):
    report = RunReport()
    with caplog.at_level(logging.ERROR):
        report.add_failed("/v/x.mp4\nFAILED /v/y.mp4: open: forged", "open", "no such file")
    [line] = [r.getMessage() for r in caplog.records]
    assert line == "FAILED /v/x.mp4\\nFAILED /v/y.mp4: open: forged: open: no such file"
    assert len(line.splitlines()) == 1


@pytest.fixture(scope="module")
def one_run(clips, random_checkpoint, tmp_path_factory):
    """An output folder a run made from video a (its manifest, run record and outputs)."""
    work = tmp_path_factory.mktemp("one_run")
    proc = run_cli(cli_args(random_checkpoint, str(work / "out"), video_paths=[clips["a"]]),
                   cwd=str(work))
    assert proc.returncode == 0, proc.stderr
    return work / "out"


OLD_RUN = "20260101T000000Z-abcdef"


@pytest.mark.parametrize("damage", ["path_is_a_list", "tv_is_a_string", "run_without_features"])
def test_a_record_of_the_wrong_shape_is_skipped_with_one_warning(one_run, clips,
                                                                 random_checkpoint, tmp_path,
                                                                 damage):
    """Records are read from a folder anyone can edit: a manifest line whose ``path`` is a
    list or whose ``Tv`` is a string, a run record without ``features``, each cost one
    warning naming its file (and line), never a traceback, in the manifests' summary and in
    a rerun (which goes on: the video already done is skipped)."""
    out = tmp_path / "out"
    shutil.copytree(one_run, out)
    root = out / "s3d"
    manifest = root / "manifest-0-of-1.jsonl"
    if damage == "run_without_features":
        (root / "runs" / f"{OLD_RUN}.json").write_text(json.dumps({"format": 1, "run": OLD_RUN}))
        bad = {"path": "/v/old.mp4", "status": "done", "outputs": {}, "Tv": 2, "seconds": 1.0,
               "run": OLD_RUN}  # a valid line naming that run
        where, why = f"{root / 'runs' / OLD_RUN}.json", "not a run record (no features), ignored"
    else:
        bad = {"path": ["/v/x.mp4"], "status": "done"} if damage == "path_is_a_list" else \
            {"path": "/v/t.mp4", "status": "done", "outputs": {}, "Tv": "3", "seconds": 1.0}
        where = f"{manifest}:2"
        why = ("not a manifest record (path is a list, expected a string), skipped"
               if damage == "path_is_a_list" else
               "not a manifest record (Tv is '3', expected an integer >= 0), skipped")
    with open(manifest, "a", encoding="utf-8") as f:
        f.write(json.dumps(bad) + "\n")

    summary = subprocess.run([sys.executable, "-m", "utils.manifests", str(out)],
                             cwd=os.path.dirname(MAIN), capture_output=True, text=True,
                             timeout=120)
    assert "Traceback" not in summary.stderr, summary.stderr
    assert summary.stderr.splitlines() == [f"WARNING: {where}: {why}"]
    assert summary.returncode == 0, summary.stdout
    videos = 2 if damage == "run_without_features" else 1  # a's and, valid, old.mp4's
    assert f"videos: {videos} reported: done {videos}" in summary.stdout
    assert f"features: {2 * videos} stacks (Tv)" in summary.stdout  # a string Tv not counted

    proc = run_cli(cli_args(random_checkpoint, str(out), video_paths=[clips["a"]]),
                   cwd=str(tmp_path))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if where in ln] == [f"WARNING: {where}: {why}"]
    assert "done 0, skipped 1" in proc.stderr
