"""The base every fusedopt optimizer shares: options, validation, state, buckets, AMP, telemetry.

A step runs in this order (DESIGN.md §2):

1. validate every group's hyperparameters and every grad — nothing is mutated before this ends;
2. create missing state (``step`` 0-d fp32 on the param device, the algorithm's moments in the
   state dtype, an fp32 master copy when asked);
3. the prologue, when clipping, AMP or the algorithm needs it: one norm pass over every grad of
   every group writing the grad norm, found_inf and the gradient coefficient to the device stats;
4. the algorithm's global scalars (AdamL, SGD family) on the device;
5. one update call per (param group, storage dtypes) bucket.

No value is read on the host in between: lr, step, the loss scale and the loss may be device
tensors, and a non-finite gradient under AMP skips the step on the device.
"""
from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import _stats as S
from .. import backends
from ..ops import Kernels
from ..backends import Bucket
from . import _distributed as D
from . import _validation as V


_GRAD = operator.attrgetter("grad")


@dataclass
class _Plan:
    """What a step runs on: the buckets per param group, valid while the grads are unchanged."""

    seen: list[Tensor | None]  # every param's .grad when the plan was built
    groups: list[tuple[dict, list[Bucket]]]
    all_grads: list[Tensor]


class FusedOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` whose whole step runs as fused passes of one backend.

    Common keyword arguments (``**common`` in the subclasses' signatures):

    Args:
        max_grad_norm: clip by the global L2 norm of all grads (``clip_grad_norm_`` semantics,
            fused into the step: one extra read pass). None disables clipping.
        backend: ``"auto"`` (best built backend for the params' device), ``"cuda"``,
            ``"triton"``, ``"cpu"`` or ``"reference"`` (pure PyTorch, the test oracle).
        capturable: keep the step graph-safe (CUDA graphs): lr may be a device tensor, nothing
            is read on the host and no table is rebuilt while the tensor signature is fixed.
        state_dtype: storage dtype of the moments: None (fp32 for 16-bit params, the param dtype
            otherwise), ``torch.float32`` or ``torch.bfloat16``. fp64 params keep fp64 states.
        master_weights: keep an fp32 master copy of bf16/fp16 params (state key
            ``master_param``); the update runs on it and rounds into the param.
        telemetry: collect grad / update / param norms in the step (read ``last_stats``).
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
                 master_weights: bool = False, telemetry: bool = False) -> None:
        owner = self._owner()
        if max_grad_norm is not None:
            V.check_number(owner, "max_grad_norm", max_grad_norm, low=0.0, low_open=True)
        if backend != "auto" and backend not in backends.BACKENDS:
            raise ValueError(f"{owner}: backend must be one of "
                             f"{('auto',) + backends.BACKENDS}, got {backend!r}")
        if state_dtype not in V.STATE_DTYPES:
            raise ValueError(f"{owner}: state_dtype must be None, torch.float32 or "
                             f"torch.bfloat16, got {state_dtype}")
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
        self._last_plan: _Plan | None = None
        super().__init__(params, defaults)
        self._dist_groups = D.shard_groups(
            [p for g in self.param_groups for p in g["params"]], self._owner())
        self._backend = Kernels(backends.resolve(backend, self._device))
        self._stats = torch.zeros(S.NUM_SLOTS, dtype=torch.float64, device=self._device)
        self._stats[S.CLIP_COEF] = 1.0
        self._stats[S.COEF] = 1.0

    # ------------------------------------------------------------------ hooks for subclasses
    def _validate_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError/TypeError for a bad hyperparameter of ``group`` (subclass)."""
        V.check_lr(self._owner(), group["lr"], self._device)

    def _init_param_state(self, p: Tensor, group: dict[str, Any], state_dtype: torch.dtype
                          ) -> dict[str, Tensor]:
        """The algorithm's state tensors for a new param (besides step and master)."""
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
        """Validate the group (params and hyperparameters) first, then add it as torch does."""
        owner = self._owner()
        if not isinstance(param_group, dict):
            raise TypeError(f"{owner}: a param group must be a dict, got {type(param_group)}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        names = [p[0] for p in params if isinstance(p, tuple)]
        gi = len(self.param_groups)
        device = self._device
        for i, p in enumerate(tensors):
            label = V.param_label({"param_names": names}, i, gi)
            V.check_param(owner, p, label, device)
            if not D.local(p).is_contiguous():
                raise ValueError(f"{owner}: {label} is not contiguous")
            device = p.device
        merged = {**self.defaults, **param_group}
        self._validate_group(merged)
        super().add_param_group(param_group)
        self._device = device
        self.__dict__["_last_plan"] = None
        # State is created here, not at the first step (as torch.optim.Adagrad does): a fresh
        # optimizer then has a full state_dict, which torch.distributed.checkpoint loads into
        # without the dummy step it would otherwise take (and AdamL/IAN-SGD could not take).
        group = self.param_groups[-1]
        for p in group["params"]:
            if p.requires_grad:
                self._ensure_state(p, group)

    # ------------------------------------------------------------------ step
    def _state_dtype_for(self, p: Tensor) -> torch.dtype:
        if p.dtype == torch.float64:
            return torch.float64
        if self.state_dtype is not None:
            return self.state_dtype
        return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype

    def _collect(self) -> list[tuple[dict, list[Tensor], list[Tensor]]]:
        """Validate hyperparameters and grads; return (group, params, grads) with grads only."""
        owner = self._owner()
        out = []
        for gi, group in enumerate(self.param_groups):
            self._validate_group(group)
            ps, gs = [], []
            for i, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                V.check_grad(owner, p, g, V.param_label(group, i, gi))
                ps.append(p)
                gs.append(g)
            out.append((group, ps, gs))
        return out

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
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state.update(self._init_param_state(p, group, self._state_dtype_for(p)))
            if self.master_weights and p.dtype in (torch.float16, torch.bfloat16):
                state["master_param"] = p.detach().to(torch.float32).clone()
            state.update(self._globals)
        return state

    def _plan(self) -> _Plan:
        """Validated buckets of this step. Fast path: when every param's ``.grad`` is the same
        tensor object as in the last step (``zero_grad(set_to_none=False)``, static grads of a
        CUDA graph), only the hyperparameters are re-validated and the buckets — with their
        pointer tables — are reused. Otherwise every grad is validated and buckets rebuilt."""
        tracing = torch.compiler.is_compiling()  # traced once: no cache to consult
        if not tracing:
            seen = list(map(_GRAD, chain.from_iterable(g["params"] for g in self.param_groups)))
            last = self._last_plan
            if (last is not None and len(seen) == len(last.seen)
                    and all(map(operator.is_, seen, last.seen))):
                for group in self.param_groups:
                    self._validate_group(group)
                return last
        collected = self._collect()
        groups = [(group, self._buckets(gi, group, ps, gs))
                  for gi, (group, ps, gs) in enumerate(collected) if ps]
        all_grads = [g for _, _, gs in collected for g in gs]
        plan = _Plan([], groups, all_grads)
        if not tracing:
            plan.seen = seen
            self._last_plan = plan
        return plan

    def _buckets(self, gi: int, group: dict, ps: list[Tensor], gs: list[Tensor]) -> list[Bucket]:
        local = D.local if self._dist_groups else (lambda t: t)  # noqa: E731
        by_key: dict[tuple, Bucket] = {}
        for p, g in zip(ps, gs):
            state = self._ensure_state(p, group)
            master = state.get("master_param")
            streams = {k: v for k, v in state.items()
                       if k not in ("step", "master_param") and k not in self._globals
                       and isinstance(v, Tensor)}
            sdt = next(iter(streams.values())).dtype if streams else None
            key = (p.dtype, g.dtype, sdt, master is not None)
            b = by_key.get(key)
            if b is None:
                cache = self._caches.setdefault((gi,) + key, {})
                b = by_key[key] = Bucket([], [], [], {k: [] for k in streams},
                                         [] if master is not None else None, cache)
            b.params.append(local(p))
            b.grads.append(local(g))
            b.steps.append(state["step"])
            for k, v in streams.items():
                b.states[k].append(local(v))
            if master is not None:
                b.masters.append(local(master))
        return list(by_key.values())

    def _amp_inputs(self) -> tuple[Tensor | None, Tensor | None, bool]:
        """(grad_scale, found_inf, check_inf) from a GradScaler or a fusedopt LossScaler."""
        if self._loss_scaler is not None:
            return self._loss_scaler.scale_tensor, None, True
        return getattr(self, "grad_scale", None), getattr(self, "found_inf", None), False

    def _prepare_step(self, loss: Tensor | None = None) -> None:
        """Extra validation before mutation (AdamL checks its loss here)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step. ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._fused_step(None)
        return loss

    def _fused_step(self, loss: Tensor | None) -> None:
        plan = self._plan()
        self._prepare_step(loss)
        if not plan.all_grads:
            return
        groups, all_grads = plan.groups, plan.all_grads
        stats = self._stats
        grad_scale, found_inf, check_inf = self._amp_inputs()
        need_norm = self.max_grad_norm is not None or check_inf or self._needs_grad_norm
        use_prologue = (need_norm or grad_scale is not None or found_inf is not None
                        or self._needs_prologue)
        if self.telemetry:
            stats[S.PREV_PARAM_SQ] = stats[S.PARAM_SQ]
            stats[S.UPDATE_SQ:S.STEP_GRAD_SQ + 1].zero_()
        if use_prologue:
            self._prologue(all_grads, S.GRAD, grad_scale, found_inf, self.max_grad_norm,
                           need_norm)
            if grad_scale is None and found_inf is None and not check_inf:
                # no AMP: a non-finite grad propagates as in torch (DESIGN.md §4), the norm pass
                # having run only for clipping or the algorithm's normalizer
                stats[S.FOUND_INF].zero_()
        elif self.telemetry:  # last_stats reports no skip and no clipping for this step
            stats[S.FOUND_INF].zero_()
            stats[S.CLIP_COEF:S.COEF + 1].fill_(1.0)
        self._prologue_norm = need_norm
        self._run_updates(groups, stats, use_prologue, loss)
        if self.telemetry and self._dist_groups:
            D.finish_telemetry_(stats, self._dist_groups)

    def _prologue(self, grads: list[Tensor], region: int, grad_scale: Tensor | None,
                  found_inf: Tensor | None, max_norm: float | None, compute_norm: bool) -> None:
        """The norm pass over local grads; with sharded params its sums are made global."""
        local = [D.local(g) for g in grads] if self._dist_groups else grads
        if self._dist_groups and compute_norm:
            self._backend.grad_prologue_(local, self._stats, region=region,
                                         grad_scale=grad_scale, found_inf=found_inf,
                                         max_norm=None, compute_norm=True)
            D.finish_prologue_(self._stats, region, max_norm, self._dist_groups)
        else:
            self._backend.grad_prologue_(local, self._stats, region=region,
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
        ``param_norm`` (``||p_new||``) and ``found_inf`` (1.0 when the step was skipped: then
        the update norm is 0 and the param norm is the previous step's, the params being as
        they were).
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
        }

    # ------------------------------------------------------------------ state_dict
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict saved by this class or by the torch.optim equivalent.

        Unlike ``torch.optim.Optimizer.load_state_dict``, moments keep this optimizer's state
        dtype and master weights stay fp32 (torch would cast them to the param dtype, silently
        turning fp32 states of bf16 params into bf16). ``step`` becomes a 0-d fp32 tensor on the
        param's device. Everything is checked before anything is replaced.
        """
        owner = self._owner()
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{owner}: state_dict has {len(saved_groups)} param groups, "
                             f"the optimizer {len(self.param_groups)}")
        id_map: dict[Any, Tensor] = {}
        group_step: dict[Any, Any] = {}
        new_groups = []
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{owner}: param group {gi} of the state_dict has "
                                 f"{len(saved['params'])} params, the optimizer "
                                 f"{len(group['params'])}")
            id_map.update(zip(saved["params"], group["params"]))
            if "step" in saved:  # Apex / DeepSpeed FusedAdam keep one step per param group
                group_step.update((pid, saved["step"]) for pid in saved["params"])
            new = dict(group)
            for key, value in saved.items():
                if key in group and key not in ("params", "param_names", "step"):
                    new[key] = value
            self._validate_group(new)
            new_groups.append(new)
        new_state: defaultdict[Any, dict] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in id_map:
                p = id_map[key]
                new_state[p] = self._import_param_state(p, value, group_step.get(key))
            else:
                new_state[key] = self._import_global_state(key, value)
        self.__setstate__({"state": new_state, "param_groups": new_groups})
        self._caches.clear()
        self._last_plan = None
        self._relink_globals()

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

    def _import_param_state(self, p: Tensor, saved: dict[str, Any],
                            group_step: Any = None) -> dict[str, Any]:
        """One param's saved state in this optimizer's dtypes and device. A state without a
        per-param ``step`` takes its param group's (Apex, DeepSpeed FusedAdam)."""
        if saved and "step" not in saved:
            if group_step is None:
                raise ValueError(f"{self._owner()}: the saved state of a param has no 'step' "
                                 f"(keys {sorted(saved)}) and its param group none either")
            saved = {**saved, "step": group_step}
        sdt = self._state_dtype_for(p)
        out: dict[str, Any] = {}
        for k, v in saved.items():
            if not isinstance(v, Tensor):
                out[k] = v
            elif k == "step":
                out[k] = v.detach().to(device=p.device, dtype=torch.float32).reshape(()).clone()
            elif k == "master_param":
                out[k] = v.detach().to(device=p.device, dtype=torch.float32).clone()
            elif k in self._globals:
                out[k] = v.detach().to(device=p.device, dtype=self._globals[k].dtype).clone()
            else:
                out[k] = v.detach().to(device=p.device, dtype=sdt).clone()
        if "step" in out and not isinstance(out["step"], Tensor):
            out["step"] = torch.tensor(float(out["step"]), dtype=torch.float32, device=p.device)
        if (self.master_weights and p.dtype in (torch.float16, torch.bfloat16)
                and "master_param" not in out and out):
            out["master_param"] = p.detach().to(torch.float32).clone()
        return out

    def _import_global_state(self, key: Any, value: Any) -> Any:
        """A non-param state entry (torch.optim keeps none; a foreign optimizer might)."""
        if isinstance(value, Tensor):
            return value.detach().to(self._device).clone()
        if isinstance(value, dict):
            return {k: self._import_global_state(k, v) for k, v in value.items()}
        return value

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_caches", {})
        self.__dict__["_last_plan"] = None
