"""docs/migration.md's checkpoint claims: Apex / DeepSpeed optimizer state_dicts load into
fusedopt and training continues as torch.optim would.

Neither Apex nor DeepSpeed is installed here, so their state_dicts are written in their formats
(read in ``apex/optimizers/fused_adam.py``, ``deepspeed/ops/adam/fused_adam.py`` and
``deepspeed/ops/adam/cpu_adam.py``) from a torch.optim run of the same algorithm: Apex keeps one
int ``step`` per param group, DeepSpeed's FusedAdam an int ``step`` per param that only the
group's last param advances, DeepSpeedCPUAdam a correct int ``step`` per param. The conversion
function is executed from the documentation itself, so the page and the test cannot drift.
"""
from __future__ import annotations

import copy
import pathlib
import re

import pytest
import torch

import fusedopt

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "migration.md"
K_STEPS, N_STEPS = 4, 6
SHAPES = [(5, 3), (7,), (1,)]
KW = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)


def _doc_function(name: str):
    """Execute the python block of docs/migration.md that defines ``name``; return it."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    source = next(b for b in blocks if f"def {name}(" in b)
    source = "\n".join(line for line in source.splitlines() if "torch.load(" not in line)
    namespace: dict = {}
    exec(compile(source, str(DOC), "exec"), namespace)  # noqa: S102 (our own documentation)
    return namespace[name]


def _params():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen).requires_grad_() for s in SHAPES]


def _drive(opt, params, steps, start):
    for t in range(start, start + steps):
        gen = torch.Generator().manual_seed(100 + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()


def _apex(sd):
    """Apex FusedAdam: ``step`` per group (an int), none per param; ``bias_correction`` key."""
    out = copy.deepcopy(sd)
    for group in out["param_groups"]:
        group["step"] = int(out["state"][group["params"][0]]["step"])
        group["bias_correction"] = True
        for i in group["params"]:
            del out["state"][i]["step"]
    return out


def _deepspeed_fused(sd):
    """DeepSpeed FusedAdam: an int ``step`` per param, advanced on the group's last param only."""
    out = copy.deepcopy(sd)
    for group in out["param_groups"]:
        group["bias_correction"] = True
        for i in group["params"]:
            out["state"][i]["step"] = int(out["state"][i]["step"]) if i == group["params"][-1] else 0
    return out


def _deepspeed_cpu(sd):
    """DeepSpeedCPUAdam: an int ``step`` per param; ``bias_correction``, ``amsgrad`` keys."""
    out = copy.deepcopy(sd)
    for group in out["param_groups"]:
        group["bias_correction"] = True
        for i in group["params"]:
            out["state"][i]["step"] = int(out["state"][i]["step"])
    return out


@pytest.mark.parametrize("fmt,convert", [("apex", True), ("deepspeed_fused", True),
                                         ("deepspeed_cpu", False)])
@pytest.mark.parametrize("decoupled", [True, False])
def test_foreign_checkpoint_continues_like_torch(fmt, convert, decoupled):
    """k torch.optim steps, saved in the foreign format, loaded into fusedopt (converted with the
    documented function where the page says so), n more steps == k + n torch.optim steps to
    rounding (<= 1e-6 relative, the reference's bound against torch.optim)."""
    torch_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ours_cls = fusedopt.AdamW if decoupled else fusedopt.Adam
    straight = _params()
    _drive(torch_cls(straight, **KW), straight, K_STEPS + N_STEPS, 0)

    params = _params()
    first = torch_cls(params, **KW)
    _drive(first, params, K_STEPS, 0)
    foreign = {"apex": _apex, "deepspeed_fused": _deepspeed_fused,
               "deepspeed_cpu": _deepspeed_cpu}[fmt](first.state_dict())
    sd = _doc_function("to_fusedopt_state_dict")(foreign) if convert else foreign
    opt = ours_cls(params, backend="reference", **KW)
    opt.load_state_dict(sd)
    for p in params:
        assert opt.state[p]["step"].dtype == torch.float32
        assert float(opt.state[p]["step"]) == K_STEPS
    _drive(opt, params, N_STEPS, K_STEPS)
    for a, b in zip(params, straight):
        assert float((a - b).detach().abs().max()) <= 1e-6 * float(b.detach().abs().max())
    assert all(float(opt.state[p]["step"]) == K_STEPS + N_STEPS for p in params)


def test_conversion_keeps_moments_and_drops_group_step():
    params = _params()
    first = torch.optim.AdamW(params, **KW)
    _drive(first, params, K_STEPS, 0)
    apex = _apex(first.state_dict())
    out = _doc_function("to_fusedopt_state_dict")(apex)
    assert all("step" not in g for g in out["param_groups"])
    assert "step" in apex["param_groups"][0]  # the input is left as it was
    for i, st in out["state"].items():
        assert torch.equal(st["exp_avg"], apex["state"][i]["exp_avg"])
        assert st["step"].shape == () and float(st["step"]) == K_STEPS
