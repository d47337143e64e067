"""Issue 12, point 1: folders and glob patterns as inputs (``utils.inputs.paths.collect_paths``).

Mostly on trees of empty placeholder files (what a file holds does not matter to the
expansion); two real command lines: a pattern that matches nothing (exit 2, one ``error:``
line) and a folder extracted with ``output_layout=mirror``.
"""
import logging
import os

import pytest

from models.s3d.spec import SPEC as S3D
import utils.inputs.folders
from batch_helpers import KEYS, cli_args, output_files_under, read_jsonl, run_cli
from utils.errors import InputError
from utils.files import temporary_name
from utils.inputs.paths import VIDEO_EXTENSIONS, collect_paths, is_video_name, shard_paths
from utils.outputs.naming import output_names
from videos import synth


def touch(root, *names):
    """Empty files (and their folders) under ``root``; their absolute paths, as given."""
    paths = []
    for name in names:
        path = os.path.join(str(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
        paths.append(path)
    return paths


def under(root, *names):
    return [os.path.join(str(root), n) for n in names]


@pytest.fixture
def tree(tmp_path):
    """A dataset folder: nested videos in mixed case, other files, hidden ones, a leftover
    temporary of ours, links."""
    root = tmp_path / "data"
    touch(root, "b.mp4", "a.MKV", "notes.txt", "c.Mp4.json", "z/y/deep.webm", "z/x.AVI",
          "m/readme.md", ".hidden.mp4", ".cache/inside.mp4", "z/.git/objects/o.mp4")
    touch(root, os.path.relpath(temporary_name(str(root / "z" / "x2.mp4")), str(root)))
    os.symlink(str(root), str(root / "z" / "loop"))           # a folder link back up: a loop
    os.symlink(str(root / "b.mp4"), str(root / "m" / "linked.mp4"))   # a file link: taken
    os.symlink(str(root / "nowhere.mp4"), str(root / "m" / "broken.mp4"))  # broken: not
    return root


VIDEOS = ["a.MKV", "b.mp4", "m/linked.mp4", "z/x.AVI", "z/y/deep.webm"]


def test_a_folder_is_its_video_files_at_any_depth_sorted(tree):
    assert collect_paths(str(tree), None) == under(tree, *VIDEOS)


def test_the_extension_list_is_lower_case_dotted_and_matched_in_any_case():
    assert all(e.startswith(".") and e == e.lower() for e in VIDEO_EXTENSIONS)
    assert len(set(VIDEO_EXTENSIONS)) == len(VIDEO_EXTENSIONS)
    assert is_video_name("/a/B.MP4") and is_video_name("x.WebM") and is_video_name("c.ts")
    assert not is_video_name("c.mp4.json") and not is_video_name("mp4") and not is_video_name("a.txt")


def test_a_folder_named_literally_with_a_trailing_slash_or_relatively(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    assert collect_paths("data/", None) == under(tree, *VIDEOS)
    assert collect_paths(["./data/z"], None) == under(tree, "z/x.AVI", "z/y/deep.webm")


def test_a_link_to_a_folder_is_not_followed_inside_a_walk_but_followed_when_named(tree):
    # the walk above did not go round z/loop; named itself, the link is the user's choice
    assert collect_paths(str(tree / "z" / "loop" / "z"), None) == under(
        tree, "z/loop/z/x.AVI", "z/loop/z/y/deep.webm")
    assert collect_paths(str(tree / "**" / "*.AVI"), None) == under(tree, "z/x.AVI")


def test_hidden_names_and_our_temporaries_are_skipped(tree):
    assert not any("/." in p for p in collect_paths(str(tree), None))
    # a pattern that asks for hidden names gets them, never a temporary of ours
    assert collect_paths(str(tree / ".*"), None) == under(tree, ".cache/inside.mp4",
                                                          ".hidden.mp4")
    with pytest.raises(InputError, match="matches no file or folder"):
        collect_paths(str(tree / "z" / ".x2.mp4.*"), None)  # only the temporary matches


def test_a_file_named_explicitly_is_taken_whatever_its_name(tmp_path, monkeypatch):
    literal, other, text = touch(tmp_path, "a[1].mp4", "a1.mp4", "x[y].txt")
    # an existing file with glob characters is that file, not the pattern (which gives a1.mp4)
    assert collect_paths(literal, None) == [literal]
    assert collect_paths([text, str(tmp_path / "notes.txt")], None) == [
        text, str(tmp_path / "notes.txt")]  # not a video name, missing: both kept as given
    # a missing file is no pattern and no error here: it fails later, at its own stage
    assert collect_paths(str(tmp_path / "gone.mp4"), None) == [str(tmp_path / "gone.mp4")]
    monkeypatch.chdir(tmp_path)
    assert collect_paths("a[1].mp4", None) == [literal]


def test_a_pattern_with_double_star(tree):
    touch(tree, "top.mp4", "z/y/also.txt")
    assert collect_paths(str(tree / "**" / "*.mp4"), None) == under(
        tree, "b.mp4", "m/linked.mp4", "top.mp4")  # ** is zero folders too; hidden ones not
    # matched files are taken whatever their extension; matched folders give their videos
    assert collect_paths(str(tree / "z" / "*"), None) == under(
        tree, "z/x.AVI", "z/y/deep.webm")
    assert collect_paths(str(tree / "z" / "**" / "*.txt"), None) == under(tree, "z/y/also.txt")
    assert collect_paths(str(tree / "*" / "**"), None) == under(
        tree, "m/linked.mp4", "z/x.AVI", "z/y/deep.webm")  # a trailing ** is the folder


def test_a_pattern_with_a_wildcard_in_its_first_folder(tmp_path):
    wanted = touch(tmp_path, "v/a.mp4")
    first, rest = str(tmp_path).lstrip(os.sep).split(os.sep, 1)
    pattern = os.path.join(os.sep, first[:-1] + "?", rest, "v", "*.mp4")  # /tm?/...: from /
    assert collect_paths(pattern, None) == wanted


def test_a_relative_pattern_under_a_working_directory_with_glob_characters(tmp_path,
                                                                           monkeypatch):
    project = tmp_path / "[proj] *"
    wanted = touch(project, "v/a.mp4", "v/b.mp4")
    monkeypatch.chdir(project)
    assert collect_paths("v/*.mp4", None) == wanted
    assert collect_paths("*/a.mp4", None) == wanted[:1]


def test_entries_keep_their_order_and_a_list_file_line_may_be_a_folder(tree, tmp_path):
    explicit = str(tmp_path / "first.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tree / 'z'}\n\n{explicit}\n{tree / '*.mp4'}\n", encoding="utf-8")
    assert collect_paths(str(tree / "m"), str(listing)) == [
        *under(tree, "m/linked.mp4", "z/x.AVI", "z/y/deep.webm"), explicit,
        *under(tree, "b.mp4")]


def test_a_video_in_a_folder_and_named_explicitly_is_extracted_once(tree, caplog):
    caplog.set_level(logging.WARNING, logger="utils.inputs.paths")
    first = str(tree / "z" / "x.AVI")
    # named before its folder: one line for the whole folder, with the count
    assert collect_paths([first, str(tree)], None) == [
        first, *under(tree, "a.MKV", "b.mp4", "m/linked.mp4", "z/y/deep.webm")]
    [line] = caplog.messages
    assert f"{tree}: 1 of its 5 video files are already listed" in line
    caplog.clear()
    # named after it: that path's own line; overlapping folders: one line each, not per file
    assert collect_paths([str(tree), str(tree / "z"), first], None) == under(tree, *VIDEOS)
    assert len(caplog.messages) == 2
    assert "2 of its 2 video files" in caplog.messages[0]
    assert caplog.messages[1] == f"{first} is listed more than once; extracting it once"


def test_shards_and_output_names_see_the_expanded_list(tree):
    paths = collect_paths(str(tree), None)
    shards = [shard_paths(paths, s, 2) for s in range(2)]
    assert shards == [under(tree, *VIDEOS[0::2]), under(tree, *VIDEOS[1::2])]
    assert output_names(paths, S3D.keys, "mirror", str(tree)) == [
        "a", "b", "m/linked", "z/x", "z/y/deep"]


def test_a_folder_or_pattern_without_a_video_is_an_error_naming_it(tmp_path):
    touch(tmp_path, "empty/notes.txt", "empty/.hidden.mp4", "empty/sub/readme.md")
    with pytest.raises(InputError) as e:
        collect_paths(str(tmp_path / "empty"), None)
    assert str(e.value).startswith(f"video_paths: {tmp_path / 'empty'} matches no video file "
                                   "(extensions: .mp4 ")
    with pytest.raises(InputError, match=r"^video_paths: .*/nothing/\*\*/\*\.mp4 matches no "):
        collect_paths(["/no/such.mp4", str(tmp_path / "nothing" / "**" / "*.mp4")], None)
    with pytest.raises(InputError, match=r"matches no video file"):  # matched folders, no video
        collect_paths(str(tmp_path / "em*"), None)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'a.mp4'}\n\n{tmp_path / 'empty'}\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"^file_with_video_paths: line 3 of {listing}: "
                                         rf"{tmp_path / 'empty'} matches no video file"):
        collect_paths(None, str(listing))


def test_an_unreadable_folder_is_an_error_naming_it(tree, monkeypatch):
    # as root (in containers) permissions do not stop a read: make scandir fail instead
    real = os.scandir
    blocked = str(tree / "z" / "y")

    def scandir(path="."):
        if str(path) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(utils.inputs.folders.os, "scandir", scandir)
    with pytest.raises(InputError) as e:
        collect_paths(str(tree), None)
    assert str(e.value) == f"video_paths: {tree}: cannot read folder {blocked} (Permission denied)"
    with pytest.raises(InputError, match="cannot read folder"):
        collect_paths(str(tree / "**" / "*.webm"), None)


def test_cli_a_pattern_that_matches_nothing_exits_2_naming_it(tmp_path, random_checkpoint):
    touch(tmp_path, "videos/a/notes.txt")
    pattern = str(tmp_path / "videos" / "**" / "*.mp4")
    proc = run_cli(cli_args(random_checkpoint, str(tmp_path / "out"), video_paths=pattern),
                   cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: video_paths: {pattern} matches no file or folder"]
    assert not os.path.exists(tmp_path / "out")


def test_cli_a_folder_mirrored_under_its_input_root(tmp_path, random_checkpoint):
    data = tmp_path / "data"
    for name in ("day1/clip.mp4", "day2/clip.MKV"):
        os.makedirs(data / os.path.dirname(name), exist_ok=True)
        synth(str(data / name), seconds=0.6, size="64x48")
    touch(data, "day1/notes.txt", "day2/.partial.mp4")  # neither is a video to extract
    out = tmp_path / "out"
    proc = run_cli(cli_args(random_checkpoint, str(out), video_paths=str(data),
                            output_layout="mirror", input_root=str(data)), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    root = str(out / "s3d")
    assert output_files_under(root) == sorted(
        [f"{day}/clip_{key}.npy" for day in ("day1", "day2") for key in KEYS]
        + ["failed.jsonl", "manifest-0-of-1.jsonl"])
    records = read_jsonl(os.path.join(root, "manifest-0-of-1.jsonl"))
    assert [(r["path"], r["status"]) for r in records] == [
        (str(data / "day1" / "clip.mp4"), "done"), (str(data / "day2" / "clip.MKV"), "done")]
