"""The speed options change how features are computed, never what they are; the queues are bounded.

Nothing here is timed: speed is measured by benchmarks/bench_s3d.py.
"""
import contextlib
import logging
import queue
import sys
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from batch_helpers import rel_norm
import models.s3d.inference as inference
from models.s3d import ExtractS3D
from models.s3d.inference import Conv3dAs2d, fold_batchnorm, inference_model, resolve_precision
from utils.errors import ExtractionError
from utils.video.prefetch import prefetch_jobs
from utils.console import RunProgress

# The sample clip at 4 fps gives 40 frames: 5 stacks of the network's minimum (13 frames)
# 6 apart, so batch_size=4 makes one full batch and one partial one.
SMALL = dict(device="cpu", extraction_fps=4, stack_size=13, step_size=6)




def wait_until(predicate, timeout: float = 20.0) -> bool:
    """Poll ``predicate`` (a synchronisation helper: no duration is asserted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def parked_producers() -> int:
    """How many prefetch threads are parked: waiting in ``threading.Condition.wait`` for the
    consumer alone to wake them, either for room in a full ``queue.Queue`` (a producer as far
    ahead as it may go) or for the consumer to move on (a worker not allowed the next job yet).

    While the consumer takes nothing, a parked thread makes nothing more: once every producer
    thread is parked, what the sources have produced is final, and can be checked exactly.
    """
    frames = sys._current_frames()
    parked = 0
    for thread in threading.enumerate():
        frame = frames.get(thread.ident) if thread.name.startswith("prefetch") else None
        if frame is None or frame.f_code is not threading.Condition.wait.__code__:
            continue
        caller = frame.f_back
        if (caller is not None and caller.f_code is queue.Queue.put.__code__
                and not caller.f_locals["self"].full()):
            continue  # the consumer made room: it is about to put its item and go on
        parked += 1
    return parked


def prefetch_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("prefetch"))


@pytest.fixture
def close_after():
    """``close_after(generator)``: closed when the test ends, failed or not. One left to the
    garbage collector joins its threads wherever collection happens to run, possibly inside
    ``threading.enumerate`` (holding the lock an ending thread needs): a hang, not a failure."""
    opened = []
    yield lambda generator: opened.append(generator) or generator
    for generator in reversed(opened):
        generator.close()


@pytest.fixture(scope="module")
def reference(random_model, sample_video):
    """The plain eager forward: the loaded network (BatchNorm unfolded) on NCDHW input."""
    extractor = ExtractS3D(model=random_model, num_workers=0, **SMALL)
    extractor.runner.net = lambda x: random_model(x.contiguous())
    out = extractor.extract(sample_video, with_logits=True)
    assert out["s3d"].shape == (5, 1024)
    return out


@pytest.fixture(scope="module")
def default_extractor(random_model):
    return ExtractS3D(model=random_model, **SMALL)


@pytest.fixture(scope="module")
def default_out(default_extractor, sample_video):
    return default_extractor.extract(sample_video, with_logits=True)


# -- BatchNorm folding ----------------------------------------------------------------------
def test_folded_network_equals_plain(random_model):
    x = torch.rand(2, 3, 13, 112, 112, generator=torch.Generator().manual_seed(3)) * 2 - 1
    folded = inference_model(random_model, torch.device("cpu"))
    assert not any(isinstance(m, (nn.BatchNorm3d, nn.Conv3d)) for m in folded.modules())
    with torch.inference_mode():
        want_f, want_l = random_model(x)
        got_f, got_l = folded(x.contiguous(memory_format=torch.channels_last_3d))
    assert rel_norm(got_f, want_f) < 1e-6
    assert rel_norm(got_l, want_l) < 1e-6
    # and the two inputs are told apart, i.e. the weights are not degenerate
    assert rel_norm(want_f[0], want_f[1]) > 1e-2


def test_folding_leaves_the_loaded_model_alone(random_model):
    keys = list(random_model.state_dict())
    first = random_model.state_dict()["base.0.conv_s.weight"].clone()
    inference_model(random_model, torch.device("cpu"))
    assert list(random_model.state_dict()) == keys
    assert torch.equal(random_model.state_dict()["base.0.conv_s.weight"], first)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in random_model.modules()) > 50


def test_fold_single_pair_is_exact():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv3d(4, 6, 3, padding=1, bias=False), nn.BatchNorm3d(6, eps=1e-3))
    with torch.no_grad():
        block[1].running_mean.normal_()
        block[1].running_var.uniform_(0.1, 3.0)
        block[1].weight.uniform_(0.5, 2.0)
        block[1].bias.normal_()
    block.eval()
    x = torch.randn(2, 4, 5, 8, 8)
    want = block(x)
    fold_batchnorm(block)
    assert isinstance(block[1], nn.Identity)
    assert rel_norm(block(x).detach(), want.detach()) < 1e-6


@pytest.mark.parametrize("conv, kind", [
    (nn.Conv3d(3, 8, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), "spatial"),
    (nn.Conv3d(8, 8, (7, 1, 1), (2, 1, 1), (3, 0, 0), bias=True), "temporal"),
    (nn.Conv3d(8, 8, (3, 1, 1), 1, (1, 0, 0), bias=False), "temporal"),
    (nn.Conv3d(8, 5, 1, 1, bias=True), "linear"),
])
def test_conv3d_as_2d_matches(conv, kind):
    torch.manual_seed(1)
    conv.eval()
    as_2d = Conv3dAs2d(conv, kind)
    assert Conv3dAs2d.kind_of(conv) == kind
    x = torch.randn(2, conv.in_channels, 9, 12, 10)
    with torch.inference_mode():
        want = conv(x)
        for layout in (torch.channels_last_3d, torch.contiguous_format):
            got = as_2d(x.contiguous(memory_format=layout))
            assert got.shape == want.shape
            assert rel_norm(got, want) < 1e-6
        assert as_2d(x.contiguous(memory_format=torch.channels_last_3d)).is_contiguous(
            memory_format=torch.channels_last_3d)


def test_convs_that_have_no_2d_form_stay_3d():
    assert Conv3dAs2d.kind_of(nn.Conv3d(4, 4, 3, padding=1)) is None
    assert Conv3dAs2d.kind_of(nn.Conv3d(4, 4, (1, 3, 3), groups=2)) is None
    assert Conv3dAs2d.kind_of(nn.Conv3d(4, 4, (1, 3, 3), stride=(2, 1, 1))) is None


def test_fold_refuses_training_mode():
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(nn.Sequential(nn.Conv3d(1, 1, 1), nn.BatchNorm3d(1)).train())


# -- the defaults and batching agree with the plain forward ---------------------------------
def test_defaults_match_plain_eager_forward(default_out, reference):
    assert default_out["s3d"].dtype == np.float32
    assert rel_norm(default_out["s3d"], reference["s3d"]) < 1e-5
    assert rel_norm(default_out["logits"], reference["logits"]) < 1e-5
    np.testing.assert_array_equal(default_out["timestamps_ms"], reference["timestamps_ms"])
    assert float(default_out["fps"]) == float(reference["fps"])


def test_batch_size_1_and_4_agree(random_model, sample_video, default_out):
    out4 = ExtractS3D(model=random_model, batch_size=4, **SMALL).extract(sample_video)
    assert out4["s3d"].shape == default_out["s3d"].shape
    assert rel_norm(out4["s3d"], default_out["s3d"]) < 1e-5
    np.testing.assert_array_equal(out4["timestamps_ms"], default_out["timestamps_ms"])


def test_num_workers_0_and_1_give_the_same_outputs(random_model, sample_video, default_out):
    inline = ExtractS3D(model=random_model, num_workers=0, **SMALL)
    out0 = inline.extract(sample_video)
    assert rel_norm(out0["s3d"], default_out["s3d"]) < 1e-6
    np.testing.assert_array_equal(out0["timestamps_ms"], default_out["timestamps_ms"])


def test_default_batch_size(random_model):
    assert ExtractS3D(model=random_model, device="cpu").batch_size == 1


# -- several videos: decode ahead, results in order, failures in place ----------------------
def test_extract_many_in_order_with_failures(random_model, sample_video, default_out, tmp_path):
    extractor = ExtractS3D(model=random_model, num_workers=2, **SMALL)
    missing = str(tmp_path / "missing.mp4")
    results = list(extractor.extract_many([sample_video, missing, sample_video]))
    assert [r.path for r in results] == [sample_video, missing, sample_video]
    assert results[1].error is not None
    with pytest.raises(ExtractionError, match="no such file"):
        results[1].get()
    for r in (results[0], results[2]):
        assert rel_norm(r.get()["s3d"], default_out["s3d"]) < 1e-6
    assert extractor.stats.videos == 3 and extractor.stats.stacks == 10
    assert 0.0 <= extractor.stats.idle_share <= 1.0


def test_planned_videos_out_of_order(default_extractor, sample_video, default_out, tmp_path):
    other = str(tmp_path / "not_planned.mp4")
    with default_extractor.planned([other, sample_video]):
        # the first planned video is never asked for: skipped; an unplanned one runs alone
        out = default_extractor.extract(sample_video)
        with pytest.raises(ExtractionError):
            default_extractor.extract(other)
    assert rel_norm(out["s3d"], default_out["s3d"]) < 1e-6
    assert default_extractor._plan is None
    assert not [t for t in threading.enumerate() if t.name.startswith("prefetch")]


# -- precision ------------------------------------------------------------------------------
def test_precision_fp32_is_the_default_path(random_model, default_extractor):
    frames = torch.randint(0, 256, (1, 13, 224, 224, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(7))
    fp32 = ExtractS3D(model=random_model, precision="fp32", **SMALL)
    for got, want in zip(fp32.forward(frames), default_extractor.forward(frames)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cpu_falls_back_to_fp32_with_a_warning(random_model, precision, caplog,
                                                                 monkeypatch):
    # a CPU without native bfloat16 (tests/test_cpu_bf16.py covers the CPUs with it)
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        extractor = ExtractS3D(model=random_model, precision=precision, device="cpu")
    assert extractor.precision == "fp32"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"precision={precision}" in warnings[0] and "fp32" in warnings[0]


def test_unknown_precision_is_refused_and_every_precision_has_a_dtype():
    from models.s3d.inference import DTYPES
    from utils.config import ExtractorOptions, Precision

    with pytest.raises(ValueError, match="precision: Invalid value 'fp8'"):
        ExtractorOptions(precision="fp8")
    assert set(DTYPES) == {p.value for p in Precision}  # the option's list is the one list


def test_bf16_support_is_checked_on_the_gpu_asked_for(monkeypatch):
    """Runs without a GPU: CUDA's queries are stand-ins that record which device was asked."""
    asked = []

    @contextlib.contextmanager
    def on_device(device):
        asked.append(str(device))
        yield

    monkeypatch.setattr(torch.cuda, "device", on_device)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "an old GPU")
    with pytest.raises(ValueError) as info:
        resolve_precision("bf16", torch.device("cuda:1"))
    assert str(info.value) == "precision: bf16 is not supported by an old GPU; use fp16 or fp32"
    assert asked == ["cuda:1"]
    assert resolve_precision("fp16", torch.device("cuda:1")) == "fp16"


def test_precision_option_reaches_the_extractor(random_model, monkeypatch):
    from utils.config import ExtractionConfig, Precision

    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)  # falls back to fp32
    cfg = ExtractionConfig(video_paths=["x.mp4"], device="cpu", precision=Precision.bf16,
                           num_workers=0, batch_size=3)
    extractor = ExtractS3D.from_config(cfg, model=random_model)
    assert (extractor.precision, extractor.num_workers, extractor.batch_size) == ("fp32", 0, 3)


# -- compile --------------------------------------------------------------------------------
def test_compile_option_plumbing(random_model, sample_video, default_out, monkeypatch):
    """compile=true compiles with inductor under freezing, and feeds it only two input shapes."""
    import torch._inductor.config as inductor_config

    calls, shapes = [], []

    def fake_compile(model, **kwargs):
        calls.append(kwargs)

        def run(x):
            shapes.append((tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last_3d),
                           x.is_inference(), inductor_config.freezing))
            return model(x)
        return run

    monkeypatch.setattr(inference.torch, "compile", fake_compile)
    extractor = ExtractS3D(model=random_model, compile=True, batch_size=4, **SMALL)
    out = extractor.extract(sample_video)
    assert calls == [dict(backend="inductor", dynamic=False)]
    assert rel_norm(out["s3d"], default_out["s3d"]) < 1e-5
    # 5 stacks: one batch of 4, then the last stack alone (never a third shape)
    assert {s[0][0] for s in shapes} == {4, 1}
    assert all(layout and inference and freezing for _, layout, inference, freezing in shapes)
    assert not inductor_config.freezing  # only while compiled code runs


@pytest.mark.slow
def test_compiled_network_matches_eager(random_model):
    """The real inductor compilation (tens of seconds): features within 1e-5 of eager."""
    compiled = inference_model(random_model, torch.device("cpu"), compile=True)
    x = torch.rand(1, 3, 13, 224, 224, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.inference_mode():
        want, _ = random_model(x)
        got, _ = compiled(x.contiguous(memory_format=torch.channels_last_3d))
    assert rel_norm(got, want) < 1e-5


# -- out of memory --------------------------------------------------------------------------
def test_out_of_memory_names_batch_size(random_model, sample_video):
    extractor = ExtractS3D(model=random_model, batch_size=4, **SMALL)

    def oom(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    extractor.runner.net = oom
    with pytest.raises(ExtractionError) as info:
        extractor.extract(sample_video)
    assert info.value.stage == "model"
    assert "batch_size=4" in info.value.message and "batch_size=2" in info.value.message


def test_other_model_errors_are_not_called_oom(random_model, sample_video):
    extractor = ExtractS3D(model=random_model, **SMALL)

    def broken(x):
        raise RuntimeError("shape mismatch somewhere\nmore lines")

    extractor.runner.net = broken
    with pytest.raises(ExtractionError, match="shape mismatch") as info:
        extractor.extract(sample_video)
    assert "batch_size" not in info.value.message


# -- the queues -----------------------------------------------------------------------------
class Source:
    """An iterator that counts what it produced and whether it was closed."""

    def __init__(self, n: int, fail_at: int = -1):
        self.n, self.fail_at = n, fail_at
        self.produced = 0
        self.closed = False

    def __iter__(self):
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise ValueError(f"bad item {i}")
                self.produced += 1
                yield i
        finally:
            self.closed = True


def prefetch(iterable, depth: int):
    """One video's stream, as the extractor gets it: a single job of ``prefetch_jobs``."""
    streams = prefetch_jobs([lambda: iterable], 1 if depth > 0 else 0, depth)
    try:
        yield from next(streams)
    finally:
        streams.close()


def no_prefetch_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("prefetch")]


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_is_bounded(depth, close_after):
    source = Source(1000)
    items = close_after(prefetch(source, depth))
    assert next(items) == 0
    # one item in hand, ``depth`` queued, one more made and waiting for room
    assert wait_until(lambda: parked_producers() == 1)
    assert source.produced == depth + 2
    items.close()
    assert wait_until(lambda: source.closed)
    assert wait_until(no_prefetch_threads)


def test_prefetch_delivers_every_item_in_order():
    assert list(prefetch(Source(50), 2)) == list(range(50))
    assert list(prefetch(Source(5), 0)) == list(range(5))


def test_prefetch_propagates_the_exception_where_it_happened():
    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item in prefetch(Source(10, fail_at=3), 2):
            got.append(item)
    assert got == [0, 1, 2]
    assert wait_until(no_prefetch_threads)


def test_prefetch_stops_the_producer_when_the_consumer_stops():
    source = Source(10**9)
    for item in prefetch(source, 2):
        if item == 5:
            break
    # leaving the loop closes the generator: the producer is joined and its source closed
    assert source.closed
    assert source.produced < 20
    assert no_prefetch_threads()


def test_prefetch_jobs_order_bound_errors_and_early_exit(close_after):
    sources = [Source(30), Source(30, fail_at=2), Source(30), Source(30)]
    streams = close_after(prefetch_jobs([lambda s=s: iter(s) for s in sources], workers=2, depth=2))
    first = next(streams)
    assert next(first) == 0
    # two workers, each at most depth + 1 items ahead: later videos wait
    assert wait_until(lambda: prefetch_threads() == 2 and parked_producers() == 2)
    # the first is depth + 1 items ahead; the second holds its error, its queue full of the
    # two items before it; both workers are busy, so the third and fourth videos wait
    assert [s.produced for s in sources] == [4, 2, 0, 0]
    assert list(first) == list(range(1, 30))
    second = next(streams)
    with pytest.raises(ValueError, match="bad item 2"):
        list(second)
    third = next(streams)
    assert next(third) == 0  # leave it early: its producer is stopped, the next goes on
    fourth = next(streams)
    assert wait_until(lambda: sources[2].closed)
    assert list(fourth) == list(range(30))
    streams.close()
    assert wait_until(no_prefetch_threads)
    assert all(s.closed for s in sources)


def test_prefetch_jobs_does_not_run_ahead_through_short_videos(close_after):
    """Videos shorter than the queue never block their producer: the bound is on jobs too."""
    sources = [Source(1) for _ in range(50)]
    streams = close_after(prefetch_jobs([lambda s=s: iter(s) for s in sources], workers=1, depth=2))
    first = next(streams)
    # the next video is decoded ahead, then the worker waits for the consumer ...
    assert wait_until(lambda: sources[1].produced == 1 and parked_producers() == 1)
    assert [s.produced for s in sources[2:]] == [0] * 48  # ... and goes no further
    assert list(first) == [0]
    second = next(streams)
    assert wait_until(lambda: sources[2].produced == 1 and parked_producers() == 1)
    assert [s.produced for s in sources[3:]] == [0] * 47
    assert [list(second)] + [list(s) for s in streams] == [[0]] * 49
    assert wait_until(no_prefetch_threads)


def test_prefetch_jobs_inline():
    streams = prefetch_jobs([lambda: iter(Source(3)), lambda: iter(Source(2))], workers=0, depth=2)
    assert [list(s) for s in streams] == [[0, 1, 2], [0, 1]]


def test_prefetch_jobs_closing_early_stops_every_worker():
    sources = [Source(10**9) for _ in range(5)]
    streams = prefetch_jobs([lambda s=s: iter(s) for s in sources], workers=3, depth=2)
    assert next(next(streams)) == 0
    assert wait_until(lambda: sources[2].produced >= 1)
    streams.close()
    assert no_prefetch_threads()
    assert all(s.closed for s in sources[:3]) and sources[4].produced == 0


def test_producer_log_records_come_out_in_the_consumer_at_their_place():
    logger = logging.getLogger("utils.test_speed_options_producer")
    seen = []

    class Record(logging.Handler):
        def emit(self, record):
            on_main = threading.current_thread() is threading.main_thread()
            seen.append(f"log:{record.getMessage()}:{'consumer' if on_main else 'producer'}")

    def job(tag):
        def run():
            yield f"{tag}-0"
            logger.warning("%s warned", tag)
            yield f"{tag}-1"
        return run

    handler = Record()
    logger.addHandler(handler)
    try:
        for stream in prefetch_jobs([job("a"), job("b")], workers=2, depth=4):
            seen.extend(stream)
    finally:
        logger.removeHandler(handler)
    assert seen == ["a-0", "log:a warned:consumer", "a-1", "b-0", "log:b warned:consumer", "b-1"]


# -- progress -------------------------------------------------------------------------------
def test_progress_bars_count_videos_and_stacks(capsys):
    with RunProgress(2, enabled=True, long_video_stacks=3) as progress:
        progress.video_started("/data/a.mp4")
        progress.stacks_done(2, 4)
        assert progress.stacks_bar is not None  # a long video gets its own bar
        progress.stacks_done(2, 4)
        progress.video_finished()
        progress.video_started("/data/b.mp4")
        progress.stacks_done(1, 1)
        assert progress.stacks_bar is None
        progress.video_finished()
        assert progress.total_stacks == 5 and progress.videos.n == 2
    err = capsys.readouterr().err
    assert "2/2" in err and "5 stacks" in err


def test_progress_is_silent_when_disabled(capsys):
    with RunProgress(1, enabled=False) as progress:
        progress.video_started("a.mp4")
        progress.stacks_done(3, 100)
        progress.video_finished()
    assert capsys.readouterr().err == ""
