"""Records read back from an output folder (issue 19, found by an adversarial probe): JSON
nested too deep for the parser, a lock that is a FIFO, a run record under another run's name,
terminal escapes and lone surrogates in records, a linked feature folder, a 5 MB option value
in a refusal.  Each is one line naming the file, never a traceback or a forged screen."""
import json
import os
import subprocess
import sys

import h5py
import pytest

from batch_helpers import MAIN, REPO, cli_args, our_h5, run_cli

from utils.errors import InputError
from utils.outputs import h5_format, h5_live
from utils.records.jsonl import read_lines
from utils.records.lock import shard_lock
from utils.records.provenance import check_rerun, read_runs
from utils.records.schema import RunRecord

NESTED = "[" * 200_000 + "]" * 200_000
RUN = "20261206T101500Z-3f9a1c"


def _record(run=RUN, **features):
    return {"run": run, "format": 1, "features": dict({"stack_size": 13}, **features)}


def test_a_manifest_line_nested_too_deep_is_one_warning(tmp_path, caplog):
    path = tmp_path / "manifest-0-of-1.jsonl"
    path.write_text(NESTED + "\n" + json.dumps({"path": "/v/a.mp4", "status": "failed"}) + "\n")
    assert [where for where, _ in read_lines(str(path))] == [f"{path}:2"]
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == f"{path}:1: not a JSON line, skipped"


def test_a_run_record_nested_too_deep_or_too_large_is_skipped(tmp_path, caplog):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / f"{RUN}.json").write_text(json.dumps(_record()))
    (runs / "20261206T101501Z-000000.json").write_text(NESTED)
    (runs / "20261206T101502Z-000000.json").write_text(" " * (2**20 + 1) + "{}")
    assert list(read_runs(str(tmp_path))) == [RUN]
    assert sorted(r.getMessage().split(": ")[0] for r in caplog.records) == [
        str(runs / "20261206T101501Z-000000.json"), str(runs / "20261206T101502Z-000000.json")]


def test_a_run_record_under_another_runs_name_is_skipped(tmp_path, caplog):
    """runs/zzz.json holding the real run id with other options must not stand for it."""
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / f"{RUN}.json").write_text(json.dumps(_record()))
    (runs / "zzz.json").write_text(json.dumps(_record(stack_size=64)))
    found = read_runs(str(tmp_path))
    assert list(found) == [RUN] and found[RUN].features["stack_size"] == 13
    [warning] = [r.getMessage() for r in caplog.records]
    assert str(runs / "zzz.json") in warning and f"it says run '{RUN}'" in warning


def test_an_h5_run_attribute_nested_too_deep_is_one_warning(tmp_path, caplog):
    path = str(tmp_path / "s3d-0-of-1.h5")
    with our_h5(path) as f:
        f.attrs[h5_format.RUN_PREFIX + RUN] = json.dumps(_record())
        f.attrs[h5_format.RUN_PREFIX + "deep"] = NESTED
    with h5py.File(path, "r") as f:
        assert list(h5_format.runs(f)) == [RUN]
    [warning] = [r.getMessage() for r in caplog.records]
    assert path in warning and "run:deep" in warning and "nested too deeply" in warning


def test_a_search_index_meta_nested_too_deep_is_refused_in_one_line(tmp_path):
    from models.s3d_howto100m.search_index import _read_meta
    path = tmp_path / "search-index.json"
    path.write_text(NESTED)
    with pytest.raises(ValueError, match="nested too deeply"):
        _read_meta(str(path))


def test_a_lock_that_is_a_fifo_is_one_error_line(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    os.mkfifo(runs / ".lock-0-of-1")
    with pytest.raises(InputError) as info:
        with shard_lock(str(tmp_path), 0, 1):
            pass
    assert str(runs / ".lock-0-of-1") in str(info.value) and "not a regular file" in str(info.value)


def test_a_refusal_shows_a_huge_option_value_cut(tmp_path):
    record = RunRecord.from_json(_record(), "now")
    huge = {"stack_size": "x" * 5_000_000}
    with pytest.raises(InputError) as info:
        check_rerun(str(tmp_path), record, {}, False, [("s3d-0-of-1.h5", huge)])
    assert len(str(info.value)) < 600 and "stack_size 'xxx" in str(info.value)


def test_escapes_and_lone_surrogates_in_records_are_printed_escaped(tmp_path):
    """utils.manifests prints what the records say: a terminal escape (clear the screen, a
    forged line) is shown escaped, a lone surrogate never ends the command."""
    root = tmp_path / "s3d"
    root.mkdir()
    lines = [{"path": "/v/\x1b[2J\x1b[Hfake: done 999\n.mp4", "status": "failed", "stage": "decode",
              "message": "bad\x1b[8m hidden"},
             {"path": "/v/\ud800.mp4", "status": "failed", "stage": "decode", "message": "m"}]
    with open(root / "manifest-0-of-1.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")  # ASCII: \u escapes, the surrogate too
    proc = subprocess.run([sys.executable, "-m", "utils.manifests", str(tmp_path)], cwd=REPO,
                          capture_output=True, timeout=60)
    assert proc.returncode in (0, 1) and b"Traceback" not in proc.stderr, proc.stderr
    out = proc.stdout.decode("utf-8")
    assert "\x1b" not in out and "\\u001b[2J" in out and "\\u001b[8m hidden" in out
    assert "\\ud800.mp4" in out
    assert not [ln for ln in out.splitlines() if ln.startswith("fake:")]


def test_a_linked_feature_folder_is_refused_before_anything_is_written(random_checkpoint,
                                                                       tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "s3d").symlink_to(elsewhere)
    proc = run_cli(cli_args(random_checkpoint, str(out), video_paths=[MAIN]), cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert str(out / "s3d") in line and "is a link" in line
    assert os.listdir(elsewhere) == []


def test_planted_names_in_h5_warnings_are_escaped(tmp_path, caplog):
    """A group name, a link target and a run attribute's name with terminal escapes and a
    newline: the rerun's, the rewrite's and the run records' warnings show them escaped."""
    from utils.outputs.h5_store import H5Store
    evil = "\x1b[31mEVIL\nFORGED done 99\x07"
    path = str(tmp_path / "s3d-0-of-1.h5")
    with our_h5(path) as f:
        group = f.create_group(evil)
        group.attrs["video_path"] = "/v/evil.mp4"
        group["s3d"] = h5py.SoftLink("/x\x1b[2J")
        f.attrs[h5_format.RUN_PREFIX + evil] = "{not json"
    store = H5Store(str(tmp_path), "s3d", 0, 1, ("s3d", "timestamps_ms", "fps"),
                    (("s3d", 1024),), "r", {}, writable=False)
    try:
        assert store.complete(evil) is None
    finally:
        store.close()
    with h5py.File(path, "r") as src, h5py.File(str(tmp_path / "packed.h5"), "w") as dst:
        h5_format.runs(src)
        h5_live.copy_live(src, dst, path)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    for message in messages:
        assert "\x1b" not in message and "\n" not in message and "\\u001b" in message


def test_pack_names_a_file_with_a_newline_on_one_line(tmp_path):
    """A planted name holding a newline and a terminal escape: pack's warning about it stays
    one line, escaped (it could forge a line of its own)."""
    import numpy as np
    from batch_helpers import features_cli
    root = tmp_path / "s3d"
    root.mkdir()
    for stem in ("good", "evil\nFORGED: 1 video packed\x1b[2J"):
        np.save(root / f"{stem}_s3d.npy", np.ones((3, 1024), np.float32))
        np.save(root / f"{stem}_timestamps_ms.npy", np.arange(6.0).reshape(3, 2))
    np.save(root / "good_fps.npy", np.float64(25))  # evil lacks its fps file
    proc = features_cli("pack", str(root), str(tmp_path / "all.h5"))
    assert proc.returncode == 1, proc.stderr
    assert not [ln for ln in proc.stderr.splitlines() + proc.stdout.splitlines()
                if ln.startswith("FORGED")]
    assert "\x1b" not in proc.stderr and "\\u001b[2J" in proc.stderr
