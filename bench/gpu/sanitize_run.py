"""A short run of every kernel family of one backend, for compute-sanitizer (issue 21, step 4).

``bench/gpu/validate.sh`` runs it under ``compute-sanitizer --tool memcheck`` and ``--tool
racecheck``, once per GPU backend (``cuda``, ``triton``), with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1``
so that every tensor is its own device allocation and an access past the end of one is reported
instead of landing silently in a neighbour inside the caching allocator's block. The sanitizer
reports the errors; this driver only has to launch every kernel once or more, with shapes that
reach every code path, and fail loudly (exit 1) if a step raises or leaves a non-finite or
unchanged param.

Families and what reaches each path:

* ``adam``: AdamW fp32 (16-byte vector path), bf16 params with fp32 states and telemetry (the
  sums), AMSGrad with bf16 states, AdamL (its loss-aware scalars).
* ``adagrad``: Adagrad, AdaGrad-Norm (global-norm accumulator: norm pass every step).
* ``sgd``: NSGD and Clip-SGD (norm pass + update), IAN-SGD (``record_normalizer()`` norm pass).
* ``momentum``: NSGDm (the momentum pass, then the step along m).
* ``prologue``: the norm pass with clipping and ``fusedopt.amp.LossScaler`` (unscale, inf check),
  fp16 params with fp32 master weights, and a step skipped on an inf.

Every configuration steps four tensors: 1,000 elements, 65,537 (more than one 64 Ki-element
chunk, and a tail), a 3x5 matrix, and a contiguous view at an odd element offset (no 16-byte
alignment: the element-by-element path). ``--device cpu`` runs the same code on a CPU backend
(``cpu``, or ``triton`` under ``TRITON_INTERPRET=1``): the CPU dry run of validate.sh uses it so
that this driver cannot rot where there is no GPU.

    python bench/gpu/sanitize_run.py --backend cuda            # on a GPU
    python bench/gpu/sanitize_run.py --backend cpu --device cpu --tiny
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda", help="cuda | triton | cpu | reference")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=3, help="steps per configuration (3)")
    ap.add_argument("--tiny", action="store_true",
                    help="smaller tensors (the CPU dry run; Triton's interpreter is slow)")
    ap.add_argument("--families", default="adam,adagrad,sgd,momentum,prologue")
    return ap.parse_args(argv)


ARGS = _parse(None) if __name__ == "__main__" else None
if ARGS is not None and ARGS.backend == "triton" and ARGS.device == "cpu":
    # Triton fixes interpreter mode when it is first imported (tests/test_triton_backend.py).
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402  (after TRITON_INTERPRET)

import fusedopt  # noqa: E402
from fusedopt.registry import ALGORITHMS  # noqa: E402


@dataclass(frozen=True)
class Config:
    """One optimizer configuration of a family."""

    label: str
    algo: str
    param_dtype: torch.dtype = torch.float32
    overrides: dict[str, Any] = field(default_factory=dict)
    #: run under fusedopt.amp.LossScaler (unscale + inf check in the norm pass)
    scaler: bool = False
    #: put an inf into one grad on the last step: the whole step must be skipped on the device
    inf_last: bool = False


FAMILIES: dict[str, list[Config]] = {
    "adam": [
        Config("adamw fp32", "adamw"),
        Config("adamw bf16 params, fp32 states, telemetry", "adamw", torch.bfloat16,
               {"telemetry": True}),
        Config("amsgrad bf16 states, clip", "amsgrad", torch.float32,
               {"state_dtype": torch.bfloat16, "max_grad_norm": 1.0}),
        Config("adaml (loss-aware scalars)", "adaml"),
    ],
    "adagrad": [
        Config("adagrad fp32, telemetry", "adagrad", overrides={"telemetry": True}),
        Config("adagrad_norm bf16", "adagrad_norm", torch.bfloat16),
    ],
    "sgd": [
        Config("nsgd fp32", "nsgd"),
        Config("clip_sgd fp32, telemetry", "clip_sgd", overrides={"telemetry": True}),
        Config("iansgd + record_normalizer, LossScaler", "iansgd", scaler=True),
    ],
    "momentum": [
        Config("nsgdm fp32", "nsgdm"),
        Config("nsgdm bf16 params, clip", "nsgdm", torch.bfloat16, {"max_grad_norm": 1.0}),
    ],
    "prologue": [
        Config("adamw clip + LossScaler fp32", "adamw", overrides={"max_grad_norm": 1.0},
               scaler=True),
        Config("adamw clip + LossScaler fp16 master weights, telemetry", "adamw", torch.float16,
               {"max_grad_norm": 1.0, "master_weights": True, "telemetry": True}, scaler=True),
        Config("adamw LossScaler, inf on the last step (skip)", "adamw",
               overrides={"max_grad_norm": 1.0}, scaler=True, inf_last=True),
    ],
}

SIZES = (1000, 65537, (3, 5), 4099)
TINY_SIZES = (1000, 5000, (3, 5), 1031)
#: init scale of the LossScaler configurations: grads are multiplied by it before the step
SCALE = 1024.0


def _tensors(sizes, dtype: torch.dtype, device: str, gen: torch.Generator
             ) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    """Params (the last one a view at an odd element offset of a larger buffer) and grads."""
    params = []
    for i, s in enumerate(sizes):
        shape = s if isinstance(s, tuple) else (s,)
        data = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
        if i == len(sizes) - 1:  # misaligned: a contiguous view starting at element 1
            base = torch.randn(data.numel() + 3, generator=gen).to(device=device, dtype=dtype)
            data = base[1:1 + data.numel()].view(shape)
        params.append(torch.nn.Parameter(data))
    grads = [torch.randn(p.shape, generator=gen).to(device=device, dtype=dtype) * 0.1
             for p in params]
    return params, grads


def run_config(cfg: Config, backend: str, device: str, steps: int, sizes) -> str:
    """Run ``steps`` steps of ``cfg``; return a one-line result, raise on a failed check."""
    info = ALGORITHMS[cfg.algo]
    gen = torch.Generator().manual_seed(len(cfg.label))
    params, grads = _tensors(sizes, cfg.param_dtype, device, gen)
    before = [p.detach().clone() for p in params]
    opt = info.make(params, backend=backend, **cfg.overrides)
    scaler = fusedopt.amp.LossScaler(init_scale=SCALE, growth_interval=2) if cfg.scaler else None
    loss = torch.tensor(1.5, device=device)
    kwargs = {"loss": loss} if info.needs_loss else {}
    last = None
    for step in range(steps):
        if step == steps - 1:
            last = [p.detach().clone() for p in params]
        scale = SCALE if scaler is not None else 1.0
        gs = [g * (scale * (1.0 + 0.1 * step)) for g in grads]
        if cfg.inf_last and step == steps - 1:
            gs[1].view(-1)[7] = float("inf")
        if info.needs_normalizer:  # IAN-SGD: the independent batch's norm pass first
            for p, g in zip(params, gs):
                p.grad = g.flip(0).contiguous() if g.dim() else g.clone()
            opt.record_normalizer(grad_scale=scaler.get_scale() if scaler else None)
        for p, g in zip(params, gs):
            p.grad = g
        if scaler is None:
            opt.step(**kwargs)
        else:
            scaler.step(opt, **kwargs)
            scaler.update()
    if device == "cuda":
        torch.cuda.synchronize()  # a kernel fault surfaces here at the latest
    for i, (p, p0, pl) in enumerate(zip(params, before, last)):
        if not torch.isfinite(p).all():
            raise AssertionError(f"{cfg.label}: param {i} has non-finite values")
        if cfg.inf_last:
            if not torch.equal(p, pl):
                raise AssertionError(f"{cfg.label}: param {i} changed on the skipped step")
        if torch.equal(p, p0):
            raise AssertionError(f"{cfg.label}: param {i} never changed")
    return f"{steps} steps on {len(params)} tensors ({sum(p.numel() for p in params)} elements)"


def main() -> int:
    args = ARGS if ARGS is not None else _parse(None)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("sanitize_run: no CUDA device", file=sys.stderr)
        return 2
    sizes = TINY_SIZES if args.tiny else SIZES
    print(f"sanitize_run: backend={args.backend} device={args.device} torch {torch.__version__}"
          f" fusedopt {fusedopt.__file__}", flush=True)
    failed = 0
    total = 0
    for family in args.families.split(","):
        for cfg in FAMILIES[family]:
            total += 1
            t0 = time.perf_counter()
            try:
                what = run_config(cfg, args.backend, args.device, args.steps, sizes)
            except Exception:  # report every configuration, then fail
                failed += 1
                print(f"FAIL {family}: {cfg.label}\n{traceback.format_exc()}", flush=True)
                continue
            print(f"ok   {family}: {cfg.label}: {what} in {time.perf_counter() - t0:.1f} s",
                  flush=True)
    print(f"sanitize_run: {total - failed} of {total} configurations ok "
          f"(backend {args.backend}, device {args.device})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
