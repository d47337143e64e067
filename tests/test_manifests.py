"""``python -m utils.records.manifests``: the per-shard manifests merged into one summary."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from models.s3d.spec import SPEC as S3D
from utils.outputs.features import OutputError, load
from utils.records.manifests import NoFeatureFolder, feature_folder, main, merge_manifests
from utils.outputs.naming import output_files
from utils.outputs.serialization import write_outputs


def make_outputs(folder, stem, tv, fps=25.0, step_ms=2560.0):
    """Write a video's outputs as the extractor would; return their paths."""
    files = output_files(str(folder), stem, "save_numpy", S3D.keys)
    starts = np.arange(tv) * step_ms
    write_outputs({"s3d": np.zeros((tv, 1024), np.float32),
                   "timestamps_ms": np.stack([starts, starts + step_ms], 1),
                   "fps": np.float64(fps)}, files)
    return files


def write_manifest(folder, shard, num_shards, records, age=0.0):
    path = os.path.join(folder, f"manifest-{shard}-of-{num_shards}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def done(path, files, tv, seconds):
    return {"path": path, "status": "done", "outputs": files, "Tv": tv, "seconds": seconds}


def test_merge_counts_once_per_video_and_lists_failures(tmp_path, capsys, caplog):
    s3d = tmp_path / "out" / "s3d"
    s3d.mkdir(parents=True)
    a = make_outputs(str(s3d), "a", 3)
    b = make_outputs(str(s3d), "b", 2)
    c = make_outputs(str(s3d), "c", 4)
    # shard 0 ran, was killed and restarted: its new manifest says "skipped" for a
    write_manifest(s3d, 0, 2, [
        {"path": "/v/a.mp4", "status": "skipped", "outputs": a, "Tv": 3, "seconds": 7.68},
        done("/v/c.mp4", c, 4, 10.24),
        {"path": "/v/e.mp4", "status": "failed", "stage": "too_short", "message": "9 frames"},
    ])
    write_manifest(s3d, 1, 2, [
        done("/v/b.mp4", b, 2, 5.12),
        {"path": "/v/d.mp4", "status": "failed", "stage": "decode", "message": "bad packet"},
        '{"path": "/v/f.mp4", "stat',  # a line cut short by a kill
    ])
    summary = merge_manifests(str(tmp_path / "out"))
    assert (summary.done, summary.skipped, summary.failed) == (2, 1, 2)
    assert summary.stacks == 9
    assert abs(summary.seconds - (3 * 2.56 + 10.24 + 5.12)) < 1e-6
    assert summary.missing_shards == [] and not summary.complete

    assert main([str(tmp_path / "out")]) == 1
    out = capsys.readouterr()
    assert "2 of 2 shard manifests (num_shards=2)" in out.out
    assert "done 2, skipped 1 (outputs already present), failed 2" in out.out
    assert "9 stacks (Tv) from 23.0 s of video" in out.out
    assert "FAILED /v/e.mp4: too_short: 9 frames" in out.out
    assert "FAILED /v/d.mp4: decode: bad packet" in out.out
    assert "manifest-1-of-2.jsonl:3: not a JSON line, skipped" in caplog.text


def test_merge_reports_missing_shards_and_unreported_inputs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s3d = tmp_path / "out" / "s3d"
    s3d.mkdir(parents=True)
    videos = [str(tmp_path / f"v{i}.mp4") for i in range(7)]
    (tmp_path / "list.txt").write_text("\n".join(f"v{i}.mp4" for i in range(7)) + "\n\n")
    # num_shards=4: shard 0 takes v0, v4; shard 2 takes v2, v6; shards 1 and 3 never started
    for shard in (0, 2):
        records = []
        for path in videos[shard::4]:
            files = make_outputs(str(s3d), os.path.basename(path)[:-4], 1)
            records.append(done(path, files, 1, 2.56))
        write_manifest(s3d, shard, 4, records)
    # an older run with 2 shards reported v1 as failed: the newer run's records win
    write_manifest(s3d, 0, 2, [{"path": videos[1], "status": "failed", "stage": "decode",
                                "message": "old"}], age=3600)
    summary = merge_manifests(str(tmp_path / "out"), "list.txt")
    assert summary.num_shards == 4 and summary.missing_shards == [1, 3]
    assert summary.other_num_shards == [2]
    assert summary.unreported == [videos[3], videos[5]]  # v1 was reported (failed) by the old run
    assert summary.unreported_shards == [1, 3]

    assert main(["out", "--file_with_video_paths", "list.txt"]) == 1
    text = capsys.readouterr().out
    assert "2 of 4 shard manifests (num_shards=4); none yet from shard(s) 1, 3" in text
    assert "earlier runs with num_shards=2" in text
    assert "7 listed, 5 reported, 2 not reported yet" in text
    assert "-m shard=1,3 num_shards=4" in text

    assert main(["out", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["missing_shards"] == [1, 3] and data["done"] == 4 and data["failed"] == 1


def test_complete_run_exits_zero_and_no_manifest_exits_two(tmp_path, capsys):
    s3d = tmp_path / "s3d"
    s3d.mkdir()
    files = make_outputs(str(s3d), "a", 1)
    write_manifest(s3d, 0, 1, [done("/v/a.mp4", files, 1, 2.56)])
    assert main([str(tmp_path)]) == 0
    assert main([str(s3d)]) == 0  # the s3d folder itself works too
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no manifest-<shard>-of-<num_shards>.jsonl" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    s3d = tmp_path / "s3d"
    s3d.mkdir()
    write_manifest(s3d, 0, 1, [])
    proc = subprocess.run([sys.executable, "-m", "utils.records.manifests", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "videos: 0 reported" in proc.stdout
    # a plain module: no torch, no Hydra launcher
    proc = subprocess.run([sys.executable, "-c", "import sys, utils.records.manifests; "
                           "print(sorted(m for m in ('torch', 'joblib', 'submitit') if m in sys.modules))"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_the_feature_folder_is_found_by_what_it_holds_and_never_guessed(tmp_path, capsys):
    """One rule for the manifests' summary, the loader and search: a folder holding manifests,
    ``runs/`` or outputs is a feature folder; an output_path holding one is read through it,
    whatever its name; holding two is an error naming both (no network taken first)."""
    from models.s3d_howto100m import search as search_module

    out = tmp_path / "out"
    toy = out / "toy"  # a network utils/ has never heard of
    toy.mkdir(parents=True)
    files = make_outputs(str(toy), "a", 1)
    write_manifest(toy, 0, 1, [done("/v/a.mp4", files, 1, 2.56)])
    (out / "multirun").mkdir()  # a folder holding none of those is not one
    assert feature_folder(str(out)) == str(toy) == feature_folder(str(toy))
    assert main([str(out)]) == 0
    assert "videos: 1 reported: done 1" in capsys.readouterr().out

    for name in ("s3d", "s3d_howto100m"):
        (out / name).mkdir()
        write_manifest(out / name, 0, 1, [])
    shutil.rmtree(toy)
    both = (f"{out} holds the outputs of 2 networks (s3d, s3d_howto100m); choose one of "
            f"{out / 's3d'}, {out / 's3d_howto100m'}")
    assert main([str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {both}"
    with pytest.raises(OutputError) as info:
        load(str(out))
    assert str(info.value) == both
    assert search_module.main([str(out), "cut tomato"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {both}"
    assert feature_folder(str(out / "s3d")) == str(out / "s3d")
    with pytest.raises(NoFeatureFolder, match="no manifest-<shard>-of-<num_shards>.jsonl"):
        feature_folder(str(out / "multirun"))


def write_run(folder, run_id, launch):
    runs = os.path.join(folder, "runs")
    os.makedirs(runs, exist_ok=True)
    with open(os.path.join(runs, f"{run_id}.json"), "w", encoding="utf-8") as f:
        json.dump({"run": run_id, "features": {"stack_size": 13}, "launch": launch}, f)


def test_a_video_made_by_an_earlier_attempt_of_the_same_launch_counts_done(tmp_path):
    """Issue 21, point 5: after requeues, the videos an earlier attempt of the same SLURM task
    made are "skipped" in the shard's rewritten manifest, but done by that launch."""
    s3d = tmp_path / "out" / "s3d"
    s3d.mkdir(parents=True)
    files = {n: make_outputs(str(s3d), n, 2) for n in "abcde"}
    write_run(str(s3d), "20260101T000000Z-aaaaaa", "slurm:41_0")  # first attempt of task 41_0
    write_run(str(s3d), "20260101T010000Z-bbbbbb", "slurm:41_0")  # its requeued attempt
    write_run(str(s3d), "20251201T000000Z-cccccc", "slurm:7_0")   # a command run a month ago
    first, second, older = "20260101T000000Z-aaaaaa", "20260101T010000Z-bbbbbb", \
        "20251201T000000Z-cccccc"

    def rec(name, status, run, launch=None):
        r = {"path": f"/v/{name}.mp4", "status": status, "outputs": files[name], "Tv": 2,
             "seconds": 5.12, "run": run}
        if launch is not None:
            r["launch"] = launch
        return r

    write_manifest(s3d, 0, 1, [
        rec("a", "skipped", first, "slurm:41_0"),   # made by attempt 1, skipped by attempt 2
        rec("b", "skipped", first, "slurm:41_0"),
        rec("c", "done", second, "slurm:41_0"),     # made by attempt 2
        rec("d", "skipped", older, "slurm:41_0"),   # made by an earlier launch: skipped
        rec("e", "skipped", first),                 # no launch recorded (outside SLURM)
    ])
    summary = merge_manifests(str(tmp_path / "out"))
    assert (summary.done, summary.skipped, summary.failed) == (3, 2, 0)
    assert summary.stacks == 10 and summary.complete


def test_requeued_attempts_count_done_and_a_later_command_skipped(tmp_path, monkeypatch):
    """The same through the batch run: two attempts of one SLURM array task (the second skips
    everything), then the command again as a new array job."""
    import numpy as np
    import torch

    from batch_helpers import ExtractorDouble, make_cfg
    from utils.run.batch_run import run

    class Ones(ExtractorDouble):
        device, labels = torch.device("cpu"), []

        def extract(self, path, with_logits=False):
            return {"s3d": np.ones((1, 1024), np.float32),
                    "timestamps_ms": np.array([[0.0, 520.0]]), "fps": np.float64(25)}

    videos = [str(tmp_path / f"{n}.mp4") for n in "abcd"]
    for v in videos:
        open(v, "wb").close()
    out = str(tmp_path / "out")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    run(make_cfg(videos[:2], out), Ones())   # attempt 1: 2 videos before its time limit
    report = run(make_cfg(videos, out), Ones())  # attempt 2 (requeued): skips them
    assert (report.done, report.skipped) == (2, 2)
    summary = merge_manifests(out)
    assert (summary.done, summary.skipped) == (4, 0)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "42")  # the same command, submitted again
    run(make_cfg(videos, out), Ones())
    summary = merge_manifests(out)
    assert (summary.done, summary.skipped) == (0, 4)


def test_the_input_check_leaves_out_what_the_run_left_out(tmp_path):
    """A folder input that covers output_path and the run's tmp_path: the run took neither
    (collect_paths' exclude); the summary's input check must not list their videos as
    "not reported" (it never would be complete) nor shard them."""
    top = tmp_path / "in"
    for sub in ("out/s3d", "kept"):
        (top / sub).mkdir(parents=True)
    for name in ("a.mp4", "out/planted.mp4", "kept/resampled.mp4"):
        (top / name).write_bytes(b"\0")
    root = top / "out" / "s3d"
    run = "20261206T101500Z-3f9a1c"
    (root / "runs").mkdir()
    (root / "runs" / f"{run}.json").write_text(json.dumps(
        {"run": run, "features": {}, "options": {"tmp_path": str(top / "kept")}}))
    write_manifest(str(root), 0, 1, [{"path": str(top / "a.mp4"), "status": "done",
                                      "outputs": {}, "Tv": 1, "seconds": 1.0, "run": run}])
    listed = tmp_path / "list.txt"
    listed.write_text(f"{top}\n")
    summary = merge_manifests(str(top / "out"), str(listed))
    assert (summary.inputs, summary.unreported) == (1, [])
    assert summary.complete
