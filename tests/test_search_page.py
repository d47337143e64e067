"""``--html PAGE.html``: the page in a real headless browser (Debian's chromium): every image
loads, the thumbnails on the screenshot are the frames the ffmpeg CLI extracts at those
times (within JPEG's tolerance), the players start at the hits; every string from the data
is escaped, a missing source is a placeholder and a note."""
import html.parser
import json
import os
import shutil
import subprocess
import sys
import urllib.parse

import av
import numpy as np
import pytest
import torch

import howto100m_cases as cases
from models.s3d_howto100m import search as search_module
from models.s3d_howto100m.random_weights import random_state
from models.s3d_howto100m.synthetic_outputs import write_folder
from videos import ffmpeg, synth

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RATE = 25  # the clips' frame rate: frame i is shown over [40 i, 40 (i + 1)) ms
HOSTILE = "<b>&\"x' #1%?"  # a file name and a query full of HTML (and of URL syntax)
# after load: each image's natural size and place, each player's resolved address
PROBE = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
  document.body.dataset.probe = JSON.stringify({
    images: [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, box: box(i),
                                           complete: i.complete, hit: i.closest("li").dataset.rank})),
    videos: [...document.querySelectorAll("video")].map(v => ({
      src: new URL(v.getAttribute("src"), document.baseURI).href, hit: v.closest("li").dataset.rank})),
    notes: [...document.querySelectorAll(".note")].map(n => n.closest("li").dataset.rank),
    bold: document.querySelectorAll("b").length, scripts: document.scripts.length,
    names: [...document.querySelectorAll(".name")].map(n => n.textContent),
    query: document.querySelector("h2 q").textContent});
});
</script>"""


def clip(path, size):
    """2 s at 25 fps whose hue turns 25 degrees a frame: consecutive frames differ clearly."""
    return synth(path, seconds=2, rate=str(RATE), size=size, extra=["-vf", "hue=h=n*25"])


def stacks_of(seconds=2.0):
    """Outputs as extraction makes them at 10 fps, stack 8, step 6: [0, 800), [600, 1400)..."""
    starts = np.arange(0, seconds * 1000 - 800 + 1, 600, dtype=np.float64)
    return np.stack([starts, starts + 800], axis=1)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Two clips (one named with HTML in it, in a folder beside the page's), a third video
    that is gone; the page of every stack for a query that is HTML too."""
    work = tmp_path_factory.mktemp("page")
    (work / "clips").mkdir()
    (work / "site").mkdir()
    videos = [clip(str(work / "clips" / "land.mp4"), "320x240"),
              clip(str(work / "clips" / f"{HOSTILE}.mp4"), "240x320"),
              str(work / "clips" / "gone.mp4")]
    rng = np.random.default_rng(0)
    stamps = stacks_of()
    write_folder(str(work / "out"), [
        (v, {"s3d_howto100m": np.zeros((len(stamps), 1024), np.float32),
             "video_embedding": rng.standard_normal((len(stamps), 512)).astype(np.float32),
             "timestamps_ms": stamps, "fps": np.float64(10)}) for v in videos])
    torch.save(random_state(0), work / "s3d_howto100m.pth")
    words = cases.save_words(str(work / "s3d_dict.npy"))
    query = f"cut tomato {HOSTILE}"
    out = work / "site" / "hits.html"
    proc = subprocess.run(
        [sys.executable, "-m", "models.s3d_howto100m.search", str(work / "out"), query, "--top_k", "9",
         "--html", str(out), "--json", "--weights_path", str(work / "s3d_howto100m.pth"),
         "--dict_path", words], capture_output=True, text=True, check=False, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(hits) == 9 and {h["path"] for h in hits} == set(videos)
    return {"work": work, "page": out, "hits": hits, "videos": videos, "query": query,
            "stderr": proc.stderr}


def test_the_page_escapes_and_notes_without_a_browser(page):
    """The markup itself (no browser needed): no tag from the data, the text as given."""
    text = page["page"].read_text(encoding="utf-8")
    assert "<b>" not in text and "&lt;b&gt;&amp;&quot;x&#x27; #1%?" in text

    class Texts(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.classes, self.found = [], {}

        def handle_starttag(self, tag, attrs):
            self.classes.append(dict(attrs).get("class"))

        def handle_endtag(self, tag):
            self.classes.pop()

        def handle_data(self, data):
            if self.classes and self.classes[-1]:
                self.found.setdefault(self.classes[-1], []).append(data)

    parser = Texts()
    parser.feed(text.replace("<img", "<img/").replace("<meta charset=\"utf-8\">", ""))
    assert parser.found["path"] == [h["path"] for h in page["hits"]]
    notes = parser.found["note"]
    assert len(notes) == 3 and all(n.startswith("the source cannot be found (No such file")
                                   for n in notes)
    assert "gone.mp4: frames" not in page["stderr"]  # a missing source is no decoding error


def _chromium(work, url, *args):
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--force-color-profile=srgb", "--window-size=1000,1800",
         f"--user-data-dir={work / 'chromium-profile'}", "--virtual-time-budget=5000", *args, url],
        capture_output=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode("utf-8")


def _png(path):
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: the page is not "
                                              "checked in a browser")
def test_the_page_in_a_browser(page):
    """A copy of the page with a probe script (in the same folder, so its relative players
    still point at the clips): the DOM after load, then a screenshot of the same layout."""
    work, hits = page["work"], page["hits"]
    probed = page["page"].with_name("probed.html")
    probed.write_text(page["page"].read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    url = probed.as_uri()
    dom = _chromium(work, url, "--dump-dom")
    probe = json.loads(html.unescape(dom.split('data-probe="', 1)[1].split('"', 1)[0]))
    shot = work / "shot.png"
    _chromium(work, url, f"--screenshot={shot}")
    pixels = _png(shot)

    assert probe["query"] == page["query"] and probe["bold"] == 0 and probe["scripts"] == 1
    assert probe["names"] == [os.path.basename(h["path"]) for h in hits]
    real = [rank for rank, h in enumerate(hits, 1) if not h["path"].endswith("gone.mp4")]
    assert sorted(int(r) for r in probe["notes"]) == \
        [rank for rank, h in enumerate(hits, 1) if h["path"].endswith("gone.mp4")]
    assert len(probe["images"]) == 3 * len(real)
    assert all(i["complete"] and i["w"] == 160 and i["h"] > 0 for i in probe["images"])

    frames = {}
    worst = 0.0
    for image_number, image in enumerate(probe["images"]):
        hit = hits[int(image["hit"]) - 1]
        t = hit["start_ms"] + (hit["end_ms"] - hit["start_ms"]) * (2 * (image_number % 3) + 1) / 6
        path = hit["path"]
        if path not in frames:  # every frame of the clip, as the ffmpeg CLI decodes and scales it
            raw = ffmpeg("-i", path, "-vf", "scale=160:-2:flags=bilinear", "-f", "rawvideo",
                         "-pix_fmt", "rgb24", "-")
            frames[path] = np.frombuffer(raw, np.uint8).reshape(-1, image["h"], 160, 3)
        x, y, w, h = (int(round(v)) for v in image["box"])
        assert (w, h) == (160, image["h"])  # shown at its natural size: pixels 1:1
        shown = pixels[y:y + h, x:x + w].astype(np.int16)
        errors = np.abs(frames[path].astype(np.int16) - shown).mean(axis=(1, 2, 3))
        expected = int(t * RATE // 1000)  # the frame shown at time t
        assert int(np.argmin(errors)) == expected, (path, t, errors.round(1))
        worst = max(worst, float(errors[expected]))
        assert errors[expected] < 6.0 and np.delete(errors, expected).min() > 2 * errors[expected]
    assert worst > 0.5  # JPEG: close, not equal

    players = {int(v["hit"]): v["src"] for v in probe["videos"]}
    assert sorted(players) == real
    for rank in real:
        hit = hits[rank - 1]
        address, fragment = players[rank].split("#")
        assert urllib.parse.unquote(address) == "file://" + hit["path"]
        assert fragment == f"t={hit['start_ms'] / 1000:.3f},{hit['end_ms'] / 1000:.3f}"
    shutil.copy(shot, work / "page.png")


def test_one_section_per_query(tmp_path):
    from models.s3d_howto100m.search import Hit
    from models.s3d_howto100m.search_page import write_page

    page = tmp_path / "page.html"
    hits = [[Hit(str(tmp_path / "a.mp4"), 61000.0, 64200.0, 2.5)], []]
    write_page(str(page), ["first <query>", "second"], hits)
    text = page.read_text(encoding="utf-8")
    assert text.count('<section class="query">') == 2
    assert "<h2>query: <q>first &lt;query&gt;</q></h2>" in text and "<p>no hits</p>" in text
    assert '<div class="span" title="61.00-64.20 s">1:01&ndash;1:04</div>' in text
    assert "<video" not in text and "the source cannot be found" in text
