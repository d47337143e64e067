"""The files under a folder and the paths a glob pattern matches, walked for a million files.

Both walk with ``os.scandir`` (one call a folder; the type of an entry comes with it on the
usual file systems, so no ``stat`` a file), never follow a link to a folder met on the way
(no loops, no file found twice through a link; links to files are taken), skip hidden names
(a leading ``.``: also this tool's own temporaries, ``.<name>.<token>.tmp``) and raise
``FolderError`` for a folder that cannot be read, rather than silently miss what it holds.
``utils.inputs.paths`` decides which entries are folders or patterns and what a video file is.
"""
import fnmatch
import glob
import os
import re
from typing import Callable, Collection, Iterator, List, Sequence, Set, Tuple


class FolderError(Exception):
    """A folder met while expanding an input cannot be read."""

    def __init__(self, folder: str, cause: OSError):
        super().__init__(f"cannot read folder {folder} ({cause.strerror or cause})")
        self.folder = folder


def _entries(folder: str, hidden: bool = False) -> Iterator[os.DirEntry]:
    """The entries of ``folder``, hidden ones only with ``hidden``; ``FolderError`` if it
    cannot be listed."""
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if hidden or not entry.name.startswith("."):
                    yield entry
    except OSError as e:
        raise FolderError(folder, e) from None


def _subfolders(folder: str) -> List[str]:
    """``folder`` and every folder under it, not through links, not hidden."""
    found = [folder]
    for current in found:  # grows as it goes: breadth first, no recursion
        found.extend(e.path for e in _entries(current) if e.is_dir(follow_symlinks=False))
    return found


def files_under(folder: str, extensions: Collection[str],
                visited: Set[str]) -> Iterator[str]:
    """The files under ``folder``, at any depth, whose extension lower-cased (``.mp4``) is in
    ``extensions``, in no particular order; the folders walked are added to ``visited``."""
    pending = [folder]
    while pending:
        current = pending.pop()
        visited.add(current)
        for entry in _entries(current):
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif (os.path.splitext(entry.name)[1].lower() in extensions
                  and entry.is_file()):  # a link to a file counts; a broken one does not
                yield entry.path


def pattern_matches(base: str, pattern: Sequence[str]) -> Iterator[Tuple[str, bool]]:
    """``(path, is_folder)`` of the folders and files (links to them too; not broken links,
    pipes or devices) that the pattern's components (``glob`` syntax: ``*``, ``?``,
    ``[...]``, a whole component ``**`` for zero or more folders) match from the folder
    ``base`` (taken literally).  As ``glob.glob(recursive=True)``, except that a wildcard or
    ``**`` never matches (nor goes through) a link to a folder, as a folder's walk does not
    (a link to a folder named literally is followed), and a trailing ``**`` matches only the
    folder it starts from (``a/**`` is ``a``).  A wildcard matches a hidden name only in a
    component that starts with ``.``.  Unsorted; ``**`` can give a path more than once."""
    if not pattern:  # the last component was literal
        if os.path.isdir(base):
            yield base, True
        elif os.path.isfile(base):
            yield base, False
        return
    part, rest = pattern[0], pattern[1:]
    if part == "**":
        if not rest:
            yield base, True
            return
        for folder in _subfolders(base):
            yield from pattern_matches(folder, rest)
        return
    if not glob.has_magic(part):
        path = os.path.join(base, part)
        if os.path.isdir(path) if rest else os.path.lexists(path):
            yield from pattern_matches(path, rest)
        return
    matches: Callable = re.compile(fnmatch.translate(part)).match
    for entry in _entries(base, hidden=part.startswith(".")):
        if not matches(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from pattern_matches(entry.path, rest) if rest else [(entry.path, True)]
        elif not rest and entry.is_file():
            yield entry.path, False

