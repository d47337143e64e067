"""The search index (models/s3d_howto100m/search_index.py) and the exact search over it
(search_exact.py), against the brute-force scan of every file (search.search over
search.indexed_videos, the search as it was before the index): the same hits, in the same
order, with the same scores, over .npy, .pkl and .h5 outputs; never a stale row."""
import json
import logging
import os
import shutil

import numpy as np
import pytest

from models.s3d_howto100m import search as base
from models.s3d_howto100m import search_exact, search_index
from models.s3d_howto100m.synthetic_outputs import video_arrays, write_folder

FORMATS = ["save_numpy", "save_pickle", "save_h5"]


def brute_force(folder, queries, top_k):
    """Each query's hits from a scan of every video's files (the search before the index)."""
    return [base.search(base.indexed_videos(str(folder)), q, top_k) for q in queries]


def same(got, want):
    """The same hits in the same order; scores equal up to the summation order (float64)."""
    assert [[(h.path, h.start_ms, h.end_ms) for h in hits] for hits in got] == \
        [[(h.path, h.start_ms, h.end_ms) for h in hits] for hits in want]
    for hits, expected in zip(got, want):
        assert [h.score for h in hits] == pytest.approx([h.score for h in expected],
                                                        rel=1e-12, abs=1e-12)


def crowded_videos(seed=0, count=60):
    """Videos whose best rows lie within float16's rounding of each other: near-copies of a
    few base rows spread over many videos (relative noise 2e-4, below float16's 4.9e-4
    step), an exact copy of a video (ties broken by path), and videos of tiny values
    (float16's subnormals); what an index that ranks by its float16 scores, or keeps too
    few candidates, gets wrong."""
    rng = np.random.default_rng(seed)
    bases = rng.standard_normal((4, 512)).astype(np.float32)
    videos = []
    for i in range(count):
        arrays = video_arrays(rng, int(rng.integers(1, 12)))
        emb = arrays["video_embedding"]
        if i % 6 == 5:
            emb *= np.float32(1e-5)
        else:
            for row in range(len(emb)):
                if rng.random() < 0.5:
                    noise = rng.standard_normal(512).astype(np.float32) * 2e-4
                    emb[row] = bases[rng.integers(4)] * (1 + noise)
        videos.append((f"/videos/v{i:03d}.mp4", arrays))
    videos.append(("/videos/copy.mp4", {**videos[0][1]}))  # an exact copy of v000
    return videos, bases


@pytest.fixture(scope="module", params=FORMATS)
def crowded(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("crowded")
    videos, bases = crowded_videos()
    folder = write_folder(str(out), videos, on_extraction=request.param)
    built = search_index.build(folder)
    assert (built.videos, built.read, built.reused, built.skipped) == (len(videos), len(videos), 0, [])
    rng = np.random.default_rng(1)
    queries = np.concatenate([bases + rng.standard_normal((4, 512)) * 0.01,
                              rng.standard_normal((4, 512))]).astype(np.float32)
    return folder, queries


@pytest.mark.parametrize("top_k", [1, 7, 40])
def test_the_index_gives_the_brute_force_top_k(crowded, top_k):
    folder, queries = crowded
    found = search_exact.search(folder, queries, top_k)
    assert found.indexed and found.from_index == found.searched == 61 and not found.added
    same(found.hits, brute_force(folder, queries, top_k))
    assert found.read < 61  # the index chose what to read: not a scan in disguise
    # the scan of the files in one pass (--no_index) gives the same
    same(search_exact.search(folder, queries, top_k, use_index=False).hits,
         brute_force(folder, queries, top_k))


def test_the_matrix_holds_every_row_as_float16(crowded):
    folder, _ = crowded
    index = search_index.open_index(folder)
    videos = {v.path: v.embedding for v in base.indexed_videos(folder)}
    assert index.rows == sum(len(e) for e in videos.values())
    assert index.matrix.dtype == np.float16 and isinstance(index.matrix, np.memmap)
    for path, start, count in zip(index.paths, index.starts, index.counts):
        np.testing.assert_array_equal(index.matrix[start:start + count],
                                      videos[path].astype(np.float16))


def _redo(out, path, arrays, run_id):
    """The video extracted again by a later run (new files, new manifest record)."""
    write_folder(str(out), [(path, arrays)], run_id=run_id)


def test_never_a_stale_row(tmp_path, caplog):
    """Build the index; then a video is redone (its old rows would win every query), one
    fails (files left behind), one loses its files, one is added: the hits are those of the
    brute-force scan, the old rows never show, and one line names the added and changed."""
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((3, 512)).astype(np.float32)
    videos = [(f"/v/{i}.mp4", video_arrays(rng, 5)) for i in range(12)]
    winners = {}
    for name, q in zip(("redone", "failed", "gone"), queries):
        arrays = video_arrays(rng, 4)
        arrays["video_embedding"][2] = q * 100  # the best row of query q, by far
        winners[name] = arrays
        videos.append((f"/v/{name}.mp4", arrays))
    folder = write_folder(str(tmp_path), videos)
    search_index.build(folder)
    assert [h[0].path for h in search_exact.search(folder, queries, 3).hits] == \
        ["/v/redone.mp4", "/v/failed.mp4", "/v/gone.mp4"]

    _redo(tmp_path, "/v/redone.mp4", video_arrays(rng, 4), "later")
    write_folder(str(tmp_path), [("/v/failed.mp4", video_arrays(rng, 4))], run_id="later",
                 status="failed")
    for key in ("video_embedding", "timestamps_ms"):
        os.remove(os.path.join(folder, f"gone_{key}.npy"))
    _redo(tmp_path, "/v/added.mp4", video_arrays(rng, 6), "later")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        found = search_exact.search(folder, queries, 5)
    same(found.hits, brute_force(folder, queries, 5))
    shown = {h.path for hits in found.hits for h in hits}
    assert not shown & {"/v/failed.mp4", "/v/gone.mp4"}
    assert all(h.score < 1000 for hits in found.hits for h in hits)  # no old winning row
    hints = [r.getMessage() for r in caplog.records if "search index was built" in r.getMessage()]
    assert hints == [f"1 added and 2 changed video(s) since the search index was built were "
                     f"read from their files (/v/added.mp4, /v/gone.mp4, /v/redone.mp4); to "
                     f"bring it up to date: python -m models.s3d_howto100m.search index {folder}"]
    assert found.from_index == 12 and found.searched == 14  # gone is unreadable: skipped

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        built = search_index.build(folder)  # brought up to date: the unchanged rows reused
    assert (built.videos, built.reused, built.read, built.skipped) == (14, 12, 2, ["/v/gone.mp4"])
    assert (f"/v/gone.mp4: not indexed: an output is missing, not a regular file, or outside "
            f"{folder}") in [r.getMessage() for r in caplog.records]  # the skipped video named
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = search_exact.search(folder, queries, 5)
    same(again.hits, found.hits)
    assert not [r for r in caplog.records if "search index was built" in r.getMessage()]


@pytest.mark.parametrize("damage", ["truncated", "garbage json", "rows overlap", "link",
                                    "wrong dtype", "another build", "max_norm beyond floats"])
def test_a_damaged_index_is_one_warning_and_the_files_answer(tmp_path, caplog, damage):
    rng = np.random.default_rng(4)
    folder = write_folder(str(tmp_path), [(f"/v/{i}.mp4", video_arrays(rng, 3)) for i in range(5)])
    search_index.build(folder)
    matrix, meta = search_index.index_paths(folder)
    if damage == "truncated":
        os.truncate(matrix, os.path.getsize(matrix) - 2)
    elif damage == "garbage json":
        with open(meta, "wb") as f:
            f.write(b"\x00{not json")
    elif damage == "rows overlap":
        data = json.load(open(meta))
        data["videos"][1][2] -= 1
        json.dump(data, open(meta, "w"))
    elif damage == "link":
        shutil.move(matrix, str(tmp_path / "elsewhere.npy"))
        os.symlink(str(tmp_path / "elsewhere.npy"), matrix)
    elif damage == "wrong dtype":
        np.save(matrix, np.zeros((15, 512), np.float32))
    elif damage == "max_norm beyond floats":  # an int no float holds: OverflowError
        data = json.load(open(meta))
        data["max_norm"] = 10 ** 400
        json.dump(data, open(meta, "w"))
    else:  # the same videos built again: a matrix of the same shape, another token
        kept = open(meta, "rb").read()
        search_index.build(folder)
        open(meta, "wb").write(kept)
    queries = rng.standard_normal((2, 512)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        found = search_exact.search(folder, queries, 4)
    assert not found.indexed and found.searched == 5
    same(found.hits, brute_force(folder, queries, 4))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "the search index is not used" in warned[0], warned


def test_values_float16_cannot_hold_are_searched_from_the_files(tmp_path, caplog):
    rng = np.random.default_rng(5)
    big = video_arrays(rng, 3)
    big["video_embedding"][1, 0] = 1e6  # over float16's 65504
    folder = write_folder(str(tmp_path), [("/v/a.mp4", video_arrays(rng, 3)), ("/v/big.mp4", big)])
    built = search_index.build(folder)
    assert (built.videos, built.unindexed) == (1, 1)
    queries = np.eye(512, dtype=np.float32)[:2]
    with caplog.at_level(logging.WARNING):
        found = search_exact.search(folder, queries, 2)
    same(found.hits, brute_force(folder, queries, 2))
    assert found.hits[0][0].path == "/v/big.mp4" and not caplog.records  # no hint: by design
