"""``python -m models.s3d_howto100m.search``: ``--queries FILE`` (one text model load, one
batch, one pass; ``--json`` one object per query) and the ``index`` command, against each
query searched alone by the brute-force scan with its own embedding."""
import json
import os

import numpy as np
import pytest
import torch

import howto100m_cases as cases
from models.s3d_howto100m import search as search_module
from models.s3d_howto100m import search_exact, search_index
from models.s3d_howto100m.random_weights import random_state
from models.s3d_howto100m.synthetic_outputs import video_arrays, write_folder
from models.s3d_howto100m.weights import load_text_encoder

QUERIES = ["cut tomato", "fry the egg", "Cut the TOMATO with a knife", "zzz nothing known"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search_cli_weights")
    torch.save(random_state(0), folder / "s3d_howto100m.pth")
    return ["--weights_path", str(folder / "s3d_howto100m.pth"),
            "--dict_path", cases.save_words(str(folder / "s3d_dict.npy"))]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("search_cli_out")
    rng = np.random.default_rng(7)
    write_folder(str(out), [(f"/v/{i:02d}.mp4", video_arrays(rng, int(rng.integers(1, 9))))
                            for i in range(40)])
    return out


@pytest.fixture(scope="module")
def alone(files):
    """Each query embedded alone (a batch of one), then the brute-force scan."""
    encoder, _, _ = load_text_encoder(files[1], files[3])

    def hits(folder, query, top_k):
        embedding = encoder.encode([query])[0].numpy()
        videos = search_module.indexed_videos(os.path.join(str(folder), "s3d_howto100m"))
        found = search_module.search(videos, embedding, top_k)
        return [h.as_dict() for h in found]
    return hits


def close(got, want):
    assert [(h["path"], h["start_ms"], h["end_ms"]) for h in got] == \
        [(h["path"], h["start_ms"], h["end_ms"]) for h in want]
    assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], rel=1e-6)


def test_queries_file_json_one_object_per_query(tmp_path, files, outputs, alone, capsys,
                                                monkeypatch, restore_logging):
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(QUERIES[:2]) + "\n\n  " + "\n".join(QUERIES[2:]) + "\n",
                       encoding="utf-8")
    loads, encodes, passes = [], [], []
    from models.s3d_howto100m import weights as weights_module  # search imports it to search
    load = weights_module.load_text_encoder
    search = search_exact.search

    def loader(*args):
        loads.append(args)
        encoder, weights, words = load(*args)
        encode = encoder.encode
        monkeypatch.setattr(encoder, "encode", lambda texts: encodes.append(texts) or encode(texts))
        return encoder, weights, words

    def one_pass(*args, **kwargs):
        passes.append(args)
        return search(*args, **kwargs)

    monkeypatch.setattr(weights_module, "load_text_encoder", loader)
    monkeypatch.setattr(search_exact, "search", one_pass)
    assert search_module.main([str(outputs), "--queries", str(queries), "--json", "--top_k", "5",
                               *files]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == QUERIES
    for line in lines:
        assert set(line) == {"query", "hits"} and len(line["hits"]) == 5
        close(line["hits"], alone(outputs, line["query"], 5))
    assert len(loads) == 1 and [len(texts) for texts in encodes] == [len(QUERIES)]  # one batch
    assert len(passes) == 1 and passes[0][1].shape == (len(QUERIES), 512)  # one pass


def test_index_command_then_the_same_hits_through_it(files, outputs, alone, capsys,
                                                      restore_logging):
    folder = os.path.join(str(outputs), "s3d_howto100m")
    assert search_module.main(["index", str(outputs)]) == 0
    out = capsys.readouterr().out.strip()
    index = search_index.open_index(folder)
    assert out == (f"{os.path.join(folder, 'search-index.npy')}: 40 video(s), {index.rows} "
                   f"stacks (0 unchanged, 40 read)")
    assert search_module.main(["index", str(outputs)]) == 0
    assert "(40 unchanged, 0 read)" in capsys.readouterr().out
    assert search_module.main([str(outputs), QUERIES[0], "--json", "--top_k", "6", *files]) == 0
    captured = capsys.readouterr()
    assert "searched 40 video(s) (40 through the index)" in captured.err
    close([json.loads(line) for line in captured.out.splitlines()], alone(outputs, QUERIES[0], 6))


def test_one_query_or_a_queries_file(files, outputs, tmp_path, capsys, restore_logging):
    for args in ([], ["cut", "--queries", str(tmp_path / "q.txt")]):
        with pytest.raises(SystemExit) as stop:
            search_module.main([str(outputs), *args, *files])
        assert stop.value.code == 2
        assert "give one query, or --queries FILE (not both)" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n  \n")
    assert search_module.main([str(outputs), "--queries", str(tmp_path / "empty.txt"), *files]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: --queries {tmp_path / 'empty.txt'}: no query (one a line)"
