"""S3D HowTo100M end to end: frames as the FFmpeg CLI makes them, features as the plain network
gives them on those frames, the command line's outputs and sinks, and text search over them.

The chain to the port: our frames equal the FFmpeg CLI's (bit for bit), the extractor's
features equal the plain network's on the CLI's frames, and the plain network equals the port
(tests/test_s3d_howto100m_port.py).  Search scores are checked against dot products of the
stored video embeddings with the port's own text embedding of the query.
"""
import json
import logging
import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

import howto100m_cases as cases
from batch_helpers import make_cfg, read_jsonl, rel_err, run_cli
from conftest import REPO
from models.s3d_howto100m import ExtractS3DHowTo100M
from models.s3d_howto100m import search as search_module
from models.s3d_howto100m.random_weights import random_s3dg, random_state
from utils.run.batch_run import run
from utils.outputs.features import load
from utils.config import ExtractorOptions
from utils.video.decode import VideoDecoder
from utils.video.preprocess import CROP, preset_class
from videos import cli_frames, clip_maker, kylemin_vf

GOLDEN = os.path.join(REPO, "tests", "golden", "s3d_howto100m_port.npz")
FAST = dict(stack_size=8, step_size=6)   # 2 s at 10 fps: 20 frames -> 3 stacks
KEYS = ("s3d_howto100m", "video_embedding", "timestamps_ms", "fps")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return clip_maker(tmp_path_factory.mktemp("howto100m_clips"), seconds=2, rate="25")


@pytest.fixture(scope="module")
def model():
    return random_s3dg(0)


@pytest.fixture(scope="module")
def extractor(model):
    """One extractor (seeded weights, short stacks) for the module's in-process runs."""
    return ExtractS3DHowTo100M(model=model, device="cpu", **FAST)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("howto100m_weights")
    torch.save(random_state(0), folder / "s3d_howto100m.pth")
    return {"weights": str(folder / "s3d_howto100m.pth"),
            "dict": cases.save_words(str(folder / "s3d_dict.npy"))}


def upright_size(path):
    with av.open(path) as c:
        return c.streams.video[0].width, c.streams.video[0].height


# --------------------------------------------------------------------------- frames

@pytest.mark.parametrize("name,kwargs", [
    ("land.mp4", dict(size="320x240")),
    ("portrait_odd.mp4", dict(size="97x223", source="testsrc", pix_fmt="yuv444p")),
])
def test_frames_equal_the_ffmpeg_cli(clip, name, kwargs):
    """``preprocess=howto100m`` at 10 fps: ``ffmpeg -vf fps=10,scale=..:flags=bilinear,
    format=rgb24,crop=224:224:X:Y``, bit for bit; the network gets them divided by 255."""
    path = clip(name, **kwargs)
    w, h = upright_size(path)
    cli = cli_frames(path, kylemin_vf(w, h, 10), CROP, CROP)
    preset_type = preset_class("howto100m")
    preset = preset_type()
    with VideoDecoder(path, 10) as decoder:
        ours = np.stack([preset(t.frame) for t in decoder])
    assert ours.dtype == np.uint8 and ours.shape == cli.shape == (20, CROP, CROP, 3)
    assert np.array_equal(ours, cli)
    x = preset_type.to_input(torch.from_numpy(ours))
    assert x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(cli.copy()).to(torch.float32) / 255)  # [0, 1]


# --------------------------------------------------------------------------- features

def test_defaults_are_the_models_training_input():
    options = ExtractorOptions(feature_type="s3d_howto100m")
    assert (options.stack_size, options.step_size, options.extraction_fps) == (32, 32, 10.0)
    assert options.preprocess == "howto100m"


def test_features_equal_the_plain_network_on_the_cli_frames(clip, model, extractor):
    path = clip("land.mp4", size="320x240")
    out = extractor.extract(path)
    assert set(out) == set(KEYS)
    assert out["s3d_howto100m"].shape == (3, 1024) and out["s3d_howto100m"].dtype == np.float32
    assert out["video_embedding"].shape == (3, 512) and out["video_embedding"].dtype == np.float32
    np.testing.assert_array_equal(out["timestamps_ms"], [[0, 800], [600, 1400], [1200, 2000]])
    assert float(out["fps"]) == 10.0

    frames = cli_frames(path, kylemin_vf(320, 240, 10), CROP, CROP)
    stacks = np.stack([frames[s:s + 8] for s in (0, 6, 12)])
    with torch.inference_mode():
        features, embedding = model(cases.to_port_input(stacks))
    assert rel_err(out["s3d_howto100m"], features.numpy()) < 1e-5
    assert rel_err(out["video_embedding"], embedding.numpy()) < 1e-5
    assert rel_err(features[0:1].numpy(), features[1:2].numpy()) > 1e-3  # the stacks differ


def test_with_logits_is_refused(clip, extractor):
    with pytest.raises(ValueError, match="with_logits: s3d_howto100m has no classes"):
        extractor.extract(clip("land.mp4", size="320x240"), with_logits=True)


# --------------------------------------------------------------------------- CLI, sinks, search

@pytest.fixture(scope="module")
def extracted(tmp_path_factory, clip, files, extractor):
    """Two videos through the real command line (.npy), and through the batch run in-process
    with the pickle sink; a third video fails (too short) and is in the manifest as failed."""
    work = tmp_path_factory.mktemp("howto100m_run")
    videos = [clip("land.mp4", size="320x240"), clip("tall.mp4", size="240x320", source="testsrc"),
              clip("short.mp4", size="320x240", seconds=0.5)]
    proc = run_cli(["feature_type=s3d_howto100m", "device=cpu", "on_extraction=save_numpy",
                    f"video_paths=[{','.join(videos)}]", f"weights_path={files['weights']}",
                    f"dict_path={files['dict']}", "output_path=npy",
                    *(f"{k}={v}" for k, v in FAST.items())], cwd=str(work), timeout=300)
    assert proc.returncode == 1, proc.stderr  # the short one failed
    assert "FAILED" in proc.stderr and "too_short: 5 frames at 10 fps" in proc.stderr
    cfg = make_cfg(videos, str(work / "pkl"), on_extraction="save_pickle",
                   feature_type="s3d_howto100m", **FAST)
    report = run(cfg, extractor)
    assert (report.done, report.num_failed) == (2, 1)
    return {"work": work, "videos": videos, "files": files, "npy": work / "npy",
            "pkl": work / "pkl"}


@pytest.mark.parametrize("sink", ["save_numpy", "save_pickle", "save_h5"])
def test_a_250_byte_stem_fits_this_networks_keys(tmp_path, clip, extractor, sink):
    """Names are shortened to fit the chosen network's keys: with s3d's keys (longest suffix
    ``_timestamps_ms.npy``, 18 bytes) a 250-byte stem became 237 bytes, and
    ``_video_embedding.npy`` (20) then made a 257-byte file name that failed at write."""
    video = tmp_path / ("é" * 125 + ".mp4")  # 250 bytes of UTF-8
    shutil.copy(clip("land.mp4", size="320x240"), video)
    cfg = make_cfg([str(video)], str(tmp_path / "out"), on_extraction=sink,
                   feature_type="s3d_howto100m", **FAST)
    report = run(cfg, extractor)
    assert (report.done, report.num_failed) == (1, 0)
    [features] = load(str(tmp_path / "out" / "s3d_howto100m")).values()
    expected = extractor.extract(str(video))
    for key in KEYS:
        np.testing.assert_array_equal(features[key], expected[key])
    names = os.listdir(tmp_path / "out" / "s3d_howto100m")
    assert all(len(n.encode()) <= 255 for n in names)


def test_cli_outputs_equal_the_api_in_both_formats(extracted):
    """The CLI's .npy (checkpoint read from the file) against the API's .pkl (the same seeded
    network handed over in memory)."""
    folder = extracted["npy"] / "s3d_howto100m"
    names = sorted(os.listdir(folder))
    assert names == sorted([f"{stem}_{key}.npy" for stem in ("land", "tall") for key in KEYS]
                           + ["failed.jsonl", "manifest-0-of-1.jsonl", "runs"])
    pickles = load(str(extracted["pkl"] / "s3d_howto100m"))
    assert sorted(pickles) == ["land", "tall"] and pickles.format == "pkl"
    for stem in ("land", "tall"):
        for key in KEYS:
            npy = np.load(folder / f"{stem}_{key}.npy", allow_pickle=False)
            pkl = pickles[stem][key]
            assert npy.dtype == pkl.dtype and npy.shape == pkl.shape
            if key in ("s3d_howto100m", "video_embedding"):
                assert npy.dtype == np.float32 and npy.shape[0] == 3
                assert rel_err(npy, pkl) < 1e-5
            else:
                np.testing.assert_array_equal(npy, pkl)


def test_rerun_skips_what_is_done(extracted, extractor, monkeypatch):
    cfg = make_cfg(extracted["videos"], str(extracted["pkl"]), on_extraction="save_pickle",
                   feature_type="s3d_howto100m", **FAST)
    asked = []
    extract = extractor.extract
    monkeypatch.setattr(extractor, "extract", lambda path, **kw: asked.append(path) or
                        extract(path, **kw))
    report = run(cfg, extractor)
    assert (report.done, report.skipped, report.num_failed) == (0, 2, 1)
    assert asked == extracted["videos"][2:]  # only the one that failed is tried again


def search_cli(folder, query, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "models.s3d_howto100m.search", str(folder),
                           query, *args], cwd=str(folder), env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def expected_hits(extracted, text_embedding):
    """Every stack of the two videos, scored by dot products computed here, best first."""
    hits = []
    for video in extracted["videos"][:2]:
        stem = os.path.splitext(os.path.basename(video))[0]
        folder = extracted["npy"] / "s3d_howto100m"
        emb = np.load(folder / f"{stem}_video_embedding.npy").astype(np.float64)
        stamps = np.load(folder / f"{stem}_timestamps_ms.npy")
        for row, (start, end) in zip(emb, stamps):
            hits.append({"path": video, "start_ms": start, "end_ms": end,
                         "score": float(np.dot(row, text_embedding.astype(np.float64)))})
    return sorted(hits, key=lambda h: -h["score"])


def test_search_end_to_end_scores_are_the_dot_products(extracted):
    """The command line, on the CLI's outputs, the query embedded as the port embeds it."""
    with np.load(GOLDEN, allow_pickle=False) as golden:
        query = cases.SENTENCES[2]  # "Cut the TOMATO with a knife"
        port_text = golden["text_embedding"][2]
    files = extracted["files"]
    proc = search_cli(extracted["npy"], query, "--json", "--top_k", "4",
                      "--weights_path", files["weights"], "--dict_path", files["dict"])
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    want = expected_hits(extracted, port_text)
    assert len(want) == 6 and len(hits) == 4
    assert [(h["path"], h["start_ms"], h["end_ms"]) for h in hits] == \
        [(h["path"], h["start_ms"], h["end_ms"]) for h in want[:4]]
    for got, exp in zip(hits, want):
        assert got["score"] == pytest.approx(exp["score"], rel=1e-6, abs=1e-6)
    assert len({round(h["score"], 3) for h in want}) == 6  # the ranking is not a tie


def test_search_prints_a_table_best_first(extracted, capsys, restore_logging):
    with np.load(GOLDEN, allow_pickle=False) as golden:
        want = expected_hits(extracted, golden["text_embedding"][2])
    files = extracted["files"]
    assert search_module.main([str(extracted["npy"]), cases.SENTENCES[2], "--top_k", "2",
                               "--weights_path", files["weights"],
                               "--dict_path", files["dict"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].split() == ["score", "start-end", "(s)", "video"]
    for line, exp in zip(lines[1:], want):
        score, span, path = line.split(maxsplit=2)
        assert path == exp["path"] and float(score) == pytest.approx(exp["score"], abs=1e-4)
        assert span == f"{exp['start_ms'] / 1000:.2f}-{exp['end_ms'] / 1000:.2f}"




def test_search_reads_pickles_and_skips_what_it_cannot_read(extracted, monkeypatch, capsys, files,
                                                            restore_logging):
    """In-process, on the pickle sink's folder: the same ranking as the .npy outputs; an
    unreadable video is one warning, the others are still searched."""
    monkeypatch.chdir(extracted["work"])
    args = ["--weights_path", files["weights"], "--dict_path", files["dict"], "--json"]
    assert search_module.main(["pkl", "open door", *args]) == 0
    from_pkl = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert search_module.main(["npy/s3d_howto100m", "open door", *args]) == 0
    from_npy = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(from_pkl) == 6
    assert [(h["path"], h["start_ms"]) for h in from_pkl] == \
        [(h["path"], h["start_ms"]) for h in from_npy]
    assert [h["score"] for h in from_pkl] == pytest.approx([h["score"] for h in from_npy],
                                                           rel=1e-5)

    # a .pkl that would run code is refused (not run), and that video skipped
    target = extracted["pkl"] / "s3d_howto100m" / "tall_video_embedding.pkl"
    original = target.read_bytes()
    marker = extracted["work"] / "MARKER"
    try:
        target.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
        assert search_module.main(["pkl", "open door", *args]) == 0
        captured = capsys.readouterr()
        hits = [json.loads(line) for line in captured.out.splitlines()]
        assert {h["path"] for h in hits} == {extracted["videos"][0]}
        assert "tall.mp4: skipped: " in captured.err
        assert "tall_video_embedding.pkl: cannot be read (refused to load os.system" in captured.err
        assert not marker.exists()
    finally:
        target.write_bytes(original)


def test_search_without_outputs_is_one_error(tmp_path, files, capsys, restore_logging):
    assert search_module.main([str(tmp_path), "cut tomato", "--weights_path", files["weights"],
                               "--dict_path", files["dict"]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"error: no manifest-<shard>-of-<num_shards>.jsonl in {tmp_path} (manifests are written "
        "by saving runs: feature_type=s3d_howto100m on_extraction=save_numpy, save_pickle or "
        "save_h5)"]


def test_manifest_lists_the_failed_video_but_search_ignores_it(extracted):
    records = read_jsonl(str(extracted["npy"] / "s3d_howto100m" / "manifest-0-of-1.jsonl"))
    assert [r["status"] for r in records] == ["done", "done", "failed"]
    videos = list(search_module.indexed_videos(str(extracted["npy"] / "s3d_howto100m")))
    assert [v.path for v in videos] == extracted["videos"][:2]


def test_search_takes_each_videos_latest_record(tmp_path, extracted, caplog):
    """A video done in an earlier run (shard 0 of 2) whose latest record (a later run) failed
    is not searched, though its old files are still there; a relative output path is read
    from the manifest's folder."""
    folder = extracted["npy"] / "s3d_howto100m"
    done = read_jsonl(str(folder / "manifest-0-of-1.jsonl"))[:2]
    for key in KEYS:  # a complete set (utils.outputs.features lists complete sets only)
        shutil.copy(folder / f"land_{key}.npy", tmp_path / f"land_{key}.npy")
    done[0]["outputs"] = {"video_embedding": "land_video_embedding.npy",
                          "timestamps_ms": "land_timestamps_ms.npy"}
    older, newer = tmp_path / "manifest-0-of-2.jsonl", tmp_path / "manifest-0-of-1.jsonl"
    older.write_text("".join(json.dumps(r) + "\n" for r in done))
    newer.write_text(json.dumps({"path": done[1]["path"], "status": "failed", "stage": "decode",
                                 "message": "x"}) + "\n")
    os.utime(older, (1, 1))  # older by modification time
    with caplog.at_level(logging.WARNING):
        videos = list(search_module.indexed_videos(str(tmp_path)))
    assert [v.path for v in videos] == [done[0]["path"]]
    assert caplog.records == []  # a failed video was reported by its run: no warning here
    np.testing.assert_array_equal(videos[0].embedding,
                                  np.load(folder / "land_video_embedding.npy"))
