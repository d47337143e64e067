"""Prepare a loaded S3D for inference (faster, same features) and run it on a batch.

``inference_model(model, device, ...)`` returns a *copy* of the network (the loaded model keeps
its checkpoint keys) with:

* every ``Conv3d -> BatchNorm3d`` pair folded into one convolution with a bias (computed in
  float64, so the folded network matches the plain one to about 1e-7 relative);
* weights in ``channels_last_3d`` (NDHWC), the layout oneDNN's CPU convolutions are fastest in;
* on the CPU, every convolution run as a 2-D one (``Conv3dAs2d``): S3D's convolutions are all
  separable (1,k,k) spatial, (k,1,1) temporal or 1x1x1, and on NDHWC data each is a 2-D
  convolution (or a matrix product) over a reshaped *view* of the same memory, which oneDNN and
  BLAS run about 10 % faster than the equivalent 3-D convolution (measured, 2-core AVX2 CPU);
* gradients off, on ``device``;
* optionally ``torch.compile`` (inductor with weight freezing: constant weights pre-packed for
  oneDNN, ReLU fused into the convolutions), after tens of seconds of compilation, so it is
  opt-in (``compile=true``) for long batch runs.

``precision=bf16`` on a CPU with native bfloat16 (AVX512_BF16, AMX; ``resolve_precision``)
converts that copy to bfloat16 (``CpuBfloat16``): weights and activations, with each ReLU run
inside its convolution (oneDNN's fused kernels, ``fuse_relu``) and the final pooling and head
in fp32 (measured faster than ``torch.autocast`` over the same model: see
docs/speed.md).  On CUDA, ``autocast(device, precision)`` gives the context for
``precision=fp16|bf16``.  ``BatchRunner`` runs that network on one batch of preset pixels and
turns its failures (out of memory above all) into ``model``-stage ``ExtractionError``s.
"""
import contextlib
import copy
import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from utils.device import cpu_has_native_bf16
from utils.errors import ExtractionError, launcher_exceptions, one_line

log = logging.getLogger(__name__)

# the torch dtype of each value of the precision option (utils.config.Precision: the one list)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def fold_conv_bn(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> nn.Conv3d:
    """A Conv3d equal to ``bn(conv(x))`` for a BatchNorm in eval mode (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")

    def f64(t):
        return None if t is None else t.detach().to(torch.float64)

    # torch's own folding, in float64 so the folded network stays within ~1e-7 of the plain one
    weight, bias = fuse_conv_bn_weights(f64(conv.weight), f64(conv.bias), f64(bn.running_mean),
                                        f64(bn.running_var), bn.eps, f64(bn.weight), f64(bn.bias))
    fused = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device,
                      dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold, in place, every BatchNorm3d that directly follows a Conv3d in the same container.

    Works on ``nn.Sequential``-like modules whose children run in registration order (all of
    S3D's conv blocks); the BatchNorm is replaced by ``nn.Identity``.  Returns ``model``.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (it uses running statistics)")
    folded = 0
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules.keys())
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv3d) and isinstance(bn, nn.BatchNorm3d) \
                    and bn.track_running_stats:
                module._modules[first] = fold_conv_bn(conv, bn)
                module._modules[second] = nn.Identity()
                folded += 1
    log.debug("folded %d BatchNorm layers into their convolutions", folded)
    return model


class Conv3dAs2d(nn.Module):
    """A Conv3d whose kernel is (1,k,k), (k,1,1) or 1x1x1, run as a 2-D convolution or a matmul.

    Input and output are (N, C, T, H, W) in ``channels_last_3d`` memory, i.e. (N, T, H, W, C)
    contiguous, which is also:
      * (N*T, C, H, W) in channels_last: a spatial (1,k,k) conv is a 2-D conv over frames;
      * (N, C, T, H*W) in channels_last: a temporal (k,1,1) conv is a 2-D (k,1) conv;
      * (N*T*H*W, C) rows: a 1x1x1 conv is ``F.linear``.
    The reshapes are views (no copy) when the input is channels_last_3d; otherwise they copy.
    """

    def __init__(self, conv: nn.Conv3d, kind: str):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.relu = False  # set by fuse_relu: the ReLU after it runs inside oneDNN's kernel
        weight = conv.weight.detach()
        if kind == "linear":
            weight = weight.reshape(weight.shape[0], weight.shape[1])
            self.stride, self.padding = (1, 1), (0, 0)
        elif kind == "spatial":
            weight = weight[:, :, 0].contiguous(memory_format=torch.channels_last)
            self.stride, self.padding = tuple(conv.stride[1:]), tuple(conv.padding[1:])
        else:
            weight = weight[..., 0].contiguous(memory_format=torch.channels_last)
            self.stride, self.padding = (conv.stride[0], 1), (conv.padding[0], 0)
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.bias = (nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
                     if conv.bias is not None else None)

    KINDS = ("linear", "spatial", "temporal")

    @staticmethod
    def kind_of(conv: nn.Module) -> Optional[str]:
        """The 2-D form ``conv`` has, or None if it must stay a Conv3d."""
        if not isinstance(conv, nn.Conv3d) or conv.groups != 1 or conv.dilation != (1, 1, 1) \
                or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return None
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        if k == (1, 1, 1) and s == (1, 1, 1) and p == (0, 0, 0):
            return "linear"
        if k[0] == 1 and s[0] == 1 and p[0] == 0:
            return "spatial"
        if k[1:] == (1, 1) and s[1:] == (1, 1) and p[1:] == (0, 0):
            return "temporal"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            return self._forward_relu(x)
        n, c, t, h, w = x.shape
        y = x.permute(0, 2, 3, 4, 1)  # (N, T, H, W, C), contiguous for channels_last_3d input
        if self.kind == "linear":
            return F.linear(y, self.weight, self.bias).permute(0, 4, 1, 2, 3)
        if self.kind == "spatial":
            out = F.conv2d(y.reshape(n * t, h, w, c).permute(0, 3, 1, 2), self.weight, self.bias,
                           self.stride, self.padding)
            _, c2, h2, w2 = out.shape
            return out.permute(0, 2, 3, 1).reshape(n, t, h2, w2, c2).permute(0, 4, 1, 2, 3)
        out = F.conv2d(y.reshape(n, t, h * w, c).permute(0, 3, 1, 2), self.weight, self.bias,
                       self.stride, self.padding)
        c2, t2 = out.shape[1], out.shape[2]
        return out.permute(0, 2, 3, 1).reshape(n, t2, h, w, c2).permute(0, 4, 1, 2, 3)

    def _forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(forward(x))`` in one oneDNN call (the ops inductor's CPU fusions use)."""
        n, c, t, h, w = x.shape
        y = x.permute(0, 2, 3, 4, 1)
        mkldnn = torch.ops.mkldnn
        if self.kind == "linear":
            out = mkldnn._linear_pointwise(y.reshape(-1, c), self.weight, self.bias, "relu", [], "")
            return out.reshape(n, t, h, w, -1).permute(0, 4, 1, 2, 3)
        if self.kind == "spatial":
            out = mkldnn._convolution_pointwise(
                y.reshape(n * t, h, w, c).permute(0, 3, 1, 2), self.weight, self.bias,
                list(self.padding), list(self.stride), [1, 1], 1, "relu", [], "")
            _, c2, h2, w2 = out.shape
            return out.permute(0, 2, 3, 1).reshape(n, t, h2, w2, c2).permute(0, 4, 1, 2, 3)
        out = mkldnn._convolution_pointwise(
            y.reshape(n, t, h * w, c).permute(0, 3, 1, 2), self.weight, self.bias,
            list(self.padding), list(self.stride), [1, 1], 1, "relu", [], "")
        c2, t2 = out.shape[1], out.shape[2]
        return out.permute(0, 2, 3, 1).reshape(n, t2, h, w, c2).permute(0, 4, 1, 2, 3)


def convs_as_2d(model: nn.Module) -> nn.Module:
    """Replace, in place, every Conv3d that has a 2-D form by its ``Conv3dAs2d``; return ``model``."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            kind = Conv3dAs2d.kind_of(child)
            if kind is not None:
                module._modules[name] = Conv3dAs2d(child, kind)
                replaced += 1
    log.debug("%d Conv3d layers run as 2-D convolutions", replaced)
    return model


def fused_relu_available() -> bool:
    """Whether this torch has oneDNN's convolution/linear + ReLU kernels (``torch.ops.mkldnn``)."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def fuse_relu(model: nn.Module) -> nn.Module:
    """In place: every ``Conv3dAs2d`` followed in its ``nn.Sequential`` by a ReLU (past the
    ``nn.Identity`` a folded BatchNorm left) computes the ReLU itself; the ReLU becomes an
    ``nn.Identity``.  Returns ``model``."""
    fused = 0
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules.keys())
        for i, name in enumerate(names):
            conv = module._modules[name]
            if not isinstance(conv, Conv3dAs2d) or conv.relu:
                continue
            j = i + 1
            while j < len(names) and isinstance(module._modules[names[j]], nn.Identity):
                j += 1
            if j < len(names) and isinstance(module._modules[names[j]], nn.ReLU):
                conv.relu = True
                module._modules[names[j]] = nn.Identity()
                fused += 1
    log.debug("%d ReLUs run inside their convolutions", fused)
    return model


class CpuBfloat16(nn.Module):
    """A network run in bfloat16 on the CPU: input, weights and activations.

    The network's children named in its ``FP32_MODULES`` (its head) stay float32, and its
    ``forward`` turns the body's output to float32 before pooling (``S3D``: ``.float()``, a
    no-op at fp32), so the averages and the head are computed in float32.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        keep = getattr(net, "FP32_MODULES", ())
        for name, child in net.named_children():
            if name not in keep:
                child.to(torch.bfloat16)
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(x.to(torch.bfloat16))


def inference_model(model: nn.Module, device: torch.device, fold_bn: bool = True,
                    channels_last: bool = True, compile: bool = False,
                    as_2d: Optional[bool] = None, precision: str = "fp32") -> nn.Module:
    """A copy of ``model`` ready for ``torch.inference_mode`` forwards on ``device``.

    ``as_2d`` (default: on the CPU without ``compile``) runs the convolutions as 2-D ones; with
    ``compile`` inductor's own packed 3-D convolutions were faster, and on CUDA cuDNN's 3-D
    convolutions are kept (not measured there).  ``precision="bf16"`` on the CPU (one that
    ``resolve_precision`` accepted) gives a ``CpuBfloat16`` network, its ReLUs fused into the
    2-D convolutions.
    """
    fast = copy.deepcopy(model).eval()
    if fold_bn:
        fold_batchnorm(fast)
    fast.requires_grad_(False)
    fast = fast.to(device)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last_3d)
    if as_2d is None:
        as_2d = device.type == "cpu" and channels_last and not compile
    if as_2d:
        convs_as_2d(fast)
    if precision == "bf16" and device.type == "cpu":
        if as_2d and fused_relu_available():
            fuse_relu(fast)
        fast = CpuBfloat16(fast)
    if compile:
        fast = Compiled(fast)
    return fast


class Compiled(nn.Module):
    """``torch.compile`` with inductor and frozen weights (constant-folded into the graph).

    Freezing is an inductor setting read while compiling, which happens at the first call, so
    every call runs under ``freezing=True`` (``torch.compile(options=...)`` did not reach the
    freezing passes in torch 2.14: no weight was pre-packed).  The graph is specialised to the
    input's shape, memory layout and inference-mode-ness: callers keep those fixed (the extractor
    feeds channels_last_3d tensors made under ``torch.inference_mode``, in at most two batch
    shapes) or pay a recompilation.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.compiled = torch.compile(model, backend="inductor", dynamic=False)

    def forward(self, x: torch.Tensor):
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(x)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to run at.

    fp16 and bf16 run on CUDA (bf16 where the GPU supports it), and bf16 on a CPU with native
    bfloat16 (AVX512_BF16 or AMX-BF16: ``utils.device.cpu_has_native_bf16``).  Elsewhere we
    warn once and keep fp32, as ``device=cuda`` without CUDA falls back to the CPU: one command
    line works on GPU and CPU machines alike.  Without native support PyTorch emulates
    bfloat16 and fp16 far slower than fp32; fp16 on the CPU is not used even where the CPU has
    it (AVX512-FP16): measured no faster than fp32 (docs/speed.md).
    """
    name = getattr(precision, "value", precision)  # a valid option (utils.config.Precision)
    if name == "fp32":
        return name
    if device.type == "cuda":
        if name != "bf16":
            return name
        with torch.cuda.device(device):  # the GPU asked for, not the current one
            bf16_ok = torch.cuda.is_bf16_supported()
        if not bf16_ok:
            raise ValueError(f"precision: bf16 is not supported by "
                             f"{torch.cuda.get_device_name(device)}; use fp16 or fp32")
        return name
    native_bf16 = device.type == "cpu" and cpu_has_native_bf16()
    if name == "bf16" and native_bf16:
        return name
    if device.type != "cpu":
        log.warning("precision=%s runs on CUDA devices (bf16 also on CPUs with native "
                    "bfloat16); on %s fp32 is used", name, device.type)
    elif name == "bf16":
        log.warning("precision=bf16 needs a CUDA device or a CPU with native bfloat16 "
                    "(AVX512_BF16 or AMX); this CPU emulates it, far slower than fp32, so "
                    "fp32 is used")
    else:
        log.warning("precision=fp16 runs on CUDA devices only: on the CPU it is no faster than "
                    "fp32 (far slower without native fp16), so fp32 is used%s",
                    "; this CPU has native bfloat16: precision=bf16 is faster" if native_bf16
                    else "")
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` on CUDA (a no-op for fp32, and on the CPU, where
    a bf16 network is converted instead: ``CpuBfloat16``)."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])



class BatchRunner:
    """``runner(frames) -> (features, logits)``: (B, T, H, W, 3) preset pixels in, float32
    CPU tensors out, through the prepared network.

    ``to_input`` turns the preset's pixels into the network's input (the preset's scaling).
    With ``compile`` a batch smaller than ``batch_size`` runs one stack at a time, so the
    compiled graph only ever sees two input shapes (no recompilation per video).
    """

    def __init__(self, net: nn.Module, device: torch.device, precision: str, batch_size: int,
                 to_input, compiled: bool = False):
        self.net = net
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.to_input = to_input
        self.compiled = compiled

    def __call__(self, frames: torch.Tensor):
        try:
            return self.forward(frames)
        except launcher_exceptions():  # the launcher ends the task: never this video's failure
            raise
        except torch.cuda.OutOfMemoryError as e:
            raise self._oom_error(frames, e) from None
        except RuntimeError as e:
            text = str(e)
            if "out of memory" in text or "can't allocate memory" in text:
                raise self._oom_error(frames, e) from None
            raise ExtractionError("model", one_line(e)) from e
        except ExtractionError:
            raise
        except Exception as e:  # noqa: BLE001 -- tagged with its stage, cause kept
            raise ExtractionError.wrap("model", e) from e

    def forward(self, frames: torch.Tensor):
        if self.compiled and 1 < frames.shape[0] < self.batch_size:
            parts = [self._forward(frames[i:i + 1]) for i in range(frames.shape[0])]
            return torch.cat([f for f, _ in parts]), torch.cat([lg for _, lg in parts])
        return self._forward(frames)

    def _forward(self, frames: torch.Tensor):
        # Inputs are always made inside inference_mode and in channels_last_3d: a compiled
        # graph recompiles if either changes between calls.
        with torch.inference_mode():
            x = frames.to(self.device, non_blocking=True)
            x = self.to_input(x).permute(0, 4, 1, 2, 3)  # NDHWC storage = channels_last_3d
            with autocast(self.device, self.precision), self._cudnn_flags():
                features, logits = self.net(x)
            return features.float().cpu(), logits.float().cpu()

    def _cudnn_flags(self):
        """On CUDA: cuDNN's autotuner on (one input shape), and fp32 really fp32 (no TF32)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False,
                                          allow_tf32=self.precision != "fp32")

    def _oom_error(self, frames: torch.Tensor, cause: BaseException) -> ExtractionError:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = max(1, frames.shape[0] // 2)
        hint = (f"set batch_size={smaller} or lower" if frames.shape[0] > 1
                else "batch_size is already 1: use a larger device, or precision=fp16/bf16 on CUDA")
        return ExtractionError("model", f"out of memory on {self.device} running "
                               f"{frames.shape[0]} stacks of {frames.shape[1]} frames at once "
                               f"(batch_size={self.batch_size}): {hint} ({one_line(cause)})")
