"""``python -m utils.outputs.features summary | pack | merge``: one ``error:`` line (exit 2)
for unusable input; exit 1 when ``pack`` or ``merge`` left videos out; see the package's doc."""
import argparse
import json
import logging
import sys
from typing import List, Optional

from utils.console import printable_path, printable_text, setup_logging
from utils.errors import one_line
from utils.outputs.features.names import FILE_FORMATS, FORMATS, OutputError
from utils.outputs.features.pack import merge_h5, pack
from utils.outputs.features.read import load
from utils.outputs.features.summary import format_features_summary, summarize


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return one_line(e)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.outputs.features",
        description="Summarize, pack or merge extracted features (.npy, .pkl or .h5 outputs).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="videos, stacks, keys with shapes and dtypes")
    p.add_argument("path", help="<output_path>/<feature_type>, <output_path>, or one .h5 file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--format", choices=FORMATS, help="the format to read in a mixed folder")
    p = sub.add_parser("pack", help="a folder of .npy / .pkl outputs -> one .h5 file")
    p.add_argument("folder")
    p.add_argument("out", metavar="OUT.h5")
    p.add_argument("--format", choices=FILE_FORMATS, help="the format to read in a mixed folder")
    p.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    p = sub.add_parser("merge", help="shard .h5 files -> one .h5 file")
    p.add_argument("out", metavar="OUT.h5")
    p.add_argument("inputs", metavar="IN.h5", nargs="+")
    p.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    args = parser.parse_args(argv)
    setup_logging(level=logging.WARNING)

    try:
        if args.command == "summary":
            with load(args.path, format=args.format) as features:
                s = summarize(features)
            print(json.dumps(s, indent=1) if args.json else printable_text(format_features_summary(s)))
            return 0
        if args.command == "pack":
            packed, left = pack(args.folder, args.out, args.force, args.format)
            print(f"{printable_path(args.out)}: {packed} video{'' if packed == 1 else 's'} packed"
                  + (f"; {left} incomplete set{'' if left == 1 else 's'} left out" if left else ""))
            return 1 if left else 0
        count, left = merge_h5(args.out, args.inputs, args.force)
        print(f"{printable_path(args.out)}: {count} video{'' if count == 1 else 's'} from "
              f"{len(args.inputs)} file{'' if len(args.inputs) == 1 else 's'}"
              + (f"; {left} incomplete or unreadable video{'' if left == 1 else 's'} left out"
                 if left else ""))
        return 1 if left else 0
    except (OutputError, OSError) as e:
        print(f"error: {printable_path(_message(e))}", file=sys.stderr)
        return 2
