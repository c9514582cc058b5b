"""Drop-in details beyond torch's OptimizerInfo sweeps (tests/test_torch_optim_db.py): the
"auto" backend policy for unvalidated GPU backends, ``capturable``'s meaning, torch.optim's
flags accepted, and the ``maximize`` flag flowing to every backend call."""
from __future__ import annotations

import warnings

import pytest
import torch

import fusedopt
from fusedopt import backends
from fusedopt.backends import cuda_backend, triton_backend


@pytest.fixture
def fake_gpu_backends(monkeypatch):
    """cuda and triton built and able to run on 'cuda' tensors, but unvalidated."""
    real = backends.availability
    monkeypatch.setattr(backends, "availability",
                        lambda name: (True, "fake") if name in ("cuda", "triton") else real(name))
    monkeypatch.setattr(cuda_backend, "supports", lambda device: True)
    monkeypatch.setattr(triton_backend, "supports", lambda device: True)
    monkeypatch.setattr(cuda_backend, "UNVALIDATED", "not yet run on a GPU")
    monkeypatch.setattr(triton_backend, "UNVALIDATED", "not yet run on a GPU")
    monkeypatch.setattr(backends, "_WARNED", set())


def test_auto_never_picks_an_unvalidated_backend(fake_gpu_backends):
    """Finding 9: auto selected the cuda and triton backends though they never ran on a GPU."""
    with pytest.warns(UserWarning, match=r"backend='cuda' or backend='triton'"):
        chosen = backends.resolve("auto", torch.device("cuda"))
    assert chosen.NAME == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        assert backends.resolve("auto", torch.device("cuda")).NAME == "reference"


def test_naming_an_unvalidated_backend_still_works(fake_gpu_backends):
    with pytest.warns(UserWarning, match="not yet run on a GPU"):
        assert backends.resolve("cuda", torch.device("cuda")).NAME == "cuda"
    with pytest.warns(UserWarning, match="not yet run on a GPU"):
        assert backends.resolve("triton", torch.device("cuda")).NAME == "triton"


def test_auto_picks_a_validated_backend_without_warning(fake_gpu_backends, monkeypatch):
    monkeypatch.setattr(cuda_backend, "UNVALIDATED", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("auto", torch.device("cuda")).NAME == "cuda"


def test_auto_on_cpu_is_the_native_backend():
    expected = "cpu" if "cpu" in backends.available_backends("cpu") else "reference"
    assert fusedopt.AdamW([torch.nn.Parameter(torch.randn(2))]).backend == expected


@pytest.mark.parametrize("flags", [dict(maximize=False), dict(foreach=None), dict(foreach=False),
                                   dict(foreach=True), dict(fused=None), dict(fused=False),
                                   dict(fused=True), dict(differentiable=False),
                                   dict(capturable=False)])
def test_torch_default_flags_are_accepted(flags):
    opt = fusedopt.AdamW([torch.nn.Parameter(torch.randn(3))], backend="reference", **flags)
    for key, value in flags.items():
        assert opt.param_groups[0][key] == value or key == "capturable"


def test_differentiable_is_refused():
    with pytest.raises(ValueError, match="differentiable"):
        fusedopt.AdamW([torch.nn.Parameter(torch.randn(3))], differentiable=True)


def test_capture_without_capturable_raises_like_torch(monkeypatch):
    """capturable=False: a step under CUDA-graph capture raises torch's error (no GPU here:
    the capture state and the device are faked)."""
    p = torch.nn.Parameter(torch.randn(3))
    opt = fusedopt.AdamW([p], backend="reference")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    opt._device = torch.device("cuda")
    p.grad = torch.randn(3)
    with pytest.raises(RuntimeError, match="capturable is False"):
        opt.step()


def test_capturable_refuses_a_host_lr_for_device_params():
    """capturable=True: a CPU lr would be frozen into the graph, so it must be on the device
    (checked by _validate_group: the device is faked, as no GPU is here)."""
    opt = fusedopt.AdamW([torch.nn.Parameter(torch.randn(3))], backend="reference",
                         capturable=True)
    opt._device = torch.device("cuda")
    group = dict(opt.param_groups[0], lr=torch.tensor(1e-3))
    with pytest.raises(ValueError, match="capturable"):
        opt._validate_group(group)


def test_capturable_plan_rebuild_during_capture_raises(monkeypatch):
    p = torch.nn.Parameter(torch.randn(3))
    opt = fusedopt.AdamW([p], backend="reference", capturable=True)
    p.grad = torch.randn(3)
    opt.step()  # eager step builds the plan
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    opt._device = torch.device("cuda")
    p.grad = torch.randn(3)  # a new grad object: the plan would have to be rebuilt
    with pytest.raises(RuntimeError, match="CUDA graph is being captured"):
        opt.step()


@pytest.mark.parametrize("backend", [b for b in ("cpu", "reference")
                                     if b in backends.available_backends("cpu")])
@pytest.mark.parametrize("cls,kw,tcls,tkw", [
    (fusedopt.AdamW, {}, torch.optim.AdamW, {}),
    (fusedopt.Adam, dict(amsgrad=True), torch.optim.Adam, dict(amsgrad=True)),
    (fusedopt.Adagrad, dict(lr=0.05), torch.optim.Adagrad, dict(lr=0.05)),
])
def test_maximize_matches_torch(backend, cls, kw, tcls, tkw):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt = cls(ps, backend=backend, maximize=True, **kw)
    topt = tcls(qs, maximize=True, **tkw)
    for t in range(20):
        gen = torch.Generator().manual_seed(t)
        for p, q in zip(ps, qs):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        topt.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
