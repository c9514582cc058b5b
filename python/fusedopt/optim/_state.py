"""Versioned optimizer state: any change to ``opt.state`` is one integer compare away.

Note [state version]: a step reuses its cached plan (buckets, pointer tables) only while the
tensors it reads are the ones it was built from. Replacing a param's state
(``opt.state[p] = {...}``), clearing it (``opt.state.clear()``) or swapping one moment
(``opt.state[p]["exp_avg"] = t``) must invalidate the plan, but looking every param up in
``opt.state`` each step costs a Python-level ``Tensor.__hash__`` per param. So the optimizer's
state is a :class:`StateDict` whose per-param entries are :class:`ParamState` dicts, and every
mutating method of either bumps one shared :class:`StateVersion`; the plan records the version
it was built at. Plain dicts assigned into the state are converted on the way in (the same
keys and tensors), so later edits of them are seen too. Both pickle and deep-copy as
themselves (one shared version object per optimizer, as the memo keeps it); ``state_dict()``
hands out plain dicts (FusedOptimizer.state_dict), so a checkpoint loads with
``torch.load(weights_only=True)``.

What the version cannot see: an in-place ``.data`` swap of a state tensor (the dict is not
touched). The plan also compares the data pointers of every state tensor it hands a kernel
(optim/_plan.py), so that case rebuilds too.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any


class StateVersion:
    """A counter shared by an optimizer's state containers."""

    __slots__ = ("n",)

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def __reduce__(self):
        return (StateVersion, (self.n,))


def _bumping(name: str):
    base = getattr(dict, name)

    def method(self, *args, **kwargs):
        self._version.n += 1
        return base(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"dict.{name}, bumping the state version (Note [state version])."
    return method


class ParamState(dict):
    """One param's state (``step``, moments, ``master_param``...): a dict that reports edits."""

    __slots__ = ("_version",)

    def __init__(self, version: StateVersion, *args: Any, **kwargs: Any) -> None:
        self._version = version
        dict.__init__(self, *args, **kwargs)

    __setitem__ = _bumping("__setitem__")
    __delitem__ = _bumping("__delitem__")
    clear = _bumping("clear")
    pop = _bumping("pop")
    popitem = _bumping("popitem")
    setdefault = _bumping("setdefault")
    update = _bumping("update")
    __ior__ = _bumping("__ior__")

    def __reduce__(self):
        return (ParamState, (self._version, dict(self)))


class _NewParamState:
    """The default factory of a :class:`StateDict` (a class, so that it pickles)."""

    __slots__ = ("version",)

    def __init__(self, version: StateVersion) -> None:
        self.version = version

    def __call__(self) -> ParamState:
        return ParamState(self.version)

    def __reduce__(self):
        return (_NewParamState, (self.version,))


class StateDict(defaultdict):
    """``optimizer.state``: param -> :class:`ParamState`, reporting every edit."""

    def __init__(self, version: StateVersion | None = None, items: Any = ()) -> None:
        version = StateVersion() if version is None else version
        defaultdict.__init__(self, _NewParamState(version))
        self._version = version
        for key, value in dict(items).items():
            dict.__setitem__(self, key, self._wrap(value))

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, dict) and not (isinstance(value, ParamState)
                                            and value._version is self._version):
            return ParamState(self._version, value)
        return value

    @property
    def version(self) -> int:
        return self._version.n

    def __setitem__(self, key: Any, value: Any) -> None:
        self._version.n += 1
        dict.__setitem__(self, key, self._wrap(value))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = {} if default is None else default
        return dict.__getitem__(self, key)

    def __ior__(self, other: Any) -> StateDict:  # type: ignore[override]
        self.update(other)
        return self

    def __missing__(self, key: Any) -> ParamState:
        value = ParamState(self._version)
        self[key] = value
        return value

    __delitem__ = _bumping("__delitem__")
    clear = _bumping("clear")
    pop = _bumping("pop")
    popitem = _bumping("popitem")

    def __reduce__(self):
        return (StateDict, (self._version, dict(self)))

    def __copy__(self) -> StateDict:
        return StateDict(StateVersion(self._version.n), dict(self))


def as_state_dict(state: Any, version: StateVersion | None = None) -> StateDict:
    """``state`` as a :class:`StateDict` (itself when it already is one)."""
    if isinstance(state, StateDict):
        return state
    return StateDict(version, state if state is not None else {})
