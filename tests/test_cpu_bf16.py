"""precision=bf16 on the CPU: where it runs (detection, both ways), what it costs in accuracy,
and the fallback warnings where it does not run.

Nothing here is timed: speed is measured by benchmarks/bench_s3d.py --precision.
"""
import copy
import logging
import types

import numpy as np
import pytest
import torch

import models.s3d.inference as inference
import utils.device as device_mod
from batch_helpers import rel_err
from models.s3d import ExtractS3D
from models.s3d.inference import Conv3dAs2d, fuse_relu, fused_relu_available, inference_model
from utils.device import cpu_has_native_bf16
from utils.video.preprocess import KyleminFrames

NATIVE = cpu_has_native_bf16()
CPU = torch.device("cpu")

BF16_FALLBACK = ("precision=bf16 needs a CUDA device or a CPU with native bfloat16 (AVX512_BF16 "
                 "or AMX); this CPU emulates it, far slower than fp32, so fp32 is used")
FP16_FALLBACK = ("precision=fp16 runs on CUDA devices only: on the CPU it is no faster than fp32 "
                 "(far slower without native fp16), so fp32 is used")


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- detection ---------------------------------------------------------------------------------
@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the detection at a made-up /proc/cpuinfo, and hide torch's own checks (absent
    from some torch versions) unless a test puts stand-ins back."""
    def write(flags: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\n"
                        f"processor\t: 1\nflags\t\t: {flags}\n")
        monkeypatch.setattr(device_mod, "CPUINFO", str(path))

    monkeypatch.setattr(torch._C, "_cpu", types.SimpleNamespace())
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    return write


@pytest.mark.parametrize("flags, native", [
    ("fpu sse avx2 avx512f avx512bw avx512_vnni", False),    # AVX-512 without BF16 (Ice Lake)
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),      # Cooper Lake, Zen 4
    ("fpu avx2 avx512f amx_bf16 amx_tile", True),            # AMX only listed
    ("fpu sse sse2 avx avx2 fma", False),                    # a laptop's AVX2
])
def test_cpu_flags_decide_where_torch_has_no_check(cpuinfo, flags, native):
    cpuinfo(flags)
    assert cpu_has_native_bf16() is native


def test_torch_checks_are_preferred_to_the_flags(cpuinfo, monkeypatch):
    cpuinfo("avx512_bf16 amx_bf16")
    monkeypatch.setattr(torch._C, "_cpu", types.SimpleNamespace(
        _is_avx512_bf16_supported=lambda: False, _is_amx_tile_supported=lambda: False))
    assert cpu_has_native_bf16() is False
    cpuinfo("avx2")
    monkeypatch.setattr(torch._C, "_cpu", types.SimpleNamespace(
        _is_avx512_bf16_supported=lambda: True))
    assert cpu_has_native_bf16() is True


def test_no_onednn_no_bf16(cpuinfo, monkeypatch):
    cpuinfo("avx512_bf16 amx_bf16")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert cpu_has_native_bf16() is False


def test_no_cpuinfo_means_no_bf16(cpuinfo, monkeypatch, tmp_path):
    monkeypatch.setattr(device_mod, "CPUINFO", str(tmp_path / "absent"))
    assert cpu_has_native_bf16() is False


def test_bf16_runs_where_the_cpu_has_it(monkeypatch, caplog):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level(logging.WARNING):
        assert inference.resolve_precision("bf16", CPU) == "bf16"
    assert warnings_of(caplog) == []


def test_bf16_falls_back_where_the_cpu_lacks_it(monkeypatch, caplog, random_model):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        extractor = ExtractS3D(model=random_model, precision="bf16", device="cpu", num_workers=0)
    assert extractor.precision == "fp32" and extractor.identity()["precision"] == "fp32"
    assert warnings_of(caplog) == [BF16_FALLBACK]
    assert not isinstance(extractor.runner.net, inference.CpuBfloat16)


@pytest.mark.parametrize("native", [True, False])
def test_fp16_on_the_cpu_falls_back_with_a_true_warning(monkeypatch, caplog, native):
    """The warning used to say fp16 is "about 100x slower" on any CPU: on an AVX512-FP16 Xeon
    it measured about as fast as fp32."""
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING):
        assert inference.resolve_precision("fp16", CPU) == "fp32"
    hint = "; this CPU has native bfloat16: precision=bf16 is faster" if native else ""
    assert warnings_of(caplog) == [FP16_FALLBACK + hint]


# -- the bf16 network -----------------------------------------------------------------------------
@pytest.mark.skipif(not fused_relu_available(), reason="this torch has no oneDNN fused kernels")
def test_fused_relu_gives_the_same_features(random_model):
    """In fp32 (any CPU): ReLUs computed inside the convolutions change nothing but rounding."""
    plain = inference_model(random_model, CPU)
    fused = fuse_relu(copy.deepcopy(plain))
    convs = [m for m in fused.modules() if isinstance(m, Conv3dAs2d)]
    relus = [m for m in fused.modules() if isinstance(m, torch.nn.ReLU)]
    # every convolution of the base is followed by a ReLU; the head (fc) is not
    assert relus == [] and [c.relu for c in convs].count(False) == 1 and not fused.fc[0].relu
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 16, 112, 112, 3, generator=gen) * 2 - 1).permute(0, 4, 1, 2, 3)
    with torch.inference_mode():
        want, got = plain(x), fused(x)
    for a, b in zip(got, want):
        assert rel_err(a.numpy(), b.numpy()) < 1e-5


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bfloat16 (emulated: minutes)")
def test_bf16_features_stay_close_to_the_fp32_network(random_model):
    """The bf16 extractor against the plain fp32 network (no folding, no 2-D convolutions):
    close (measured 4.2e-3 relative L2 on 64-frame stacks), and really bf16 (fp32's own
    differences are below 1e-6)."""
    bf16 = ExtractS3D(model=random_model, precision="bf16", device="cpu", num_workers=0)
    assert bf16.precision == "bf16" and bf16.identity()["precision"] == "bf16"
    net = bf16.runner.net
    assert isinstance(net, inference.CpuBfloat16)
    assert net.net.base[0].conv_s.weight.dtype == torch.bfloat16
    assert net.net.fc[0].weight.dtype == torch.float32
    gen = torch.Generator().manual_seed(5)
    frames = torch.randint(0, 256, (3, 24, 224, 224, 3), dtype=torch.uint8, generator=gen)
    features, logits = bf16.forward(frames)
    assert features.dtype == logits.dtype == torch.float32
    with torch.inference_mode():
        x = KyleminFrames.to_input(frames).permute(0, 4, 1, 2, 3).contiguous()
        want_features, want_logits = random_model(x)
    err = rel_err(features.numpy(), want_features.numpy())
    assert 1e-4 < err < 1e-2, err
    assert 1e-4 < rel_err(logits.numpy(), want_logits.numpy()) < 1e-2


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bfloat16 (emulated: minutes)")
def test_bf16_error_is_small_beside_the_differences_between_stacks(random_model, sample_video):
    """On the sample clip, bf16 moves each stack's features far less than the stacks differ
    from each other (measured: 4.6e-3 against at least 6.4e-2)."""
    options = dict(device="cpu", num_workers=0, extraction_fps=8, stack_size=16, step_size=16)
    want = ExtractS3D(model=random_model, **options).extract(sample_video)["s3d"]
    got = ExtractS3D(model=random_model, precision="bf16", **options).extract(sample_video)["s3d"]
    assert got.shape == want.shape == (5, 1024)
    err = rel_err(got, want)
    apart = min(np.linalg.norm(want[i] - want[j]) / np.linalg.norm(want[i])
                for i in range(len(want)) for j in range(len(want)) if i != j)
    assert 1e-4 < err < 1e-2 and err < apart / 5, (err, apart)
