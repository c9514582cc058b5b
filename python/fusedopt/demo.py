"""``python -m fusedopt.demo``: a short training run, fusedopt next to torch.optim.

Trains the same small MLP (synthetic regression, seeded) with ``torch.optim.AdamW`` and with
``fusedopt.AdamW`` on the best backend built here, once plain and once with global-norm
clipping under a dynamic loss scale (``fusedopt.amp.LossScaler``: unscale, inf check and clip
folded into the step), and prints a table: final loss, how far the parameters are from
torch.optim's, time per optimizer step.
"""
from __future__ import annotations

import argparse
import time

import torch

import fusedopt


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(),
                               torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 8))


def _data(steps: int, batch: int):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 8, generator=gen) / 8
    for _ in range(steps):
        x = torch.randn(batch, 64, generator=gen)
        yield x, torch.tanh(x @ w) + 0.05 * torch.randn(batch, 8, generator=gen)


def _train(make_opt, steps: int, batch: int, clip: float | None, scaler=None):
    model = _model(1)
    opt = make_opt(model.parameters())
    step_time, loss = 0.0, torch.zeros(())
    for x, y in _data(steps, batch):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        t0 = time.perf_counter()
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
        step_time += time.perf_counter() - t0
    return model, float(loss.detach()), step_time / steps, opt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fusedopt.demo",
                                 description=__doc__.split("\n\n")[1].replace("\n", " "))
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per run (300)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (128)")
    ap.add_argument("--backend", default="auto",
                    help="fusedopt backend: auto, cuda, triton, cpu or reference (auto)")
    args = ap.parse_args(argv)
    lr, wd, clip = 1e-3, 1e-2, 1.0
    rows = []
    for mode in ("plain", "clip+amp"):
        use_clip = clip if mode == "clip+amp" else None
        ref_model, ref_loss, ref_t, _ = _train(
            lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=wd), args.steps, args.batch,
            use_clip)
        scaler = fusedopt.amp.LossScaler(init_scale=2.0 ** 12) if mode == "clip+amp" else None
        model, loss, t, opt = _train(
            lambda ps: fusedopt.AdamW(ps, lr=lr, weight_decay=wd, max_grad_norm=use_clip,
                                      backend=args.backend), args.steps, args.batch, None, scaler)
        diff = max(float((a - b).detach().abs().max() / b.detach().abs().max())
                   for a, b in zip(model.parameters(), ref_model.parameters()))
        rows.append((mode, "torch.optim.AdamW", "-", ref_loss, "-", ref_t))
        rows.append((mode, "fusedopt.AdamW", opt.backend, loss, f"{diff:.1e}", t))
    print(f"fusedopt demo: MLP 64-256-256-8, {args.steps} steps, batch {args.batch}, "
          f"lr {lr}, weight decay {wd}; clip+amp: max_grad_norm {clip} + LossScaler "
          f"(torch: clip_grad_norm_, no scaling)")
    head = f"{'mode':9} {'optimizer':18} {'backend':9} {'final loss':>10} " \
           f"{'max rel. param diff vs torch':>28} {'ms/step':>8}"
    print(head)
    print("-" * len(head))
    for mode, name, backend, loss, diff, t in rows:
        print(f"{mode:9} {name:18} {backend:9} {loss:10.5f} {diff:>28} {t * 1e3:8.3f}")


if __name__ == "__main__":
    main()
