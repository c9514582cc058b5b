"""Fuzz driver: corrupt checkpoints, swap ``.data`` and ``.grad.data``, recycle grad addresses
across dtypes, duplicate and overlap params — and demand "the right result or a clear Python
error" from a native backend, never a crash or a silent misread.

Run as a script (tests/test_fuzz.py runs it in a subprocess, so a crash fails that test
instead of killing the test run; tests/test_sanitizers.py runs it under ASan+UBSan)::

    python tests/fuzz_plan.py --examples 200 --backend cpu

Each example is drawn by hypothesis: an algorithm, a param set (dtypes, shapes, layouts) and a
sequence of edits between steps. It runs on the backend under test and on the ``reference``
backend (the oracle, which reads tensors through torch, not pointers): both must raise the
same kind of error (ValueError, TypeError or KeyError) or both must step, to the same params
within fp32 rounding. Before each example the driver prints its description, so when a crash
kills the process the last line says which case did it. The last line of a clean run is
``fuzz: N examples, M raised a clear error, 0 crashes``.
"""
from __future__ import annotations

import argparse
import copy
import sys
import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusedopt

CLEAR = (ValueError, TypeError, KeyError)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}
EDITS = ("none", "grow_param", "shrink_param", "param_dtype", "transpose_param",
         "slice_param", "grad_dtype", "grad_size", "grad_strided", "recycled_grads",
         "state_shape", "state_missing", "state_dtype_int", "state_not_tensor", "step_nan",
         "state_strided", "state_extra", "replace_state", "clear_state", "moment_data_swap",
         "amsgrad_on", "duplicate_param", "overlap_params")
ALGOS = {"adamw": lambda ps, b: fusedopt.AdamW(ps, lr=0.05, backend=b),
         "adam_amsgrad": lambda ps, b: fusedopt.Adam(ps, lr=0.05, amsgrad=True, backend=b),
         "adagrad": lambda ps, b: fusedopt.Adagrad(ps, lr=0.05, backend=b),
         "adamw_clip_master": lambda ps, b: fusedopt.AdamW(ps, lr=0.05, max_grad_norm=1.0,
                                                           master_weights=True, backend=b)}


def _params(spec, dtype):
    gen = torch.Generator().manual_seed(spec["seed"])
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in spec["shapes"]]


def _set_grads(params, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


def _edit(name, opt, params, rng):
    """Apply edit ``name`` between two steps (grads already set for the next step)."""
    i = rng % len(params)
    p = params[i]
    if name == "grow_param":
        p.data = torch.randn(p.shape[0] * 2, *p.shape[1:]).to(p.dtype)
        p.grad = torch.randn_like(p)
    elif name == "shrink_param":
        p.data = p.data[: max(1, p.shape[0] // 2)]
        p.grad = torch.randn_like(p)
    elif name == "param_dtype":
        p.data = p.data.to(torch.float64 if p.dtype != torch.float64 else torch.float32)
    elif name == "transpose_param" and p.dim() == 2:
        p.data = p.data.t().contiguous().t()  # same values, other (dense) strides
    elif name == "slice_param" and p.dim() == 2 and p.shape[1] > 1:
        base = torch.zeros(p.shape[0], p.shape[1] * 2, dtype=p.dtype)
        base[:, ::2] = p.data
        p.data = base[:, ::2]  # same values, a view with gaps
    elif name == "grad_dtype":
        p.grad.data = p.grad.data.to(torch.float64 if p.dtype != torch.float64 else torch.bfloat16)
    elif name == "grad_size":
        p.grad.data = torch.randn(p.numel() + 7).to(p.grad.dtype)
    elif name == "grad_strided" and p.dim() == 2:
        p.grad = p.grad.t().contiguous().t()
    elif name == "recycled_grads":
        shapes = [q.shape for q in params]
        for q in params:
            q.grad = None
        for q, s in zip(params, shapes):  # freed and re-allocated: addresses may repeat
            q.grad = torch.randn(s).to(q.dtype)
        p.grad.data = p.grad.data.to(torch.float16)
    elif name.startswith("state_") or name == "step_nan":
        sd = copy.deepcopy(opt.state_dict())
        st_i = sd["state"].get(i, {})
        key = next((k for k in ("exp_avg", "sum", "exp_avg_sq") if k in st_i), None)
        if key is None:
            return
        if name == "state_shape":
            st_i[key] = torch.zeros(max(1, p.numel() - 1))
        elif name == "state_missing":
            del st_i[key]
        elif name == "state_dtype_int":
            st_i[key] = st_i[key].to(torch.int32)
        elif name == "state_not_tensor":
            st_i[key] = [1.0, 2.0]
        elif name == "step_nan":
            st_i["step"] = torch.tensor(float("nan"))
        elif name == "state_strided" and st_i[key].dim() == 2:
            st_i[key] = st_i[key].t().contiguous().t()
        elif name == "state_extra":
            st_i["foreign"] = torch.zeros(3)
        opt.load_state_dict(sd)
    elif name == "replace_state":
        opt.state[p] = {k: (v.clone() * 0.5 if k not in ("step",) and v.is_floating_point()
                            and v.dim() > 0 else v.clone())
                        for k, v in opt.state[p].items()}
    elif name == "clear_state":
        opt.state.clear()
    elif name == "moment_data_swap":
        st_ = opt.state[p]
        key = next((k for k in ("exp_avg", "sum") if k in st_), None)
        if key is not None:
            st_[key].data = torch.zeros(st_[key].numel() + 5, dtype=st_[key].dtype)
    elif name == "amsgrad_on":
        opt.param_groups[0]["amsgrad"] = True


def run_case(case, backend):
    """("ok", params) or ("error", exception type name); every step's exceptions are caught."""
    torch.manual_seed(case["seed"])  # the edits draw from the global generator: same draws
    dtype = DTYPES[case["dtype"]]
    params = _params(case, dtype)
    listed = list(params)
    if case["edits"][0] == "duplicate_param":
        listed = params + params[:1]
    if case["edits"][0] == "overlap_params" and params[0].numel() > 2:
        base = params[0].detach().reshape(-1)
        listed = [torch.nn.Parameter(base[:-1]), torch.nn.Parameter(base[1:])]
        params = listed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = ALGOS[case["algo"]](listed, backend)
        for t, name in enumerate(case["edits"]):
            _set_grads(params, 100 + t)
            opt.step()
            _set_grads(params, 200 + t)
            _edit(name, opt, params, case["seed"] + t)
            opt.step()
    except CLEAR as e:
        return "error", type(e).__name__
    return "ok", [p.detach().double().clone() for p in params]


cases = st.fixed_dictionaries({
    "algo": st.sampled_from(sorted(ALGOS)),
    "dtype": st.sampled_from(sorted(DTYPES)),
    "seed": st.integers(0, 10_000),
    "shapes": st.lists(st.sampled_from([(3,), (4, 5), (17,), (6, 3), (1,), (0,), (2, 9)]),
                       min_size=1, max_size=4),
    "edits": st.lists(st.sampled_from(EDITS), min_size=1, max_size=3),
})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--backend", default="cpu")
    args = ap.parse_args(argv)
    counts = {"examples": 0, "errors": 0}

    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case):
        counts["examples"] += 1
        print("case", case, flush=True)
        got = run_case(case, args.backend)
        want = run_case(case, "reference")
        assert got[0] == want[0], f"{case}: {args.backend} {got} vs reference {want}"
        if got[0] == "error":
            counts["errors"] += 1
            assert got[1] == want[1], f"{case}: {got[1]} vs reference {want[1]}"
            return
        for a, b in zip(got[1], want[1]):
            tol = 2e-2 if case["dtype"] == "bf16" else 1e-5
            assert a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol, equal_nan=True), (
                f"{case}: params differ from the reference")

    check()
    print(f"fuzz: {counts['examples']} examples, {counts['errors']} raised a clear error, "
          "0 crashes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
