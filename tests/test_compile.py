"""torch.compile(fullgraph=True) of a training step that calls opt.step(): no graph break (a
break would raise), results as eager; the compiled optimizer step alone is bitwise eager's."""
from __future__ import annotations

import pytest
import torch

import fusedopt

BACKENDS = [b for b in fusedopt.available_backends("cpu") if b != "triton"]
CASES = {
    "adamw_clip_telemetry": (fusedopt.AdamW, dict(lr=1e-2, max_grad_norm=0.5, telemetry=True)),
    "adam_bf16_master": (fusedopt.Adam, dict(lr=1e-2, weight_decay=0.01, master_weights=True)),
    "adaml": (fusedopt.AdamL, dict(lr=1e-2, f_star=0.0)),
    "nsgd": (fusedopt.NSGD, dict(lr=0.05)),
}


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 2)).to(dtype)


def _step_fn(model, opt):
    def train_step(x, y):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if isinstance(opt, fusedopt.AdamL):
            opt.step(loss=loss.detach())
        else:
            opt.step()
        return loss.detach()
    return train_step


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_compiled_training_step_fullgraph(case, backend):
    cls, kw = CASES[case]
    dtype = torch.bfloat16 if "bf16" in case else torch.float32
    tol = 4 * torch.finfo(dtype).eps * 8  # 4 steps of a few ulps each
    eager_model, compiled_model = _model(dtype), _model(dtype)
    eager_opt = cls(eager_model.parameters(), backend=backend, **kw)
    compiled_opt = cls(compiled_model.parameters(), backend=backend, **kw)
    eager = _step_fn(eager_model, eager_opt)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(_step_fn(compiled_model, compiled_opt), fullgraph=True)
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            x = torch.randn(4, 8, generator=gen).to(dtype)
            y = torch.randn(4, 2, generator=gen).to(dtype)
            eager_opt.zero_grad()
            compiled_opt.zero_grad()
            a, b = eager(x, y), compiled(x, y)
            assert torch.allclose(a.float(), b.float(), rtol=tol, atol=0)
    # inductor generates its own forward/backward kernels: the grads (not the optimizer, see
    # the next test) differ from eager by a few ulps, so params agree to a few ulps
    for p, q in zip(eager_model.parameters(), compiled_model.parameters()):
        assert torch.allclose(p.detach().float(), q.detach().float(), rtol=tol, atol=tol)
        for key, v in eager_opt.state[p].items():
            w = compiled_opt.state[q][key]
            assert torch.allclose(v.double(), w.double(), rtol=tol, atol=tol), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_optimizer_step_alone(backend):
    """The common pattern: compile only ``opt.step`` (backward stays eager)."""
    model = _model(torch.float32)
    opt = fusedopt.AdamW(model.parameters(), lr=1e-2, max_grad_norm=1.0, backend=backend)
    torch._dynamo.reset()
    step = torch.compile(opt.step, fullgraph=True)
    ref_model = _model(torch.float32)
    ref = fusedopt.AdamW(ref_model.parameters(), lr=1e-2, max_grad_norm=1.0, backend=backend)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x, y = torch.randn(4, 8, generator=gen), torch.randn(4, 2, generator=gen)
        for m, o in ((model, opt), (ref_model, ref)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        step()
        ref.step()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p.detach(), q.detach())
