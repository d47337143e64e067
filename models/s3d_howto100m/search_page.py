"""The search's hits as one self-contained HTML page (``--html PAGE.html``).

Per query a section; per hit its rank, score, the video's name and path, ``[start, end)`` as
m:ss, three frames from inside the stack (at 1/6, 1/2 and 5/6 of it: each the frame shown at
that time, decoded by PyAV through ``utils.video.decode``'s opening, rotation and filter graph,
scaled to ``THUMB_WIDTH`` pixels wide, embedded as JPEG data URIs), and a ``<video>`` player
whose media fragment (``#t=start,end``) starts it at the hit, its source given relative to the
page's folder.  A source that is missing, not a regular file or unreadable gets a placeholder
and a note; the page is always written.  Every string from the data (paths, queries, error
messages) is HTML-escaped; the file is written atomically.
"""
import base64
import html
import logging
import os
import stat
import urllib.parse
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple

import av
import av.error

from utils.errors import one_line
from utils.files import write_bytes
from utils.video.decode import build_graph, drain, open_video, rotation_filters, start_time_shift

log = logging.getLogger(__name__)

THUMB_WIDTH = 160
THUMBS = 3  # frames per hit
MAX_DECODED = 2000  # frames decoded for one hit at most (from the keyframe before it)
JPEG_QUALITY = "3"  # mjpeg qscale (2 best .. 31 worst)

STYLE = """
body { font: 14px/1.4 sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
ol.hits { list-style: none; padding: 0; margin: 0; }
li.hit { display: flex; gap: 12px; align-items: flex-start; padding: 8px 0;
         border-top: 1px solid #ddd; }
.meta { width: 220px; flex: none; overflow-wrap: anywhere; }
.rank { font-weight: bold; font-size: 16px; }
.path, .note { color: #666; font-size: 12px; }
.frames { display: flex; gap: 4px; flex: none; }
.frames img { display: block; image-rendering: auto; }
.placeholder { width: 160px; height: 90px; background: #eee; color: #888; display: flex;
               align-items: center; justify-content: center; font-size: 12px; }
video { width: 192px; background: #000; flex: none; }
"""


def clock(ms: float) -> str:
    """``m:ss`` (whole seconds, floored)."""
    seconds = max(0, int(ms // 1000))
    return f"{seconds // 60}:{seconds % 60:02d}"


def thumb_times(start_ms: float, end_ms: float) -> List[float]:
    return [start_ms + (end_ms - start_ms) * (2 * j + 1) / (2 * THUMBS) for j in range(THUMBS)]


def _shown(text: str) -> str:
    """``text`` HTML-escaped, an undecodable byte of a file name shown as ``\\xe9``."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return html.escape(text, quote=True)


def _jpeg(frame: av.VideoFrame) -> bytes:
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"qmin": JPEG_QUALITY, "qmax": JPEG_QUALITY}
    return b"".join(bytes(p) for p in encoder.encode(frame) + encoder.encode(None))


def _small(frame: av.VideoFrame, time_base: Fraction) -> av.VideoFrame:
    """The frame upright (the stream's rotation, as ``VideoDecoder`` applies it), scaled to
    ``THUMB_WIDTH`` wide (FFmpeg's bilinear ``scale``), full-range 4:2:0 for JPEG."""
    filters = rotation_filters(frame.rotation or 0) + [
        ("scale", f"{THUMB_WIDTH}:-2:flags=bilinear"), ("format", "yuvj420p")]
    graph, src, sink = build_graph(frame, time_base, filters)
    src.push(frame)
    src.push(None)
    return next(iter(drain(sink)))


def _decode_from(container, stream, shift: int, seek_ms: Optional[float], times: List[float]):
    """The frames shown at ``times`` (sorted, ms): the last frame starting at or before each;
    None when the seek landed after the first time (then decode from the start)."""
    time_base = Fraction(stream.time_base)
    if seek_ms is not None:
        container.seek(shift + int(Fraction(seek_ms) / 1000 / time_base), stream=stream,
                       backward=True, any_frame=False)
    chosen: List[av.VideoFrame] = []
    previous = None
    decoded = 0
    codec = stream.codec_context
    for packet in container.demux(stream):
        for frame in codec.decode(packet):
            if frame.pts is None:
                continue
            decoded += 1
            if decoded > MAX_DECODED:
                raise ValueError(f"over {MAX_DECODED} frames decoded to reach "
                                 f"{clock(times[len(chosen)])}")
            at_ms = float((frame.pts - shift) * time_base * 1000)
            while len(chosen) < len(times) and at_ms > times[len(chosen)] + 1e-6:
                if previous is None:
                    if seek_ms is not None:
                        return None  # the seek went past the time
                    previous = frame  # a time before the first frame: the first frame
                chosen.append(previous)
            if len(chosen) == len(times):
                return chosen
            previous = frame
    if previous is None:
        raise ValueError("no frame decoded")
    return chosen + [previous] * (len(times) - len(chosen))  # past the end: the last frame


def thumbnails(path: str, times_ms: Sequence[float]) -> List[bytes]:
    """JPEG bytes of the frames shown at ``times_ms`` (within one stack); raises for a video
    that cannot be read (``ExtractionError``, ``ValueError``, PyAV's errors)."""
    times = sorted(times_ms)
    container, stream = open_video(path)
    try:
        time_base = Fraction(stream.time_base)
        shift = start_time_shift(container.start_time, time_base)
        frames = _decode_from(container, stream, shift, times[0], times)
        if frames is None:
            container.close()
            container, stream = open_video(path)
            frames = _decode_from(container, stream, shift, None, times)
        small = {id(f): _jpeg(_small(f, time_base)) for f in frames}
        by_time = dict(zip(times, (small[id(f)] for f in frames)))
        return [by_time[t] for t in times_ms]
    finally:
        container.close()


def _source(path: str) -> Tuple[Optional[str], str]:
    """``(absolute path, '')`` of a readable regular file, else ``(None, why not)``."""
    absolute = os.path.abspath(path)
    try:
        if not stat.S_ISREG(os.stat(absolute).st_mode):
            return None, "the source is not a regular file"
    except OSError as e:
        return None, f"the source cannot be found ({e.strerror or e})"
    if not os.access(absolute, os.R_OK):
        return None, "the source cannot be read (permissions)"
    return absolute, ""


def media_url(video: str, page: str) -> str:
    """The video's address from the page: relative to the page's folder (``file://`` and
    absolute when there is no relative path, another drive), percent-encoded."""
    try:
        rel = os.path.relpath(video, os.path.dirname(os.path.abspath(page)))
        return urllib.parse.quote(os.fsencode(rel).replace(os.sep.encode(), b"/"))
    except ValueError:
        return "file://" + urllib.parse.quote(os.fsencode(os.path.abspath(video)))


def _hit_html(rank: int, hit, page: str) -> str:
    times = thumb_times(hit.start_ms, hit.end_ms)
    span = f"{clock(hit.start_ms)}&ndash;{clock(hit.end_ms)}"
    exact = f"{hit.start_ms / 1000:.2f}-{hit.end_ms / 1000:.2f} s"
    parts = [f'<li class="hit" data-rank="{rank}" data-start-ms="{hit.start_ms:g}" '
             f'data-end-ms="{hit.end_ms:g}">',
             '<div class="meta">',
             f'<div><span class="rank">{rank}</span> &middot; score '
             f'<span class="score">{hit.score:.4f}</span></div>',
             f'<div class="span" title="{exact}">{span}</div>',
             f'<div class="name">{_shown(os.path.basename(hit.path))}</div>',
             f'<div class="path">{_shown(hit.path)}</div>']
    source, problem = _source(hit.path)
    images: List[bytes] = []
    if source is not None:
        try:
            images = thumbnails(source, times)
        except Exception as e:  # noqa: BLE001 -- any decoding error: a note, never a failed page
            problem = f"frames cannot be decoded ({one_line(e, 200)})"
            log.warning("%s: %s", hit.path, problem)
    if problem:
        parts.append(f'<p class="note">{_shown(problem)}</p>')
    parts.append("</div>")
    if images:
        parts.append('<div class="frames">' + "".join(
            f'<img class="thumb" data-time-ms="{t:.3f}" alt="frame at {t / 1000:.2f} s" '
            f'src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode("ascii")}">'
            for t, jpeg in zip(times, images)) + "</div>")
    else:
        parts.append('<div class="frames"><div class="placeholder">no frames</div></div>')
    if source is not None:
        fragment = f"#t={hit.start_ms / 1000:.3f},{hit.end_ms / 1000:.3f}"
        parts.append(f'<video controls preload="none" '
                     f'src="{html.escape(media_url(source, page) + fragment)}"></video>')
    parts.append("</li>")
    return "\n".join(parts)


def page_html(queries: Sequence[str], results: Sequence[Sequence], page: str) -> str:
    title = queries[0] if len(queries) == 1 else f"{len(queries)} queries"
    body = []
    for query, hits in zip(queries, results):
        body.append(f'<section class="query"><h2>query: <q>{_shown(query)}</q></h2>')
        if hits:
            body.append('<ol class="hits">')
            body.extend(_hit_html(rank, hit, page) for rank, hit in enumerate(hits, 1))
            body.append("</ol>")
        else:
            body.append("<p>no hits</p>")
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>search: {_shown(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>search: {_shown(title)}</h1>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def write_page(page: str, queries: Sequence[str], results: Sequence[Sequence]) -> None:
    """Write the page (atomically); ``results``: the hits of each query, best first."""
    write_bytes(page, page_html(queries, results, page).encode("utf-8"))
