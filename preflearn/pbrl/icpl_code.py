"""A safe executor for reward-function code written by a language model (used by :mod:`preflearn.pbrl.icpl`).

ICPL and Eureka run the model's reward code as ordinary Python inside the
simulator (Yu et al. 2024, arXiv:2410.17233, Section 4; Ma et al. 2023,
"Eureka", arXiv:2310.12931). Here the code is *checked before it runs*: it is
parsed with :mod:`ast` and accepted only when it is one function

    def compute_reward(<names>):
        ...
        return reward                       # or: return reward, {"name": component, ...}

whose parameters are among the environment's observation names, ``obs`` (the
whole (..., D) array) and ``action``, and whose body uses only

* assignments, ``if``/``else``, conditional expressions and ``return``;
* arithmetic, comparisons and boolean operators on numbers and arrays;
* calls of allow-listed functions: ``np.<f>`` / ``numpy.<f>`` / ``math.<f>`` for
  elementwise maths (:data:`ALLOWED_FUNCTIONS`, ``math`` ones are mapped onto
  their numpy versions so they work on arrays), and the builtins ``abs``,
  ``float``, ``min``/``max`` (mapped to ``np.minimum``/``np.maximum``);
* constants ``np.pi``, ``np.e``, ``math.pi``, ``math.e``, ``math.tau``; subscripts such
  as ``obs[..., 2]``; dict literals with string keys for named components.

Anything else is refused *before execution* with a :class:`RewardCodeError`
naming the candidate and the line: imports, attributes other than the allow-list,
names starting with ``_``, loops and comprehensions (so run time is linear in the
code length), lambdas, nested functions, ``global``, ``with``, ``try``, strings outside
the docstring and dict keys. Numeric literals are turned into floats (so ``9 ** 9 ** 9``
overflows at once instead of building a huge integer) except inside subscripts.
Further limits: source length, number of syntax nodes, a wall-clock limit (SIGALRM,
on the main thread of POSIX systems), and the result must be finite and
broadcastable to the batch shape. The executed function sees empty ``__builtins__``.
"""

from __future__ import annotations

import ast
import math
import re
import signal
import threading
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

__all__ = [
    "RewardCodeError", "RewardCode", "compile_reward", "extract_code", "ALLOWED_FUNCTIONS", "CodeLimits",
    "numeric_constants", "replace_constants",
]

#: numpy functions the reward code may call (all elementwise or reductions over the last axis of a row).
ALLOWED_FUNCTIONS = frozenset({
    "abs", "absolute", "exp", "expm1", "log", "log1p", "log2", "log10", "sqrt", "square", "power", "tanh", "sinh",
    "cosh", "sin", "cos", "tan", "arctan", "arctan2", "arcsin", "arccos", "clip", "where", "minimum", "maximum",
    "sign", "floor", "ceil", "round", "hypot", "logical_and", "logical_or", "logical_not", "isclose", "radians",
    "degrees",
})
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}
_MATH_TO_NP = {"fabs": "abs", "atan": "arctan", "atan2": "arctan2", "asin": "arcsin", "acos": "arccos", "pow": "power"}
_BUILTINS = {"abs": np.abs, "float": float, "min": np.minimum, "max": np.maximum}

_ALLOWED_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign, ast.If, ast.IfExp,
    ast.Expr, ast.Name, ast.Load, ast.Store, ast.Constant, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call,
    ast.Attribute, ast.Subscript, ast.Slice, ast.Tuple, ast.Dict, ast.keyword, ast.Pass,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
    ast.And, ast.Or, ast.BitAnd, ast.BitOr, ast.Invert,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)
_MODULES = ("np", "numpy", "math")


class RewardCodeError(DataError):
    """Reward code that is refused or fails; ``file`` is the candidate's name, ``line`` the line in its code."""


@dataclass(frozen=True)
class CodeLimits:
    max_chars: int = 6000
    max_nodes: int = 800
    timeout_s: float = 2.0  # wall clock per call (SIGALRM; main thread only)


def extract_code(text: str) -> str:
    """The reward function in a model's answer: the first ```python block (else any ``` block, else the text),
    starting at its first ``def`` line (lines before it, such as imports, are dropped as ICPL does)."""
    for pat in (r"```python[^\n]*\n(.*?)```", r"```[^\n]*\n(.*?)```"):
        m = re.search(pat, text, re.S)
        if m:
            text = m.group(1)
            break
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("def "):
            return "\n".join(lines[i:]).strip("\n") + "\n"
    return text.strip("\n") + "\n"


class _Checker(ast.NodeVisitor):
    def __init__(self, name: str, params: set[str]) -> None:
        self.name = name
        self.params = params
        self.assigned: set[str] = set()

    def fail(self, node: ast.AST, reason: str) -> None:
        raise RewardCodeError(reason, file=self.name, line=getattr(node, "lineno", None))

    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, _ALLOWED_NODES):
            self.fail(node, f"{type(node).__name__} is not allowed in reward code")
        super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id.startswith("_"):
            self.fail(node, f"name {node.id!r} is not allowed (names may not start with '_')")
        if isinstance(node.ctx, ast.Store):
            if node.id in _MODULES or node.id in _BUILTINS:
                self.fail(node, f"cannot assign to {node.id!r}")
            self.assigned.add(node.id)
        elif node.id not in self.params and node.id not in self.assigned and node.id not in _BUILTINS:
            if node.id in _MODULES:
                self.fail(node, f"{node.id!r} may only be used as {node.id}.<function>")
            known = sorted(self.params | self.assigned)
            self.fail(node, f"unknown name {node.id!r}; available: {', '.join(known)}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not (isinstance(node.value, ast.Name) and node.value.id in _MODULES):
            self.fail(node, f"attribute access '.{node.attr}' is not allowed (only np.<f> and math.<f>)")
        attr = _MATH_TO_NP.get(node.attr, node.attr) if node.value.id == "math" else node.attr
        if attr not in ALLOWED_FUNCTIONS and attr not in _CONSTANTS:
            self.fail(node, f"{node.value.id}.{node.attr} is not in the allow-list")

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name):
            if f.id not in _BUILTINS:
                self.fail(node, f"call to {f.id!r} is not allowed")
        elif not isinstance(f, ast.Attribute):
            self.fail(node, "only calls of np.<f>, math.<f>, abs, float, min and max are allowed")
        elif isinstance(f.value, ast.Name) and f.attr in _CONSTANTS:
            self.fail(node, f"{f.value.id}.{f.attr} is a constant, not a function")
        for kw in node.keywords:
            if kw.arg is None:
                self.fail(node, "**kwargs are not allowed")
            if kw.arg in ("out", "where", "casting", "dtype", "subok"):
                self.fail(node, f"keyword {kw.arg!r} is not allowed")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) or node.value is Ellipsis:
            return  # positions of strings are checked by the function-level walk
        if not isinstance(node.value, (int, float, bool)) or isinstance(node.value, complex):
            self.fail(node, f"constant {node.value!r} is not allowed")


class _Floatify(ast.NodeTransformer):
    """Numeric literals -> floats, except inside subscripts (indices stay integers)."""

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        node.value = self.visit(node.value)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(float(node.value)), node)
        return node


def _check_strings(fn: ast.FunctionDef, name: str) -> None:
    allowed: set[int] = set()
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        allowed.add(id(body[0].value))  # docstring
    for node in ast.walk(fn):
        if isinstance(node, ast.Dict):
            for k in node.keys:
                if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                    raise RewardCodeError("component dict keys must be string literals", file=name,
                                          line=getattr(node, "lineno", None))
                allowed.add(id(k))
        if isinstance(node, ast.Subscript):
            for sub in ast.walk(node.slice):
                if isinstance(sub, ast.Constant) and sub.value is Ellipsis:
                    allowed.add(id(sub))
    for node in ast.walk(fn):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in allowed:
            raise RewardCodeError("string constants are only allowed as the docstring and component names",
                                  file=name, line=node.lineno)
        if isinstance(node, ast.Expr) and id(getattr(node, "value", None)) not in allowed:
            raise RewardCodeError("expression statements have no effect here (only the docstring)", file=name,
                                  line=node.lineno)


def _safe_namespace() -> dict:
    npns = types.SimpleNamespace(**{f: getattr(np, f) for f in ALLOWED_FUNCTIONS}, **_CONSTANTS)
    mathns = types.SimpleNamespace(**{f: getattr(np, f) for f in ALLOWED_FUNCTIONS},
                                   **{k: getattr(np, v) for k, v in _MATH_TO_NP.items()}, **_CONSTANTS)
    return {"__builtins__": {}, "np": npns, "numpy": npns, "math": mathns, **_BUILTINS}


@dataclass
class RewardCode:
    """A checked, compiled reward function; call it with named arrays: ``rc(obs, action)``.

    ``obs`` is (..., D) with columns named by ``obs_names``; ``action`` is (...,). Returns
    ``(reward, components)``: reward (...,) float64 and a dict of named (...,) components
    (empty when the code returns only the reward).
    """

    name: str
    source: str
    params: tuple[str, ...]
    obs_names: tuple[str, ...]
    limits: CodeLimits = field(default_factory=CodeLimits)
    _fn: object = field(default=None, repr=False)

    def __call__(self, obs: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        obs = np.array(obs, np.float64)  # a copy: the code cannot change the caller's arrays
        action = np.array(action, np.float64)
        shape = obs.shape[:-1]
        avail = {n: obs[..., i] for i, n in enumerate(self.obs_names)}
        avail["obs"] = obs
        avail["action"] = action
        args = [avail[p] for p in self.params]
        with np.errstate(all="ignore"), _time_limit(self.limits.timeout_s, self.name):
            try:
                out = self._fn(*args)
            except RewardCodeError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of model-written code is reported
                raise RewardCodeError(f"{type(exc).__name__}: {exc}", file=self.name, line=_code_line(exc, self.name)) \
                    from exc
        comps: dict[str, np.ndarray] = {}
        if isinstance(out, tuple):
            if len(out) != 2 or not isinstance(out[1], dict):
                raise RewardCodeError("must return reward or (reward, {name: component})", file=self.name)
            out, raw = out
            comps = {k: self._shape(v, shape, f"component {k!r}") for k, v in raw.items()}
        return self._shape(out, shape, "reward"), comps

    def _shape(self, value: object, shape: tuple[int, ...], what: str) -> np.ndarray:
        if value is None or isinstance(value, (str, dict, bytes)):
            raise RewardCodeError(f"{what} is {type(value).__name__}, expected numbers (one value per step)",
                                  file=self.name)
        try:
            arr = np.broadcast_to(np.asarray(value, np.float64), shape)
        except (ValueError, TypeError) as exc:
            raise RewardCodeError(f"{what} has shape {np.shape(value)}, expected {shape} (one value per step)",
                                  file=self.name) from exc
        if not np.isfinite(arr).all():
            raise RewardCodeError(f"{what} is not finite (NaN or inf) on {int((~np.isfinite(arr)).sum())} steps",
                                  file=self.name)
        return np.array(arr)


def _code_line(exc: BaseException, name: str) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class _time_limit:
    def __init__(self, seconds: float, name: str) -> None:
        self.seconds = seconds
        self.name = name
        self.active = (seconds > 0 and hasattr(signal, "setitimer")
                       and threading.current_thread() is threading.main_thread())

    def _raise(self, signum, frame):  # pragma: no cover - needs a slow candidate
        raise RewardCodeError(f"ran longer than {self.seconds} s", file=self.name)

    def __enter__(self):
        if self.active:
            self.old = signal.signal(signal.SIGALRM, self._raise)
            self.start = time.monotonic()
            self.outer = signal.setitimer(signal.ITIMER_REAL, self.seconds)  # (delay, interval) of a timer we pause
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
            delay, interval = self.outer
            if delay > 0:  # give an enclosing timer (e.g. pytest-timeout) back what it had left
                signal.setitimer(signal.ITIMER_REAL, max(delay - (time.monotonic() - self.start), 1e-3), interval)
        return False


def compile_reward(source: str, obs_names: Sequence[str], *, name: str = "candidate",
                   func_name: str = "compute_reward", limits: CodeLimits = CodeLimits()) -> RewardCode:
    """Check and compile reward code (see the module docstring); raises :class:`RewardCodeError`.

    ``name`` labels the candidate in errors (``"iter2-3:4: unknown name 'x'"`` style messages).
    """
    if len(source) > limits.max_chars:
        raise RewardCodeError(f"code is {len(source)} characters, the limit is {limits.max_chars}", file=name)
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as exc:
        raise RewardCodeError(f"syntax error: {exc.msg}", file=name, line=exc.lineno) from None
    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > limits.max_nodes:
        raise RewardCodeError(f"code has {n_nodes} syntax nodes, the limit is {limits.max_nodes}", file=name)
    fns = [s for s in tree.body if isinstance(s, ast.FunctionDef)]
    others = [s for s in tree.body if not isinstance(s, ast.FunctionDef)]
    if others:
        raise RewardCodeError(f"only one function definition is allowed at top level, found "
                              f"{type(others[0]).__name__}", file=name, line=others[0].lineno)
    fn = next((f for f in fns if f.name == func_name), None)
    if fn is None or len(fns) != 1:
        found = ", ".join(f.name for f in fns) or "none"
        raise RewardCodeError(f"expected exactly one function named {func_name!r}, found: {found}", file=name,
                              line=fns[0].lineno if fns else None)
    if fn.decorator_list or fn.returns is not None or fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs \
            or fn.args.defaults or fn.args.posonlyargs:
        raise RewardCodeError("the function takes plain named parameters only (no decorators, annotations, "
                              "defaults, *args or **kwargs)", file=name, line=fn.lineno)
    allowed = tuple(obs_names) + ("obs", "action")
    params = []
    for a in fn.args.args:
        if a.annotation is not None:
            raise RewardCodeError("parameter annotations are not allowed", file=name, line=a.lineno)
        if a.arg not in allowed:
            raise RewardCodeError(f"parameter {a.arg!r} is not an observation name; available: {', '.join(allowed)}",
                                  file=name, line=a.lineno)
        params.append(a.arg)
    if not any(isinstance(s, ast.Return) for s in ast.walk(fn)):
        raise RewardCodeError("the function never returns a reward", file=name, line=fn.lineno)
    checker = _Checker(name, set(params))
    for stmt in fn.body:
        checker.visit(stmt)
    _check_strings(fn, name)
    tree = ast.fix_missing_locations(_Floatify().visit(tree))
    ns = _safe_namespace()
    exec(compile(tree, name, "exec"), ns)  # noqa: S102 - the tree passed the allow-list check above
    return RewardCode(name, source, tuple(params), tuple(obs_names), limits, ns[func_name])


class _FoldSign(ast.NodeTransformer):
    """-<number> -> one negative literal, so a mutation sees (and may flip) the signed value."""

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        node = self.generic_visit(node)
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
                and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
            return ast.copy_location(ast.Constant(-node.operand.value), node)
        return node


def numeric_constants(source: str) -> list[float]:
    """The signed numeric literals of the code in source order, skipping subscript indices (what a mutation
    may change); ``-0.5`` counts as one literal."""
    return [float(c.value) for c in _const_nodes(_FoldSign().visit(ast.parse(source)))]


def _const_nodes(tree: ast.AST) -> list[ast.Constant]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            skip.update(id(n) for n in ast.walk(node.slice))
    out = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in skip
           and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)]
    return sorted(out, key=lambda n: (n.lineno, n.col_offset))


def replace_constants(source: str, values: Sequence[float]) -> str:
    """The code with its numeric literals (as listed by :func:`numeric_constants`) replaced by ``values``
    (rounded to 4 decimals); the result is re-printed by :func:`ast.unparse` (comments are dropped)."""
    tree = _FoldSign().visit(ast.parse(source))
    nodes = _const_nodes(tree)
    if len(nodes) != len(values):
        raise ValueError(f"code has {len(nodes)} constants, got {len(values)} values")
    for n, v in zip(nodes, values):
        n.value = float(round(float(v), 4))
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"
