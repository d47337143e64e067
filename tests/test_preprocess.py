"""Frame geometry and pixels of both presets, and cutting frames into stacks.

``kylemin`` must equal, bit for bit, ``ffmpeg -i V -vf "fps=N,scale=W:H:flags=bilinear,
format=rgb24,crop=224:224:X:Y"``. ``video_features`` must reproduce the incumbent's
``F.interpolate(scale_factor=224 / min(H, W), recompute_scale_factor=False)`` sampling grid.
"""
import math

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.video.decode import VideoDecoder
from utils.video.preprocess import (CROP, KyleminFrames, VideoFeaturesFrames, crop_offsets,
                              preset_class, resize_crop_float, resized_size)
from utils.video.stacks import StackCutter, num_stacks
from videos import cli_frames, clip_maker, ffmpeg, kylemin_vf


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """``clip(name, **synth_kwargs)``: a synthetic one-second clip, made once per module."""
    return clip_maker(tmp_path_factory.mktemp("preprocess_clips"), seconds=1)


CLIPS = {
    "portrait.mp4": dict(size="240x400", rate="30"),
    # testsrc keeps odd sizes (testsrc2 rounds them down to even); 4:4:4 allows odd sizes
    "odd_97x223.mp4": dict(size="97x223", source="testsrc", pix_fmt="yuv444p", rate="25"),
    "mpeg4_98x226.avi": dict(size="98x226", codec="mpeg4", rate="25"),
    "full_range_bt709.mp4": dict(size="320x180", rate="25",
                                 extra=["-color_range", "pc", "-colorspace", "bt709"]),
    "ten_bit.mkv": dict(size="200x120", pix_fmt="yuv420p10le", rate="25"),
}


def test_resized_size_and_offsets():
    assert resized_size(320, 240) == (298, 224)
    assert resized_size(240, 320) == (224, 298)
    assert resized_size(1280, 720) == (398, 224)
    assert resized_size(97, 223) == (224, 514)     # 223 * 224 / 97 = 514.97, floored
    assert resized_size(224, 224) == (224, 224)
    assert crop_offsets(298, 224) == (37, 0)
    assert crop_offsets(224, 514) == (0, 145)
    assert crop_offsets(299, 224) == (38, 0)       # Python's round: 37.5 -> 38
    assert crop_offsets(297, 224) == (36, 0)       # and 36.5 -> 36


def kylemin_vs_cli(path, fps):
    with av.open(path) as c:
        w, h = c.streams.video[0].width, c.streams.video[0].height
        rotation = next(c.decode(video=0)).rotation
    if rotation % 180:
        w, h = h, w
    assert min(resized_size(w, h)) == CROP
    cli = cli_frames(path, kylemin_vf(w, h, fps), CROP, CROP)
    preset = preset_class("kylemin")()
    with VideoDecoder(path, fps) as d:
        ours = [preset(t.frame) for t in d]
    assert len(ours) == len(cli), f"CLI {len(cli)} frames, ours {len(ours)}"
    ours = np.stack(ours)
    assert ours.dtype == np.uint8 and ours.shape == cli.shape
    bad = [i for i in range(len(cli)) if not np.array_equal(ours[i], cli[i])]
    assert not bad, f"frames differing from the CLI's: {bad[:10]}, max |diff| " \
                    f"{np.abs(ours.astype(int) - cli).max()}"


def test_kylemin_bit_exact_on_sample(sample_video):
    kylemin_vs_cli(sample_video, 25)


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_kylemin_bit_exact(clip, name):
    kylemin_vs_cli(clip(name, **CLIPS[name]), 25)


def test_kylemin_bit_exact_rotated(clip, tmp_path):
    """A landscape file displayed as portrait: rotate first, then resize and crop."""
    path = str(tmp_path / "rot90.mp4")
    ffmpeg("-display_rotation", "90", "-i", clip("land.mp4", size="320x180", rate="25"),
           "-c", "copy", path)
    kylemin_vs_cli(path, 25)


def test_kylemin_to_input_range():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8)
    assert KyleminFrames.to_input(x).tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)


# --- video_features ----------------------------------------------------------------------

def incumbent(rgb: torch.Tensor) -> torch.Tensor:
    """The incumbent's resize and centre crop, (H, W, 3) uint8 -> (h, w, 3) float, h, w <= 224."""
    h, w = rgb.shape[:2]
    x = rgb.permute(2, 0, 1).unsqueeze(0).float() / 255
    x = F.interpolate(x, scale_factor=224 / min(h, w), mode="bilinear", align_corners=False,
                      recompute_scale_factor=False)
    rh, rw = x.shape[2:]
    top, left = round((rh - 224) / 2), round((rw - 224) / 2)
    return x[0, :, top:top + 224, left:left + 224].permute(1, 2, 0)


def bilinear_reference(rgb: np.ndarray, scale: float, top: int, left: int) -> np.ndarray:
    """float64 bilinear (align_corners=False) sampling at source (i + 0.5) / scale - 0.5."""
    img = rgb.astype(np.float64) / 255

    def axis(n_in, first):
        src = np.maximum((np.arange(first, first + CROP) + 0.5) / scale - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, ly = axis(img.shape[0], top)
    x0, x1, lx = axis(img.shape[1], left)
    ly, lx = ly[:, None, None], lx[None, :, None]
    rows0 = img[y0][:, x0] * (1 - lx) + img[y0][:, x1] * lx
    rows1 = img[y1][:, x0] * (1 - lx) + img[y1][:, x1] * lx
    return rows0 * (1 - ly) + rows1 * ly


def random_rgb(h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


@pytest.mark.parametrize("h, w", [(240, 320), (320, 240), (720, 1280), (224, 300)])
def test_video_features_equals_incumbent(h, w):
    rgb = random_rgb(h, w)
    ref = incumbent(rgb)
    assert ref.shape == (224, 224, 3)
    ours = resize_crop_float(rgb)
    assert ours.dtype == torch.float32 and ours.shape == (224, 224, 3)
    assert torch.equal(ours, ref)


# Short sides where the incumbent's float floor(s * (224 / s)) gives 223.
SHORT_223 = [s for s in range(225, 400) if math.floor(s * (224 / s)) < 224]


def test_short_sides_that_lose_a_row():
    assert SHORT_223[:7] == [277, 284, 299, 306, 314, 318, 332]


@pytest.mark.parametrize("h, w", [(277, 370), (400, 299), (318, 500), (332, 332), (299, 598)])
def test_video_features_where_incumbent_gives_223(h, w):
    """The incumbent gives 223 rows (or columns); we give 224 on the same sampling grid.

    Its resized image is the top-left part of ours (same scale, so the same source position for
    every output index; only the output size differs), and both centre crops start at the same
    offsets (round(-0.5) == 0, and a long side one shorter rounds to the same offset here). So
    its whole crop equals our crop's top-left part exactly; our extra row/column continues the
    same grid (checked against a float64 bilinear reference).
    """
    rgb = random_rgb(h, w, seed=h)
    ref = incumbent(rgb)
    rh, rw = ref.shape[:2]
    assert min(rh, rw) == 223 and max(rh, rw) <= 224
    ours = resize_crop_float(rgb)
    assert ours.shape == (224, 224, 3)
    assert torch.equal(ours[:rh, :rw], ref)

    scale = 224 / min(h, w)
    out_w, out_h = resized_size(w, h)
    left, top = crop_offsets(out_w, out_h)
    expect = bilinear_reference(rgb.numpy(), scale, top, left)
    # torch computes source positions in float32 (about 3e-5 off at x ~ 300); a grid off by
    # the size=/scale_factor difference or by one pixel is off by > 0.05 on random pixels
    assert np.abs(ours.numpy() - expect).max() < 2e-4
    last = (slice(rh, None), slice(None)) if rh == 223 else (slice(None), slice(rw, None))
    assert np.abs(ours.numpy()[last] - expect[last]).max() < 2e-4  # what the incumbent lacks


@pytest.mark.parametrize("h, w", [(240, 320), (720, 1280), (277, 370)])
def test_video_features_size_instead_of_scale_factor_differs(h, w):
    """Resizing with ``size=`` (scale = in/out) samples elsewhere: that mistake must show."""
    rgb = random_rgb(h, w)
    out_w, out_h = resized_size(w, h)
    x = rgb.permute(2, 0, 1).unsqueeze(0).float() / 255
    wrong = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)
    left, top = crop_offsets(out_w, out_h)
    wrong = wrong[0, :, top:top + 224, left:left + 224].permute(1, 2, 0)
    diff = (resize_crop_float(rgb) - wrong).abs()
    assert diff.max() > 0.05 and diff.mean() > 1e-3


def test_video_features_bilinear_reference():
    rgb = random_rgb(240, 320)
    expect = bilinear_reference(rgb.numpy(), 224 / 240, 0, 37)
    assert np.abs(resize_crop_float(rgb).numpy() - expect).max() < 2e-4


@pytest.mark.parametrize("name", ["full_range_bt709.mp4", "ten_bit.mkv"])
def test_video_features_preset_on_decoded_frames(clip, name):
    """RGB conversion as the CLI's ``format=rgb24`` (PyAV's ``to_ndarray(format='rgb24')``
    differs from it on 10-bit 4:2:0), then ``resize_crop_float``."""
    path = clip(name, **CLIPS[name])
    with av.open(path) as c:
        w, h = c.streams.video[0].width, c.streams.video[0].height
    cli = cli_frames(path, "fps=25,format=rgb24", w, h)
    preset = preset_class("video_features")()
    assert isinstance(preset, VideoFeaturesFrames)
    with VideoDecoder(path, 25) as d:
        ours = [preset(t.frame) for t in d]
    assert len(ours) == len(cli)
    for mine, rgb in zip(ours, cli):
        assert mine.dtype == np.float32 and mine.shape == (224, 224, 3)
        expect = resize_crop_float(torch.from_numpy(rgb.copy())).numpy()
        assert np.array_equal(mine, expect), f"max |diff| {np.abs(mine - expect).max()}"


def test_unknown_preset():
    with pytest.raises(ValueError, match="kylemin, video_features"):
        preset_class("imagenet")()


# --- stacks ------------------------------------------------------------------------------

def fake_frames(n, last_ms=17.0):
    """n frames at 40 ms; frame k holds k; each ends where the next starts, the last after
    ``last_ms`` (not 40, so 'the end of the last frame' is told apart from 'start + 40')."""
    for k in range(n):
        end = (k + 1) * 40.0 if k + 1 < n else k * 40.0 + last_ms
        yield np.full((2, 2, 3), k, np.uint8), k * 40.0, end


@pytest.mark.parametrize("n, stack, step", [
    (10, 4, 4), (12, 4, 4),        # step == stack, with and without a partial tail
    (10, 4, 6), (13, 4, 6),        # step > stack: frames skipped between stacks
    (10, 4, 2), (11, 4, 3),        # step < stack: overlap
    (4, 4, 4), (5, 4, 1),
    (3, 4, 4), (0, 4, 4),          # shorter than one stack: nothing
])
def test_stacks(n, stack, step):
    cutter = StackCutter(stack, step)
    stacks = list(cutter(fake_frames(n)))
    expected = (n - stack) // step + 1 if n >= stack else 0
    assert len(stacks) == expected == num_stacks(n, stack, step)
    assert cutter.num_frames == n
    for i, s in enumerate(stacks):
        first = i * step
        assert s.index == i
        assert s.frames.shape == (stack, 2, 2, 3)
        assert s.frames[:, 0, 0, 0].tolist() == list(range(first, first + stack))
        assert s.start_ms == first * 40.0
        after = first + stack
        assert s.end_ms == (after * 40.0 if after < n else (n - 1) * 40.0 + 17.0)


def test_stack_sizes_must_be_positive():
    with pytest.raises(ValueError):
        StackCutter(0, 4)
    with pytest.raises(ValueError):
        StackCutter(4, 0)


def test_stacks_of_a_decoded_video(sample_video):
    """The SPEC's example: at 25 fps, stack i of 64 frames is [2560 i, 2560 (i + 1))."""
    with VideoDecoder(sample_video, 25) as d:
        stacks = list(StackCutter(64, 64)((np.zeros(1, np.uint8), t.start_ms, t.end_ms)
                                          for t in d))
    assert [(s.start_ms, s.end_ms) for s in stacks] == [(2560.0 * i, 2560.0 * (i + 1))
                                                        for i in range(3)]
    with VideoDecoder(sample_video, None) as d:  # 299 frames at 30000/1001 fps, no resampling
        stacks = list(StackCutter(101, 99)((np.zeros(1, np.uint8), t.start_ms, t.end_ms)
                                           for t in d))
    assert len(stacks) == 3  # starts 0, 99, 198; the last ends with frame 298, the last one
    assert stacks[0].end_ms == pytest.approx(101 * 1001 / 30)  # start of frame 101
    assert stacks[2].start_ms == pytest.approx(198 * 1001 / 30)
    assert stacks[2].end_ms == pytest.approx(299 * 1001 / 30)  # end of the last frame
