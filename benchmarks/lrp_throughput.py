"""Throughput and peak memory of spray's LRP against plain forward/backward passes and zennit.

Example (the figures in docs/lrp.md)::

    OMP_NUM_THREADS=1 python benchmarks/lrp_throughput.py --models resnet50 vit_b_16 efficientnet_b0 \
        convnext_tiny mobilenet_v3_large --device cpu --batch 8 --size 224 --repeats 3 --write-docs

Per model and device, interleaved in one process (so background load hits all methods alike), it
times:

* ``forward``          : ``model(x)`` under ``no_grad``;
* ``fwd+input-grad``   : forward + gradient of the target logit w.r.t. the input (parameters frozen),
  the cost floor of any gradient-based attribution and the reference of the ratios;
* ``fwd+input-grad (channels_last)`` : the same with model and input in ``channels_last`` layout (CPU
  only), because spray's Explainer runs Conv2d models in that layout on CPU; shows how much of spray's
  ratio comes from the layout rather than from the LRP engine;
* ``fwd+bwd(weights)`` : forward + cross-entropy backward into the weights (one training step
  without the optimizer);
* ``spray LRP``        : :class:`spray.lrp.Explainer` with ``EpsilonPlusFlat`` on CNNs and ``AttnLRP`` on
  vision transformers (``--composite`` overrides);
* ``spray LRP (torch conv dispatch)`` : the same with ``spray.lrp.kernels.ONEDNN_POINTWISE = False``, i.e.
  1×1 convolutions through PyTorch's own dispatch like the references (ablation of that choice);
* ``zennit LRP``       : zennit 0.5.1 ``EpsilonPlusFlat`` with its canonizers, plus the test suite's
  canonizers for the blocks zennit has none for (tests/lrp_oracles.py); CNNs only, skipped if zennit is
  not installed;
* ``LXT LRP``          : LXT 2.1's AttnLRP rules (LayerNorm ``layer_norm_forward``, GELU
  ``identity_rule_implicit``, ``divide_gradient`` at the attention's query/key/value) on the same model;
  vision transformers only.

A method that does not apply to a model gets "—" in the table.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory allocated before the call.
On CPU each (model, method) runs in a fresh subprocess with glibc's mmap threshold pinned to 64 KiB
(so freed tensors go back to the OS and RSS tracks live tensors); after one warm-up call the peak RSS
counter is reset (``/proc/self/clear_refs``) and the figure is ``VmHWM − VmRSS`` around one call:
the extra resident memory the call needs on top of the loaded model (and, for the LRP methods, on
top of their canonized copy). Models use random weights (no pretrained weights are available).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spray.lrp.kernels  # noqa: E402
from spray.lrp import Explainer  # noqa: E402

logger = logging.getLogger("lrp_throughput")
METHODS = [
    "forward",
    "fwd+input-grad",
    "fwd+input-grad (channels_last)",
    "fwd+bwd(weights)",
    "spray LRP",
    "spray LRP (torch conv dispatch)",
    "zennit LRP",
    "LXT LRP",
]
TRANSFORMERS = ("vit_b_16", "vit_b_32", "swin_t")
#: --composite: spray's composite per model ("auto": EpsilonPlusFlat on CNNs, AttnLRP on transformers)
COMPOSITE = {"value": "auto"}
BASE = "fwd+input-grad"
#: --precision: "fp32" (strict float32 everywhere) or "tf32" (TF32 matmuls/convolutions on CUDA for every
#: method). PyTorch's default allows TF32 convolutions on CUDA, which spray's "fp32" turns off; setting
#: the switches for all methods alike keeps the comparison fair.
PRECISION = {"value": "fp32"}
DOC = ROOT / "docs" / "lrp.md"
BEGIN, END = "<!-- BENCHMARK:BEGIN -->", "<!-- BENCHMARK:END -->"


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A small Conv/BN/ReLU/pool CNN (any input size)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.BatchNorm2d(128),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128 * 16, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(256, num_classes),
    )


def build_model(name: str) -> nn.Module:
    """Random-weight model by name (seeded)."""
    torch.manual_seed(0)
    if name == "small_cnn":
        model = small_cnn()
    else:
        try:
            model = torchvision.models.get_model(name, weights=None, num_classes=1000)
        except ValueError:
            raise SystemExit(f"unknown model {name!r}: small_cnn or a torchvision model name") from None
    with torch.no_grad():  # non-trivial BN statistics, as in a trained model
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def applies(method: str, model_name: str) -> bool:
    """Whether ``method`` is measured on ``model_name`` (zennit: CNNs only; LXT: transformers only)."""
    if method == "zennit LRP":
        return model_name not in TRANSFORMERS
    if method == "LXT LRP":
        return model_name in TRANSFORMERS
    if method == "spray LRP (torch conv dispatch)":
        return model_name not in TRANSFORMERS
    return True


def spray_composite(model_name: str) -> str:
    """spray's composite for ``model_name`` (see ``--composite``)."""
    if COMPOSITE["value"] != "auto":
        return COMPOSITE["value"]
    return "AttnLRP" if model_name in TRANSFORMERS else "EpsilonPlusFlat"


def _argmax_seed(out: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(out).scatter_(1, out.argmax(1, keepdim=True), 1.0)


def _lxt_method(model: nn.Module) -> Callable[[torch.Tensor], Any]:
    """LXT's AttnLRP on ``model``: the same rules as spray's AttnLRP composite, with LXT's functions."""
    import torch.nn.functional as F

    from tests.lrp_oracles import lxt_modules

    rules, patches = lxt_modules()
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.forward = patches.layer_norm_forward.__get__(m)  # type: ignore[method-assign]
        elif isinstance(m, nn.GELU):
            m.forward = (lambda f: lambda t: rules.identity_rule_implicit(f, t))(m.forward)  # type: ignore[method-assign]
    original = F.scaled_dot_product_attention

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        q, k, v = rules.divide_gradient(q, 4), rules.divide_gradient(k, 4), rules.divide_gradient(v, 2)
        return original(q, k, v, *args, **kwargs)

    def run(x: torch.Tensor) -> Any:
        F.scaled_dot_product_attention = sdpa  # type: ignore[assignment]
        try:
            xx = x.detach().requires_grad_(True)
            out = model(xx)
            (grad,) = torch.autograd.grad(out, xx, _argmax_seed(out))
            return xx * grad
        finally:
            F.scaled_dot_product_attention = original  # type: ignore[assignment]

    return run


def _zennit_method(model: nn.Module) -> Callable[[torch.Tensor], Any]:
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer

        from tests.lrp_oracles import BlockCanonizer, _PairMerge, folded_pairs
    except ImportError:
        return lambda x: None
    for p in model.parameters():
        p.requires_grad_(False)
    resnet = any(type(m).__name__ in ("BasicBlock", "Bottleneck") for m in model.modules())
    canonizers = [ResNetCanonizer()] if resnet else [_PairMerge(folded_pairs(model)), BlockCanonizer()]
    # zennit canonizes the model in place while the attributor is open; the figures measure the
    # attribution calls only (opening the context once, like a long-running batch job would).
    attributor = Gradient(model, EpsilonPlusFlat(canonizers=canonizers))
    attributor.__enter__()
    return lambda x: attributor(x, lambda out: _argmax_seed(out) * out)[1]


def make_method(
    name: str, model: nn.Module, device: torch.device, model_name: str = ""
) -> Callable[[torch.Tensor], Any]:
    """Return a callable running one measured step of ``name`` on a batch."""
    if name == "forward":

        def run(x: torch.Tensor) -> Any:
            with torch.no_grad():
                return model(x)

        return run
    if name in ("fwd+input-grad", "fwd+input-grad (channels_last)"):
        channels_last = name.endswith("(channels_last)")
        if channels_last:
            model.to(memory_format=torch.channels_last)

        def run(x: torch.Tensor) -> Any:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for p in model.parameters():
                p.requires_grad_(False)
            xx = x.detach().requires_grad_(True)
            out = model(xx)
            seed = torch.zeros_like(out).scatter_(1, out.argmax(1, keepdim=True), 1.0)
            return torch.autograd.grad(out, xx, seed)[0]

        return run
    if name == "fwd+bwd(weights)":

        def run(x: torch.Tensor) -> Any:
            for p in model.parameters():
                p.requires_grad_(True)
                p.grad = None
            out = model(x)
            loss = nn.functional.cross_entropy(out, out.argmax(1))
            loss.backward()
            return loss

        return run
    if name in ("spray LRP", "spray LRP (torch conv dispatch)"):
        composite = spray_composite(model_name)
        explainer = Explainer(model, composite, device=device, precision=PRECISION["value"])
        onednn = name == "spray LRP"

        def run(x: torch.Tensor) -> Any:
            spray.lrp.kernels.ONEDNN_POINTWISE = onednn
            try:
                return explainer(x).relevance
            finally:
                spray.lrp.kernels.ONEDNN_POINTWISE = True

        return run
    if name == "zennit LRP":
        return _zennit_method(model)
    if name == "LXT LRP":
        return _lxt_method(model)
    raise ValueError(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def probe_memory(model_name: str, method: str, batch: int, size: int, device: torch.device) -> float:
    """Peak extra memory (MiB) of one call of ``method`` (run in the current, fresh process)."""
    model = build_model(model_name).to(device)
    run = make_method(method, model, device, model_name)
    x = torch.randn(batch, 3, size, size, device=device)
    run(x)  # warm-up: one-time setup (reference check, allocator pools, kernels)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run(x)
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before_kib = _proc_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    run(x)
    return (_proc_kib("VmHWM") - before_kib) / 1024


def memory_in_subprocess(model_name: str, method: str, args: argparse.Namespace) -> float:
    """Run :func:`probe_memory` in a fresh interpreter (CPU) so peaks do not leak between methods."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--probe", model_name, method, "--batch", str(args.batch)]
    cmd += ["--size", str(args.size), "--device", args.device, "--precision", args.precision]
    cmd += ["--composite", args.composite]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["mib"])


def bench_model(model_name: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Interleaved timings (and memory) of all methods for one model."""
    device = torch.device(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    methods = [m for m in METHODS if applies(m, model_name)]
    runners = {}
    for method in methods:
        # each method gets its own model copy (zennit canonizes in place, training flags differ)
        runners[method] = make_method(method, build_model(model_name).to(device), device, model_name)
        runners[method](x)  # warm-up
    times: dict[str, list[float]] = {m: [] for m in methods}
    for rep in range(args.repeats):
        for method in methods:
            _sync(device)
            t0 = time.perf_counter()
            runners[method](x)
            _sync(device)
            times[method].append(time.perf_counter() - t0)
        logger.info("%s repeat %d: %s", model_name, rep, {m: round(t[-1], 3) for m, t in times.items()})
    result: dict[str, dict[str, float]] = {}
    for method in methods:
        med = statistics.median(times[method])
        result[method] = {"seconds": med, "images_per_s": args.batch / med, "all_seconds": times[method]}
    del runners
    if not args.no_memory:
        for method in methods:
            if device.type == "cuda":
                result[method]["peak_mib"] = probe_memory(model_name, method, args.batch, args.size, device)
            else:
                result[method]["peak_mib"] = memory_in_subprocess(model_name, method, args)
    base = result[BASE]
    for method in methods:
        result[method]["time_ratio"] = result[method]["seconds"] / base["seconds"]
        if "peak_mib" in base and base["peak_mib"] > 0:
            result[method]["mem_ratio"] = result[method]["peak_mib"] / base["peak_mib"]
    return result


def table(results: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> str:
    """Markdown table of all results."""
    lines = [
        f"| model | method | images/s | time / {BASE} | peak extra memory (MiB) | memory / {BASE} |",
        "|---|---|---|---|---|---|",
    ]
    for model_name, res in results.items():
        for method in METHODS:
            if method not in res:
                continue
            r = res[method]
            mem = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "—"
            mem_ratio = f"{r['mem_ratio']:.2f}×" if "mem_ratio" in r else "—"
            lines.append(
                f"| {model_name} | {method} | {r['images_per_s']:.2f} | {r['time_ratio']:.2f}× | {mem} | {mem_ratio} |"
            )
    return "\n".join(lines)


def write_docs(text: str, command: str, args: argparse.Namespace) -> None:
    """Replace the block between the markers in docs/lrp.md."""
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, precision "
        f"{args.precision}"
    )
    block = f"{BEGIN}\nCommand: `{command}`\n\nMachine: {machine}.\n\n{text}\n{END}"
    doc = DOC.read_text() if DOC.exists() else f"# LRP\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["small_cnn", "resnet50", "vgg16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--write-docs", action="store_true", help=f"write the table into {DOC}")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument(
        "--precision",
        choices=["fp32", "tf32"],
        default="fp32",
        help="CUDA only: strict float32 for every method, or TF32 convolutions/matmuls for every method",
    )
    parser.add_argument(
        "--composite",
        default="auto",
        help="spray's composite (auto: EpsilonPlusFlat on CNNs, AttnLRP on ViTs)",
    )
    parser.add_argument("--probe", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    PRECISION["value"] = args.precision
    COMPOSITE["value"] = args.composite
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
    if args.probe:
        mib = probe_memory(args.probe[0], args.probe[1], args.batch, args.size, torch.device(args.device))
        print(json.dumps({"mib": mib}))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = {m: bench_model(m, args) for m in args.models}
    text = table(results, args)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.write_docs:
        command = "python benchmarks/lrp_throughput.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        write_docs(text, command, args)


if __name__ == "__main__":
    main()
