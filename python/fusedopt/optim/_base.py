"""The base every fusedopt optimizer shares: options, validation, state, the step plan, AMP,
telemetry, checkpoints.

A step runs in this order (docs/architecture.md, "A step"):

1. validate every group's hyperparameters and, through the plan (Note [step plan] in
   optim/_plan.py), everything the kernels will touch — nothing is mutated before this ends;
2. create missing state (``step`` 0-d fp32 on the param device, the algorithm's moments in the
   state dtype and the param's layout, an fp32 master copy when asked);
3. the prologue, when clipping, AMP or the algorithm needs it: one norm pass over every grad of
   every group writing the grad norm, found_inf and the gradient coefficient to the device stats;
4. the algorithm's global scalars (AdamL, SGD family) on the device;
5. one update call per (param group, storage dtypes) bucket.

No value is read on the host in between: lr, step, the loss scale and the loss may be device
tensors, and a non-finite gradient under AMP skips the step on the device.
"""
from __future__ import annotations

import math
import operator
import warnings
from copy import deepcopy
from itertools import chain
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import _stats as S
from .._shim import step_signature
from .. import backends
from ..backends import Bucket
from ..ops import Kernels
from . import _distributed as D
from . import _layout as L
from . import _validation as V
from ._plan import ParamInfo, Plan, grad_ref, pick
from ._step_hooks import hooked_step
from ._state import ParamState, StateDict, StateVersion, as_state_dict

_GRAD = operator.attrgetter("grad")
_data_ptr = Tensor.data_ptr
_numel = Tensor.numel
_call = operator.call if hasattr(operator, "call") else (lambda f: f())
_HALF = (torch.float16, torch.bfloat16)
_F32 = torch.float32
_STRIDED = torch.strided

#: attributes rebuilt after unpickling / deep-copying instead of copied (module objects,
#: process groups, caches of device memory, the step plan)
_TRANSIENT = ("_backend", "_last_plan", "_caches", "_dist_groups", "_zero_groups",
              "_loss_scaler", "_hyper_memo")


def _identity(t: Tensor) -> Tensor:
    return t


class FusedOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` whose whole step runs as fused passes of one backend.

    Common keyword arguments (``**common`` in the subclasses' signatures):

    Args:
        max_grad_norm: clip by the global L2 norm of all grads (``clip_grad_norm_`` semantics,
            fused into the step: one extra read pass). None disables clipping.
        backend: ``"auto"`` (the validated backend for the params' device: ``cpu`` on CPU
            tensors, ``reference`` on CUDA tensors until the GPU kernels have passed their
            tests on a GPU), ``"cuda"``, ``"triton"``, ``"cpu"`` or ``"reference"`` (pure
            PyTorch, the test oracle).
        capturable: torch.optim's meaning: the step may be captured in a CUDA graph. A tensor
            lr must then live on the param device (a CPU lr would be frozen into the graph),
            and a step that would rebuild its plan while the stream is capturing raises.
            Without it, capturing a step raises as torch.optim does.
        state_dtype: storage dtype of the moments: None (fp32 for 16-bit params, the param dtype
            otherwise), ``torch.float32`` or ``torch.bfloat16``. fp64 params keep fp64 states.
        master_weights: keep an fp32 master copy of bf16/fp16 params (state key
            ``master_param``); the update runs on it and rounds into the param. A param
            written from outside (``load_state_dict`` of the model, ``p.clamp_()``) no longer
            equals its master rounded: the kernels then re-seed the master from the param
            (docs/numerics.md, "Kernel rules": master re-seed).
        telemetry: collect grad / update / param norms in the step (read ``last_stats``).
        maximize, foreach, fused, differentiable: torch.optim's flags. ``maximize`` ascends
            (the gradient is negated); ``foreach``/``fused`` are accepted (every fusedopt step
            is fused); ``differentiable=True`` is refused.
    """

    _step_supports_amp_scaling = True
    #: registry key of the algorithm (one name in every layer)
    algorithm: ClassVar[str] = ""
    #: does the algorithm need the grad norm every step (NSGD, AdaGrad-Norm)?
    _needs_grad_norm: ClassVar[bool] = False
    #: does the update always read the prologue slots (AdamL's loss check)?
    _needs_prologue: ClassVar[bool] = False

    def __init__(self, params: Iterable, defaults: dict[str, Any], *,
                 max_grad_norm: float | None = None, backend: str = "auto",
                 capturable: bool = False, state_dtype: torch.dtype | None = None,
                 master_weights: bool = False, telemetry: bool = False,
                 maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, differentiable: bool = False) -> None:
        owner = self._owner()
        if max_grad_norm is not None:
            V.check_number(owner, "max_grad_norm", max_grad_norm, low=0.0, low_open=True)
        if backend != "auto" and backend not in backends.BACKENDS:
            raise ValueError(f"{owner}: backend must be one of "
                             f"{('auto',) + backends.BACKENDS}, got {backend!r}")
        if state_dtype not in V.STATE_DTYPES:
            raise ValueError(f"{owner}: state_dtype must be None, torch.float32 or "
                             f"torch.bfloat16, got {state_dtype}")
        if differentiable:
            raise ValueError(f"{owner}: differentiable=True is not supported (the fused step "
                             "writes through raw pointers, outside autograd)")
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.backend_name = backend
        self.capturable = bool(capturable)
        self.state_dtype = state_dtype
        self.master_weights = bool(master_weights)
        self.telemetry = bool(telemetry)
        self._device: torch.device | None = None
        self._caches: dict[tuple, dict] = {}
        self._loss_scaler = None
        self._prologue_norm = False
        self._last_plan: Plan | None = None
        self._hyper_memo: dict[int, Any] = {}
        defaults = {**defaults, "maximize": bool(maximize), "foreach": foreach, "fused": fused,
                    "capturable": self.capturable, "differentiable": False}
        super().__init__(params, defaults)
        all_params = [p for g in self.param_groups for p in g["params"]]
        self._dist_groups = D.shard_groups(all_params, owner)
        self._zero_groups = D.zero_groups(owner, self.max_grad_norm is not None)
        self._backend = Kernels(backends.resolve(backend, self._device))
        self._stats = torch.zeros(S.NUM_SLOTS, dtype=torch.float64, device=self._device)
        self._stats[S.CLIP_COEF] = 1.0
        self._stats[S.COEF] = 1.0

    # ------------------------------------------------------------------ hooks for subclasses
    def _validate_group(self, group: dict[str, Any], *, read: bool = False) -> None:
        """Raise ValueError/TypeError for a bad hyperparameter of ``group`` (subclass).
        ``read``: also read device tensor hyperparameters (construction, loading)."""
        owner = self._owner()
        V.check_lr(owner, group["lr"], self._device, read=read)
        if group.get("differentiable"):
            raise ValueError(f"{owner}: differentiable=True is not supported")
        if self.capturable and isinstance(group["lr"], Tensor) and self._device is not None \
                and self._device.type != "cpu" and group["lr"].device.type == "cpu":
            raise ValueError(f"{owner}: capturable=True needs a tensor lr on {self._device}; "
                             "a CPU lr would be frozen into a captured graph")

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The per-param state tensors the kernels read for ``group`` besides ``step`` and
        ``master_param`` (subclass), in the order the backends take them."""
        return ()

    def _init_param_state(self, p: Tensor, group: dict[str, Any], state_dtype: torch.dtype
                          ) -> dict[str, Tensor]:
        """The algorithm's state tensors for a new param (besides step and master), in the
        param's layout (``torch.zeros_like`` keeps a dense layout)."""
        raise NotImplementedError

    def _run_updates(self, groups: list[tuple[dict, list[Bucket]]], stats: Tensor,
                     use_prologue: bool, loss: Tensor | None) -> None:
        """Compute the algorithm's global scalars and call the backend once per bucket."""
        raise NotImplementedError

    # ------------------------------------------------------------------ construction
    @classmethod
    def _owner(cls) -> str:
        return f"fusedopt.{cls.__name__}"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group (params and hyperparameters) first, then add it as torch does.

        A param listed twice is kept once, with torch.optim's warning (torch would step it
        twice, once per listing); params that share memory are refused (Note [kernel layout]).
        """
        owner = self._owner()
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        if not isinstance(self.state, StateDict):
            self.state = as_state_dict(self.state)
        params = param_group["params"]
        if isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        params = [params] if isinstance(params, Tensor) else list(params)
        params = self._dedupe(params)
        param_group = {**param_group, "params": params}
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        names = [p[0] for p in params if isinstance(p, tuple)]
        gi = len(self.param_groups)
        device = self._device
        for i, p in enumerate(tensors):
            label = V.param_label({"param_names": names}, i, gi)
            V.check_param(owner, p, label, device)
            if L.self_overlaps(D.local(p)):
                raise ValueError(f"{owner}: {label} has elements that share memory (e.g. an "
                                 "expand()); an element-wise update of it is undefined")
            device = p.device
        self._device = device
        merged = {**self.defaults, **param_group}
        self._validate_group(merged, read=True)
        super().add_param_group(param_group)
        self.__dict__["_last_plan"] = None
        # State is created here, not at the first step (as torch.optim.Adagrad does): a fresh
        # optimizer then has a full state_dict, which torch.distributed.checkpoint loads into
        # without the dummy step it would otherwise take (and AdamL/IAN-SGD could not take).
        group = self.param_groups[-1]
        for p in group["params"]:
            if p.requires_grad:
                self._ensure_state(p, group)

    @staticmethod
    def _dedupe(params: list) -> list:
        seen: set[int] = set()
        out = []
        for p in params:
            t = p[1] if isinstance(p, tuple) else p
            if id(t) in seen:
                continue
            seen.add(id(t))
            out.append(p)
        if len(out) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "fusedopt keeps one of each (torch.optim would step such a param "
                          "once per listing)", stacklevel=4)
        return out

    # ------------------------------------------------------------------ state
    def _state_dtype_for(self, p: Tensor) -> torch.dtype:
        if p.dtype == torch.float64:
            return torch.float64
        if self.state_dtype is not None:
            return self.state_dtype
        return torch.float32 if p.dtype in _HALF else p.dtype

    def _uses_master(self, p: Tensor) -> bool:
        return self.master_weights and p.dtype in _HALF

    def _init_global_state(self) -> dict[str, Tensor]:
        """0-d device tensors global to the optimizer (AdamL's loss statistics, AdaGrad-Norm's
        accumulator); empty for most algorithms (subclass)."""
        return {}

    @property
    def _globals(self) -> dict[str, Tensor]:
        """Note [global state]: global tensors live in every param's state under their own key,
        all entries the same tensor object, so that the state_dict stays keyed by params only
        (what torch.distributed.checkpoint requires) and a checkpoint restores them."""
        if "_global_state" not in self.__dict__:
            self._global_state = self._init_global_state()
        return self._global_state

    def _ensure_state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if len(state) == 0:
            fresh = {"step": torch.zeros((), dtype=torch.float32, device=p.device)}
            fresh.update(self._init_param_state(p, group, self._state_dtype_for(p)))
            if self._uses_master(p):
                fresh["master_param"] = p.detach().to(torch.float32).clone()
            fresh.update(self._globals)
            state.update(fresh)
        return state

    # ------------------------------------------------------------------ the step plan
    def _flat_params(self) -> list[Tensor]:
        return list(chain.from_iterable(g["params"] for g in self.param_groups))

    def _group_keys(self) -> list[tuple]:
        return [(id(g), id(g["params"]), len(g["params"]), self._state_keys(g))
                for g in self.param_groups]

    def _validate_groups(self) -> None:
        for group in self.param_groups:
            self._validate_group(group)

    def _plan(self) -> Plan:
        """The validated plan of this step, its buckets holding this step's grads (Note [step
        plan]). Reused while its signature holds; while ``torch.compile`` traces, built anew
        (the trace runs once)."""
        if torch.compiler.is_compiling():
            self._hyper_memo.clear()
            self._validate_groups()
            return self._trace_plan()
        plan = self._last_plan
        if plan is not None and (self.state is not plan.state
                                 or plan.state.version != plan.version):
            plan = None
        if plan is None or not self._same_hyper(plan):
            self._hyper_memo.clear()
            self._validate_groups()
            if plan is not None and self._group_keys() != plan.group_keys:
                plan = None
            if plan is not None:
                plan.hyper = self._hyper_snapshot()
        if plan is not None:
            plan = self._reuse(plan)
        if plan is None:
            self._check_capture("params or state changed")
            # the backends' tables are keyed by what they can check cheaply (addresses of
            # params and grads, identity of states): after a full revalidation start afresh
            self._caches.clear()
            plan = self._build_plan(self._flat_params())
        self._last_plan = plan
        return plan

    def _reuse(self, plan: Plan) -> Plan | None:
        """``plan`` with this step's grads when its params and states are unchanged (None
        otherwise): checked by the native step signature when there is one, else in Python."""
        if plan.native is not None:
            found = plan.native.check(self.param_groups)
            if found.__class__ is tuple:
                kgrads, moved = found
                if moved:  # tables get the new addresses: not inside a captured graph
                    self._check_capture("grads moved")
                    self._move_grads(plan)
                self._fill(plan, kgrads)
                return plan
            if found == 2:
                return None
            self._check_capture("grads changed")
            return self._rebuild_buckets(plan, list(map(_GRAD, plan.params)))
        params = self._flat_params()
        if (len(params) != len(plan.params)
                or not all(map(operator.is_, params, plan.params))
                or list(map(_data_ptr, plan.watched)) != plan.watched_ptrs
                or list(map(_numel, plan.kernel_params)) != plan.param_numels):
            return None
        grads = list(map(_GRAD, params))
        same = all(map(operator.is_, map(_call, plan.grad_refs), grads))
        if same and not plan.staged_grads:
            kgrads = pick(grads, plan.with_grad)
            if self._dist_groups:
                kgrads = list(map(D.local, kgrads))
            try:
                ptrs = list(map(_data_ptr, kgrads))
            except TypeError:  # a grad set to None since (its dead weak reference is None)
                ptrs = None
            if ptrs == plan.grad_ptrs and list(map(_numel, kgrads)) == plan.grad_numels:
                self._fill(plan, kgrads)
                return plan
        self._check_capture("grads changed")
        return self._rebuild_buckets(plan, grads)

    def _hyper_snapshot(self) -> list[tuple]:
        """Per group what ``_same_hyper`` compares: the dict, its keys, its values, and whether
        a value can change in place (a container, or a tensor other than the lr, which the
        kernels read on the device): such a group is validated every step."""
        return [(g, tuple(g), tuple(g.values()),
                 any(isinstance(v, (list, dict, set)) or (isinstance(v, Tensor) and k != "lr")
                     for k, v in g.items() if k not in ("params", "param_names")))
                for g in self.param_groups]

    def _group_hyper(self, group: dict[str, Any]) -> Any:
        """``self._hyper(group)`` (a subclass's floats for the kernels), computed once while
        the group holds the objects it held when last validated: ``_plan`` empties the memo
        whenever it validates the groups again, so an id is never that of another group."""
        hp = self._hyper_memo.get(id(group))
        if hp is None:
            hp = self._hyper_memo[id(group)] = self._hyper(group)
        return hp

    def _same_hyper(self, plan: Plan) -> bool:
        """Are the groups the plan's, holding the very objects they held when last validated?
        (A scheduler writing ``group["lr"]`` puts a new object there: validated again.)"""
        groups, held = self.param_groups, plan.hyper
        if len(groups) != len(held):
            return False
        for g, (hg, keys, values, mutable) in zip(groups, held):
            if (mutable or g is not hg or tuple(g) != keys
                    or not all(map(operator.is_, g.values(), values))):
                return False
        return True

    def _sign(self, plan: Plan) -> Plan:
        """Attach the native step signature of ``plan`` (Note [step signature]) when this
        process has one and the plan's grads are read in place (none staged)."""
        cls = step_signature()
        plan.native = None
        if cls is None or plan.staged_grads:
            return plan
        index = [-1] * len(plan.params)
        for k, i in enumerate(plan.with_grad):
            index[i] = k
        try:
            plan.native = cls(self.param_groups, plan.watched, index,
                              bool(self._dist_groups))
        except ValueError:  # a tensor the shim cannot read (a subclass): Python checks it
            plan.native = None
        return plan

    @staticmethod
    def _move_grads(plan: Plan) -> None:
        """New grad addresses, same everything else: give each bucket its grads' addresses
        and bump its ``grad_epoch`` so the backends refresh their tables' grad column."""
        ptrs = plan.native.grad_ptrs()
        plan.kernel_grad_ptrs = ptrs
        plan.grad_epoch += 1
        for b, idx in plan.fills:
            new = pick(ptrs, idx)
            if new != b.grad_ptrs:
                b.grad_ptrs = new
                b.grad_epoch += 1

    def _check_capture(self, why: str) -> None:
        if self._device is not None and self._device.type == "cuda" \
                and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{self._owner()}: the step plan must be rebuilt ({why}) while a CUDA graph is "
                "being captured; run one eager step with the same tensors before capturing")

    @staticmethod
    def _fill(plan: Plan, kgrads: list[Tensor]) -> None:
        """Hand this step's kernel grads to the buckets (they are dropped after the step)."""
        plan.hand_grads(kgrads)

    def _build_plan(self, params: list[Tensor]) -> Plan:
        """Validate every param and its state (Note [kernel layout]), then the grads."""
        owner = self._owner()
        local = D.local if self._dist_groups else _identity
        watched: list[Tensor] = []
        infos: list[ParamInfo | None] = []
        spans: list[tuple[int, int, str]] = []
        for gi, group in enumerate(self.param_groups):
            keys = self._state_keys(group)
            for i, p in enumerate(group["params"]):
                label = V.param_label(group, i, gi)
                V.check_param(owner, p, label, self._device)
                lp = local(p)
                if L.self_overlaps(lp):
                    raise ValueError(f"{owner}: {label} has elements that share memory")
                if p.grad is None and not p.requires_grad and not self.state.get(p):
                    infos.append(None)  # frozen, no state: nothing of it is read
                    continue
                state = self._ensure_state(p, group)
                tensors = self._check_state(p, lp, state, keys, label)
                watched.append(lp)
                watched.extend(tensors)
                spans.append((*L.byte_span(lp), label))
                for key, t in zip(self._kernel_keys(p, keys), tensors):
                    spans.append((*L.byte_span(t), f"the '{key}' state of {label}"))
                dense = L.is_dense(lp)
                kernel = lp if dense else lp.contiguous()  # staged: copied in and out per step
                master = tensors[-1] if self._uses_master(p) else None
                infos.append(ParamInfo(gi, i, p, lp, kernel, not dense, kernel.stride(),
                                       lp.shape, lp.device, p.dtype, self._state_dtype_for(p),
                                       tensors[0], tuple(tensors[1:1 + len(keys)]), master))
        clash = L.first_overlap(spans)
        if clash is not None:
            raise ValueError(f"{owner}: {clash[0]} and {clash[1]} share memory; the kernels "
                             "would write the same bytes twice (results would depend on "
                             "thread order)")
        kernel_params = [local(p) for p in params]
        plan = Plan(params=params, group_keys=self._group_keys(), state=self.state,
                    version=self.state.version, infos=infos, watched=watched,
                    watched_ptrs=list(map(_data_ptr, watched)), kernel_params=kernel_params,
                    param_numels=list(map(_numel, kernel_params)))
        built = self._rebuild_buckets(plan, list(map(_GRAD, params)))
        assert built is not None  # every param with a grad was validated above
        return built

    def _trace_plan(self) -> Plan:
        """The buckets of a step ``torch.compile`` traces (once): grads checked as in eager
        steps, no address checks (a pointer read would break the graph; the traced kernels
        receive the tensors themselves). Params and grads must share a dense layout there:
        the staging copies of eager steps are not traced."""
        owner = self._owner()
        local = D.local if self._dist_groups else _identity
        buckets: dict[tuple, Bucket] = {}
        kgrads: list[Tensor] = []
        for gi, group in enumerate(self.param_groups):
            keys = self._state_keys(group)
            for i, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                V.check_grad(owner, p, g, V.param_label(group, i, gi))
                state = self._ensure_state(p, group)
                master = state.get("master_param") if self._uses_master(p) else None
                key = (gi, p.dtype, g.dtype, self._state_dtype_for(p), master is not None)
                b = buckets.get(key)
                if b is None:
                    b = buckets[key] = Bucket([], [], [], {k: [] for k in keys},
                                              [] if master is not None else None, {})
                kgrads.append(local(g))
                b.params.append(local(p))
                b.grads.append(local(g))
                b.steps.append(state["step"])
                for k in keys:
                    b.states[k].append(local(state[k]))
                if master is not None:
                    b.masters.append(local(master))
        by_group: dict[int, list[Bucket]] = {}
        for key, b in buckets.items():
            by_group.setdefault(key[0], []).append(b)
        plan = Plan(params=[], group_keys=[], state=None, version=0, infos=[], watched=[],
                    watched_ptrs=[], kernel_params=[], param_numels=[])
        plan.groups = [(self.param_groups[gi], by_group[gi])
                       for gi in range(len(self.param_groups)) if gi in by_group]
        plan.all_grads = kgrads
        return plan

    def _kernel_keys(self, p: Tensor, keys: tuple[str, ...]) -> list[str]:
        out = ["step", *keys]
        if self._uses_master(p):
            out.append("master_param")
        return out

    def _check_state(self, p: Tensor, lp: Tensor, state: dict, keys: tuple[str, ...],
                     label: str) -> list[Tensor]:
        """The state tensors the kernels will read for ``p`` (step, ``keys``, master), each
        checked: present, a real float tensor of the expected dtype, on the param's device,
        the param's shape and layout (Note [kernel layout])."""
        owner = self._owner()
        out = []
        layout = self._layout_strides(lp)
        for key in self._kernel_keys(p, keys):
            if key not in state:
                raise KeyError(f"{owner}: the state of {label} has no '{key}' (it has "
                               f"{sorted(map(str, state))}); a state_dict saved with other "
                               "settings, or a state edited by hand?")
            t = state[key]
            if not isinstance(t, Tensor):
                raise TypeError(f"{owner}: the '{key}' state of {label} is a "
                                f"{type(t).__name__}, not a tensor")
            lt = D.local(t)
            if key == "step":
                if lt.numel() != 1 or lt.dtype != torch.float32 or lt.device != lp.device:
                    raise TypeError(f"{owner}: the 'step' state of {label} must be a "
                                    f"one-element fp32 tensor on {lp.device}, got "
                                    f"{tuple(lt.shape)} {lt.dtype} on {lt.device}")
                out.append(lt)
                continue
            want = torch.float32 if key == "master_param" else self._state_dtype_for(p)
            if lt.dtype != want:
                raise TypeError(f"{owner}: the '{key}' state of {label} has dtype {lt.dtype}, "
                                f"expected {want}")
            if lt.device != lp.device:
                raise ValueError(f"{owner}: the '{key}' state of {label} is on {lt.device}, "
                                 f"the param on {lp.device}")
            if lt.shape != lp.shape or (lt.numel() > 1 and lt.stride() != layout):
                raise ValueError(f"{owner}: the '{key}' state of {label} has shape "
                                 f"{tuple(lt.shape)} and strides {lt.stride()}, the kernels "
                                 f"need {tuple(lp.shape)} with strides {layout} (the param's "
                                 "layout); load_state_dict converts layouts, a state set by "
                                 "hand must match")
            out.append(lt)
        return out

    @staticmethod
    def _layout_strides(lp: Tensor) -> tuple[int, ...]:
        """The strides every kernel stream of ``lp`` has: its own when dense, else contiguous."""
        if L.is_dense(lp):
            return lp.stride()
        return torch.empty(lp.shape, device="meta").stride()

    def _rebuild_buckets(self, plan: Plan, grads: list) -> Plan | None:
        """New buckets over the validated params and states (``plan.infos``) for these grads,
        validated here; None when a param that was not validated has a grad (then the whole
        plan is rebuilt). Labels for messages are formatted only when raising."""
        local = D.local if self._dist_groups else _identity
        buckets: dict[tuple, Bucket] = {}
        fills: dict[tuple, list[int]] = {}
        with_grad: list[int] = []
        kgrads: list[Tensor] = []
        staged: list[tuple[Tensor, Tensor]] = []
        staged_grads = False
        for idx, g in enumerate(grads):
            if g is None:
                continue
            info = plan.infos[idx]
            if info is None:
                return None  # a param that had no state to check gets a grad: revalidate
            lg = local(g)
            gdt = lg.dtype
            if (lg.layout is not _STRIDED or (gdt is not info.dtype and gdt is not _F32)
                    or lg.shape != info.shape or lg.device != info.device):
                group = self.param_groups[info.group_index]
                V.check_grad(self._owner(), info.param, g,
                             V.param_label(group, info.param_index, info.group_index))
            if lg.numel() > 1 and lg.stride() != info.strides:
                # Note [kernel layout]: a grad in another layout is copied into the param's
                lg = torch.empty_like(info.kernel, dtype=gdt).copy_(lg)
                staged_grads = True
            if info.staged:
                staged.append((info.local, info.kernel))
            key = (info.group_index, info.dtype, gdt, info.state_dtype, info.master is not None)
            b = buckets.get(key)
            if b is None:
                group = self.param_groups[info.group_index]
                b = buckets[key] = Bucket(
                    [], [], [], {k: [] for k in self._state_keys(group)},
                    [] if info.master is not None else None, self._caches.setdefault(key, {}),
                    frozen=True)
                fills[key] = []
            fills[key].append(len(kgrads))
            with_grad.append(idx)
            kgrads.append(lg)
            b.params.append(info.kernel)
            b.grads.append(lg)
            b.steps.append(info.step)
            for lst, t in zip(b.states.values(), info.states):
                lst.append(t)
            if info.master is not None:
                b.masters.append(info.master)
        by_group: dict[int, list[Bucket]] = {}
        for key, b in buckets.items():
            by_group.setdefault(key[0], []).append(b)
        plan.groups = [(self.param_groups[gi], by_group[gi])
                       for gi in range(len(self.param_groups)) if gi in by_group]
        plan.fills = [(buckets[key], idx) for key, idx in fills.items()]
        plan.staged = staged
        plan.with_grad = with_grad
        plan.grad_refs = list(map(grad_ref, grads))
        plan.grad_ptrs = list(map(_data_ptr, kgrads))
        plan.grad_numels = list(map(_numel, kgrads))
        plan.staged_grads = staged_grads
        plan.kernel_grad_ptrs = plan.grad_ptrs
        plan.grad_cache = {}  # other grads: the backends' norm-pass tables start afresh
        plan.hand_grads(kgrads)
        plan.hyper = self._hyper_snapshot()
        return self._sign(plan)

    # ------------------------------------------------------------------ step
    def _amp_inputs(self) -> tuple[Tensor | None, Tensor | None, bool]:
        """(grad_scale, found_inf, check_inf) from a GradScaler or a fusedopt LossScaler."""
        if self._loss_scaler is not None:
            return self._loss_scaler.scale_tensor, None, True
        return getattr(self, "grad_scale", None), getattr(self, "found_inf", None), False

    def _prepare_step(self, loss: Tensor | None = None) -> None:
        """Extra validation before mutation (AdamL checks its loss here)."""

    @hooked_step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step. ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._fused_step(None)
        return loss

    def _check_capturable(self) -> None:
        if (not self.capturable and self._device is not None and self._device.type == "cuda"
                and torch.cuda.is_current_stream_capturing()):
            raise RuntimeError(f"Attempting CUDA graph capture of step() for an instance of "
                               f"{self.__class__.__name__} but param_groups' capturable is "
                               "False.")

    def _fused_step(self, loss: Tensor | None) -> None:
        self._check_capturable()
        plan = self._plan()
        try:
            self._prepare_step(loss)
            if plan.all_grads:
                self._run_plan(plan, loss)
        finally:
            plan.release()

    def _run_plan(self, plan: Plan, loss: Tensor | None) -> None:
        groups, all_grads = plan.groups, plan.all_grads
        stats = self._stats
        staged = plan.staged
        for param, kernel in staged:  # Note [kernel layout]: non-dense params run on a copy
            kernel.copy_(param)
        grad_scale, found_inf, check_inf = self._amp_inputs()
        need_norm = self.max_grad_norm is not None or check_inf or self._needs_grad_norm
        use_prologue = (need_norm or grad_scale is not None or found_inf is not None
                        or self._needs_prologue)
        if any(isinstance(g["lr"], Tensor) for g, _ in groups):
            stats[S.LR_INVALID] = 0.0
        if self.telemetry:
            stats[S.PREV_PARAM_SQ] = stats[S.PARAM_SQ]
            stats[S.UPDATE_SQ:S.STEP_GRAD_SQ + 1].zero_()
        if use_prologue:
            self._prologue(all_grads, S.GRAD, grad_scale, found_inf, self.max_grad_norm,
                           need_norm)
            if grad_scale is None and found_inf is None and not check_inf:
                # no AMP: a non-finite grad propagates as in torch (docs/numerics.md), the norm
                # pass having run only for clipping or the algorithm's normalizer
                stats[S.FOUND_INF].zero_()
        elif self.telemetry:  # last_stats reports no skip and no clipping for this step
            stats[S.FOUND_INF].zero_()
            stats[S.CLIP_COEF:S.COEF + 1].fill_(1.0)
        self._prologue_norm = need_norm
        self._run_updates(groups, stats, use_prologue, loss)
        for param, kernel in staged:
            param.copy_(kernel)
        if self.telemetry and (self._dist_groups or self._zero_groups):
            D.finish_telemetry_(stats, (self._dist_groups or []) + (self._zero_groups or []))

    def _prologue(self, grads: list[Tensor], region: int, grad_scale: Tensor | None,
                  found_inf: Tensor | None, max_norm: float | None, compute_norm: bool) -> None:
        """The norm pass over local grads; with sharded params (FSDP2) or partitioned ones
        (ZeroRedundancyOptimizer) its sums are made global."""
        shards = (self._dist_groups or []) + (self._zero_groups or [])
        if shards and compute_norm:
            self._backend.grad_prologue_(grads, self._stats, region=region,
                                         grad_scale=grad_scale, found_inf=found_inf,
                                         max_norm=None, compute_norm=True)
            D.finish_prologue_(self._stats, region, max_norm, shards)
        else:
            self._backend.grad_prologue_(grads, self._stats, region=region,
                                         grad_scale=grad_scale, found_inf=found_inf,
                                         max_norm=max_norm, compute_norm=compute_norm)

    # ------------------------------------------------------------------ telemetry
    @property
    def backend(self) -> str:
        """Name of the backend that runs the steps."""
        return self._backend.name

    @property
    def last_stats(self) -> dict[str, Tensor]:
        """Norms of the last step as 0-d fp32 device tensors (no host sync).

        ``grad_norm`` (pre-clip, unscaled), ``clip_coef``, ``update_norm`` (``||p_new - p_old||``),
        ``param_norm`` (``||p_new||``), ``found_inf`` (1.0 when the step was skipped: then
        the update norm is 0 and the param norm is the previous step's, the params being as
        they were) and ``lr_invalid`` (1.0 when a device lr was NaN or negative: the groups
        that read it were not updated).
        """
        if not self.telemetry:
            raise RuntimeError(f"{self._owner()}: last_stats needs telemetry=True")
        st = self._stats
        gsq = st[S.GRAD_SQ] if self._prologue_norm else st[S.STEP_GRAD_SQ]
        skipped = st[S.FOUND_INF] != 0
        return {
            "grad_norm": torch.sqrt(gsq).float(),
            "clip_coef": st[S.CLIP_COEF].float(),
            "update_norm": torch.sqrt(st[S.UPDATE_SQ]).float(),
            "param_norm": torch.sqrt(torch.where(skipped, st[S.PREV_PARAM_SQ],
                                                 st[S.PARAM_SQ])).float(),
            "found_inf": st[S.FOUND_INF].float(),
            "lr_invalid": st[S.LR_INVALID].float(),
        }

    @property
    def lr_invalid(self) -> Tensor:
        """0-d device flag: 1.0 when the last step met a NaN or negative device lr (and skipped
        the groups that read it). Read it when convenient; reading it syncs."""
        return self._stats[S.LR_INVALID].float()

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state_dict (hooks included), each param's state a plain dict holding
        the live tensors — not this optimizer's versioned ParamState (Note [state version]),
        so that ``torch.load(..., weights_only=True)`` reads a saved checkpoint."""
        sd = super().state_dict()
        sd["state"] = {k: dict(v) if isinstance(v, ParamState) else v
                       for k, v in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict saved by this class or by the torch.optim equivalent.

        torch.optim's protocol (load_state_dict pre/post hooks, the saved param-group keys
        win, ``param_names`` kept), but everything is validated before anything is replaced:
        missing state raises ``KeyError``, a moment of the wrong shape ``ValueError``, a wrong
        kind of value ``TypeError``, each naming the param and the key. Unlike torch, moments
        keep this optimizer's state dtype and the param's layout, master weights stay fp32 and
        ``step`` becomes a 0-d fp32 tensor on the param's device.
        """
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        owner = self._owner()
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups "
                             f"({owner}: {len(saved_groups)} saved, {len(groups)} here)")
        for gi, (g, s) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 f"match the size of optimizer's group ({owner}: group {gi} "
                                 f"has {len(s['params'])} params saved, {len(g['params'])} here)")
        id_map: dict[Any, tuple[Tensor, int, int]] = {}
        group_step: dict[Any, Any] = {}
        new_groups = []
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            for i, pid in enumerate(saved["params"]):
                id_map[pid] = (group["params"][i], gi, i)
            if "step" in saved:  # Apex / DeepSpeed FusedAdam keep one step per param group
                step = saved.pop("step")
                group_step.update((pid, step) for pid in saved["params"])
            new = saved
            new["params"] = group["params"]
            if "param_names" in group and "param_names" not in new:
                new["param_names"] = group["param_names"]
            for key, value in group.items():  # keys this optimizer has and the save lacks
                new.setdefault(key, value)
            self._validate_group(new, read=True)
            new_groups.append(new)
        new_state: dict[Any, Any] = {}
        for key, value in state_dict["state"].items():
            if key in id_map:
                p, gi, i = id_map[key]
                label = V.param_label(new_groups[gi], i, gi)
                new_state[p] = self._import_param_state(p, value, group_step.get(key),
                                                        new_groups[gi], label)
            else:
                new_state[key] = self._import_global_state(key, value)
        self.param_groups = new_groups
        self.state = StateDict(StateVersion(self.state.version + 1
                                            if isinstance(self.state, StateDict) else 0),
                               new_state)
        self._caches.clear()
        self._last_plan = None
        self._relink_globals()
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _relink_globals(self) -> None:
        """After a load, point every param's global entries at one tensor again (Note [global
        state]), taking the values of the first param that has them."""
        names = list(self._globals)
        if not names:
            return
        states = [st for st in self.state.values() if isinstance(st, dict) and names[0] in st]
        if states:
            for name in names:
                self._globals[name].copy_(states[0][name])
        for p, st in self.state.items():
            if isinstance(st, dict) and st:
                st.update(self._globals)

    def _import_param_state(self, p: Tensor, saved: Any, group_step: Any, group: dict,
                            label: str) -> dict[str, Any]:
        """One param's saved state, checked, in this optimizer's dtypes, layout and device. A
        state without a per-param ``step`` takes its param group's (Apex, DeepSpeed FusedAdam).
        An empty state stays empty (fresh state is created for it)."""
        owner = self._owner()
        if not isinstance(saved, dict):
            raise TypeError(f"{owner}: the saved state of {label} is a {type(saved).__name__}, "
                            "not a dict")
        if not saved:
            return {}
        if "step" not in saved:
            if group_step is None:
                raise KeyError(f"{owner}: the saved state of {label} has no 'step' (keys "
                               f"{sorted(map(str, saved))}) and its param group none either")
            saved = {**saved, "step": group_step}
        keys = self._state_keys(group)
        for key in keys:
            if key not in saved:
                raise KeyError(f"{owner}: the saved state of {label} has no '{key}' (keys "
                               f"{sorted(map(str, saved))}); was it saved with other settings "
                               f"(amsgrad, variant)?")
        sdt = self._state_dtype_for(p)
        out: dict[str, Any] = {}
        for k, v in saved.items():
            if k == "step":
                out[k] = self._import_step(v, p, label)
            elif k in self._globals:
                out[k] = self._as_global(k, v, p, label)
            elif k in keys or k == "master_param":
                if k == "master_param" and not self._uses_master(p):
                    continue  # saved with master weights, loaded without: the param rules
                dtype = torch.float32 if k == "master_param" else sdt
                out[k] = self._import_stream(k, v, p, dtype, label)
            else:
                out[k] = v.detach().to(p.device).clone() if isinstance(v, Tensor) else v
        if self._uses_master(p) and "master_param" not in out:
            out["master_param"] = p.detach().to(torch.float32).clone()
        return out

    def _import_stream(self, key: str, v: Any, p: Tensor, dtype: torch.dtype,
                       label: str) -> Tensor:
        owner = self._owner()
        if not isinstance(v, Tensor):
            raise TypeError(f"{owner}: the saved '{key}' of {label} is a {type(v).__name__}, "
                            "not a tensor")
        if v.is_complex() or not v.is_floating_point() or v.layout != torch.strided:
            raise TypeError(f"{owner}: the saved '{key}' of {label} is a {v.dtype} "
                            f"{v.layout} tensor; a dense real float tensor is needed")
        if v.shape != p.shape:
            raise ValueError(f"{owner}: the saved '{key}' of {label} has shape "
                             f"{tuple(v.shape)}, the param {tuple(p.shape)}")
        v = v.detach()
        if D.is_dtensor(p):
            return v.to(device=p.device, dtype=dtype).clone()
        out = torch.empty_like(p, dtype=dtype)  # the param's (dense) layout, or contiguous
        out.copy_(v)
        return out

    def _import_step(self, v: Any, p: Tensor, label: str) -> Tensor:
        owner = self._owner()
        if isinstance(v, Tensor):
            if v.numel() != 1 or v.is_complex():
                raise ValueError(f"{owner}: the saved 'step' of {label} has shape "
                                 f"{tuple(v.shape)}; a one-element tensor or a number is needed")
            value = float(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            value = float(v)
        else:
            raise TypeError(f"{owner}: the saved 'step' of {label} is a {type(v).__name__}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{owner}: the saved 'step' of {label} is {value}; a finite "
                             "count >= 0 is needed")
        return torch.tensor(value, dtype=torch.float32, device=p.device)

    def _as_global(self, key: str, v: Any, p: Tensor, label: str) -> Tensor:
        like = self._globals[key]
        if not isinstance(v, Tensor) or v.numel() != like.numel():
            raise ValueError(f"{self._owner()}: the saved '{key}' of {label} must be a tensor "
                             f"of {like.numel()} element(s)")
        return v.detach().to(device=p.device, dtype=like.dtype).reshape(like.shape).clone()

    def _import_global_state(self, key: Any, value: Any) -> Any:
        """A non-param state entry (torch.optim keeps none; a foreign optimizer might)."""
        if isinstance(value, Tensor):
            return value.detach().to(self._device).clone()
        if isinstance(value, dict):
            return {k: self._import_global_state(k, v) for k, v in value.items()}
        return value

    # ------------------------------------------------------------------ copy and pickle
    def __getstate__(self) -> dict[str, Any]:
        """Everything but what is rebuilt on load (_TRANSIENT) and torch's hooks (which
        torch.optim does not pickle either): the settings (max_grad_norm, backend_name,
        state_dtype, master_weights, telemetry...), the device stats and the state."""
        skip = set(_TRANSIENT) | {k for k in self.__dict__ if k.startswith("_optimizer_")}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__["state"] = as_state_dict(self.__dict__.get("state"))
        self.__dict__.setdefault("_caches", {})
        self.__dict__["_caches"] = {}
        self.__dict__["_last_plan"] = None
        self.__dict__["_hyper_memo"] = {}
        self.__dict__["_loss_scaler"] = None
        if "backend_name" in self.__dict__:  # a full pickle (not torch's partial restores)
            all_params = [p for g in self.param_groups for p in g["params"]]
            self._dist_groups = D.shard_groups(all_params, self._owner())
            self._zero_groups = None
            self._backend = Kernels(backends.resolve(self.backend_name, self._device))


__all__ = ["FusedOptimizer"]
