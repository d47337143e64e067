"""``summary``: a folder's (or file's) videos, stacks and the shapes of each key, from shapes
alone."""
import logging
from collections import Counter
from typing import Any, Dict, Optional, Tuple

from utils.outputs.features.names import OutputError
from utils.outputs.features.read import Features

log = logging.getLogger(__name__)


def _shape_text(shape: Tuple[int, ...], tv: Optional[int]) -> str:
    """``(Tv, 1024)``: the shape, its first dimension named when it is the video's Tv."""
    dims = ["Tv" if i == 0 and d == tv else str(d) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def summarize(features: Features) -> Dict[str, Any]:
    """Videos, stacks (Tv summed), and each key's shapes and dtypes (with how many videos
    have each), from shapes alone (HDF5 and ``.npy``: no data read)."""
    stacks = damaged = 0
    variants: Dict[str, Counter] = {}
    for name in features:
        try:
            shapes = features.shapes(name)
        except OutputError as e:  # one damaged video: one warning, not the summary
            log.warning("%s; not counted", e)
            damaged += 1
            continue
        stamps = shapes.get("timestamps_ms")
        tv = stamps[0][0] if stamps and len(stamps[0]) == 2 else None
        stacks += tv or 0
        for key, (shape, dtype) in shapes.items():
            variants.setdefault(key, Counter())[(_shape_text(tuple(shape), tv), str(dtype))] += 1
    order = list(features.output_keys) + sorted(set(variants) - set(features.output_keys))
    return {
        "source": features.source, "format": features.format,
        "files": list(getattr(features, "paths", [])) or None,
        "feature_type": features.feature_type, "videos": len(features) - damaged,
        "damaged": damaged, "stacks": stacks,
        "keys": {key: [{"shape": shape, "dtype": dtype, "videos": n}
                       for (shape, dtype), n in variants[key].most_common()]
                 for key in order if key in variants},
        "incomplete": len(features.incomplete), "strays": len(features.strays),
    }


def format_features_summary(s: Dict[str, Any]) -> str:
    """``summarize``'s numbers as the lines ``summary`` prints."""
    files = f" ({len(s['files'])} file{'' if len(s['files']) == 1 else 's'})" if s["files"] else ""
    lines = [f"{s['source']}: {s['format']}{files}, feature_type {s['feature_type']}",
             f"videos: {s['videos']}",
             f"stacks: {s['stacks']} (Tv summed over the videos)",
             "keys:"]
    for key, found in s["keys"].items():
        variants = "; ".join(f"{v['shape']} {v['dtype']}"
                          + (f" ({v['videos']} videos)" if len(found) > 1 else "") for v in found)
        lines.append(f"  {key}: {variants}")
    if s.get("damaged"):
        lines.append(f"damaged: {s['damaged']} video(s) that cannot be read, not counted")
    if s["incomplete"]:
        lines.append(f"incomplete: {s['incomplete']} video(s) lacking a key (a file or "
                     "dataset), not counted")
    if s.get("strays"):
        lines.append(f"strays: {s['strays']} set(s) of files with another network's keys, "
                     "not counted")
    return "\n".join(lines)
