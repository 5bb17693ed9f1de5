"""Read VNN-LIB property files (the subset used by VNN-COMP 2021-2023) into a :class:`~verify.properties.Spec`.

A VNN-LIB file declares the network's flattened inputs ``X_0..X_{n-1}`` and outputs ``Y_0..Y_{m-1}`` and
asserts constraints on them. The asserts on inputs give the input box; the asserts on outputs describe the
*unsafe* region (a property is verified, ``unsat``, when no input in the box reaches it).

Supported:

* commands ``(declare-const X_i Real)``, ``(declare-const Y_j Real)``, ``(assert F)``; ``set-logic``,
  ``set-info``, ``set-option``, ``check-sat``, ``get-model`` and ``exit`` are accepted and ignored;
* formulas ``F``: ``(and F ...)``, ``(or F ...)``, nested arbitrarily, and comparisons
  ``(<= t t ...)``, ``(>= ...)``, ``(< ...)``, ``(> ...)``, ``(= ...)`` (chained as in SMT-LIB:
  ``(<= a b c)`` is ``a <= b and b <= c``; ``=`` is two inequalities);
* linear terms ``t``: numbers (``1``, ``-0.5``, ``.5``, ``1.5e-3``), declared variables,
  ``(+ t ...)``, ``(- t)``, ``(- t t ...)``, ``(* c t)`` (all but one factor constant) and ``(/ t c)``.

Strict inequalities ``<`` / ``>`` are read as ``<=`` / ``>=``. The unsafe region read is then the closure of
the true one, a superset of it, so an ``unsat`` (verified) answer on the spec read is also sound for the file;
a ``sat`` counterexample may lie on the boundary and should be checked against the strict form if it matters.
Strict input bounds likewise give the closed box.

Input asserts (only ``X`` variables) must bound single variables; bounds on one variable are intersected.
Every declared input needs a lower and an upper bound. Not supported (each raises :class:`VnnlibError`):
disjunctive input constraints (several input boxes), linear constraints over several inputs, and
constraints that mix inputs and outputs in one inequality.

Output asserts are each turned into disjunctive normal form (a list of conjunctions of rows ``a @ y <= b``);
several top-level asserts are conjoined (cross product of their clauses, at most :data:`MAX_CLAUSES`).

Errors carry ``path:line:col`` (1-based) of the offending token. Tokenizing keeps every token's text and,
implicitly, its offset (the i-th token is the i-th match of the token pattern), from which the line and
column are recovered on demand: this keeps the common path fast (a 3072-input CIFAR-10 property, ~65,000
tokens, parses in a few tens of milliseconds).

Example:
    >>> spec = parse_vnnlib('''
    ... (declare-const X_0 Real)
    ... (declare-const Y_0 Real)
    ... (declare-const Y_1 Real)
    ... (assert (>= X_0 -1.0))
    ... (assert (<= X_0 1e0))
    ... (assert (or (>= Y_1 Y_0) (> Y_0 (* 2 Y_1))))
    ... ''')
    >>> spec.lower, spec.upper
    (array([-1.]), array([1.]))
    >>> [(a.tolist(), b.tolist()) for a, b in spec.unsafe]
    [([[1.0, -1.0]], [0.0]), ([[-1.0, 2.0]], [0.0])]
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import time
import zlib
from collections.abc import Sequence
from itertools import pairwise, product
from pathlib import Path

import numpy as np

from verify.errors import VnnlibError
from verify.properties import Spec

__all__ = ["MAX_CLAUSES", "parse_vnnlib", "read_vnnlib", "write_counterexample"]

logger = logging.getLogger(__name__)

MAX_CLAUSES = 10_000
"""The most clauses (disjuncts) the unsafe region may have after conversion to DNF."""

# One token: a parenthesis, a comment (to end of line), or an atom (symbol or number). Anything else between
# matches is whitespace, since the atom class takes every other character.
_TOKEN_RE = re.compile(r"[()]|;[^\n]*|[^\s();]+")
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_VAR_RE = re.compile(r"([XY])_(0|[1-9]\d*)")
_INEQUALITIES = frozenset(("<=", ">=", "<", ">"))
_COMPARISONS = ("<=", ">=", "<", ">", "=")
_TERM_OPS = ("+", "-", "*", "/")
_IGNORED_COMMANDS = ("set-logic", "set-info", "set-option", "check-sat", "get-model", "exit")

# A row: (coefficients by variable name, bound, token index of its comparison); means coefs . v <= bound.
_Row = tuple[dict[str, float], float, int]
_Clause = list[_Row]
# A parsed S-expression: a list [index of its '(' token, child, ...]; an atom is its token index (int).
_Node = list


class _Parser:
    """Parses one VNN-LIB text; holds the tokens and what has been declared so far."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.tokens: list[str] = _TOKEN_RE.findall(text)
        self._offsets: list[int] | None = None
        # name -> (kind "X"/"Y", index, token index of the declaration)
        self.declared: dict[str, tuple[str, int, int]] = {}

    # ----- positions and errors -------------------------------------------------------------------------
    def position(self, index: int | None) -> tuple[int, int]:
        """(line, column), both 1-based, of token ``index``; ``None`` or past the end: the end of the text."""
        if index is None or index >= len(self.tokens):
            offset = len(self.text)
        else:
            if self._offsets is None:
                self._offsets = [m.start() for m in _TOKEN_RE.finditer(self.text)]
            offset = self._offsets[index]
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return line, column

    def error(self, index: int | None, message: str) -> VnnlibError:
        line, column = self.position(index)
        return VnnlibError(f"{self.source}:{line}:{column}: {message}")

    def describe(self, node: int | _Node) -> str:
        if isinstance(node, int):
            return repr(self.tokens[node])
        head = node[1] if len(node) > 1 else None
        if isinstance(head, int):
            return f"'({self.tokens[head]} ...)'"
        return "'()'" if head is None else "a nested list '((...) ...)'"

    @staticmethod
    def where(node: int | _Node) -> int:
        """Token index of an atom, or of the '(' of a list."""
        return node if isinstance(node, int) else node[0]

    # ----- S-expressions --------------------------------------------------------------------------------
    def read_sexprs(self) -> list[_Node]:
        """The top-level S-expressions, as nested lists of token indices."""
        top: _Node = []
        current = top
        stack: list[_Node] = []
        push, pop = stack.append, stack.pop
        for i, tok in enumerate(self.tokens):
            if tok == "(":
                node = [i]
                current.append(node)
                push(current)
                current = node
            elif tok == ")":
                if not stack:
                    raise self.error(i, "unbalanced parenthesis: ')' without a matching '('")
                current = pop()
            elif tok[0] != ";":
                current.append(i)
        if stack:
            opened = top[-1][0]
            raise self.error(opened, "unbalanced parenthesis: this '(' is never closed (expected ')' before "
                                     "the end of the file)")
        return top

    # ----- commands -------------------------------------------------------------------------------------
    def head(self, node: _Node, what: str) -> str:
        if len(node) < 2 or not isinstance(node[1], int):
            raise self.error(node[0], f"expected {what}, got {self.describe(node)}")
        return self.tokens[node[1]]

    def declare(self, node: _Node) -> None:
        if len(node) != 4 or not isinstance(node[2], int) or not isinstance(node[3], int):
            raise self.error(node[0], "expected '(declare-const NAME Real)'")
        name, sort = self.tokens[node[2]], self.tokens[node[3]]
        match = _VAR_RE.fullmatch(name)
        if match is None:
            raise self.error(node[2], f"expected a variable name X_<i> (input) or Y_<j> (output), got {name!r}")
        if sort != "Real":
            raise self.error(node[3], f"expected sort 'Real' for {name}, got {sort!r}")
        if name in self.declared:
            line, column = self.position(self.declared[name][2])
            raise self.error(node[2], f"{name} is declared twice (first at line {line}, column {column})")
        try:
            index = int(match.group(2))
        except ValueError as exc:  # more digits than int() converts (sys.get_int_max_str_digits(), 4300)
            raise self.error(node[2], f"the index of {name[:24]}... has {len(match.group(2))} digits; a "
                                      "variable index must be a small non-negative integer") from exc
        self.declared[name] = (match.group(1), index, node[2])

    def variables(self, kind: str) -> list[str]:
        """Declared names of one kind, in index order; raises if the indices are not 0..n-1."""
        names = sorted((idx, name) for name, (k, idx, _) in self.declared.items() if k == kind)
        for expected, (idx, name) in enumerate(names):
            if idx != expected:
                missing = f"{kind}_{expected}"
                raise self.error(self.declared[name][2],
                                 f"{missing} is not declared but {name} is: declare {kind}_0..{kind}_<n-1>")
        return [name for _, name in names]

    def deepest(self) -> tuple[int, int]:
        """(token index of the first '(' at the greatest nesting depth, that depth)."""
        depth, best, where = 0, 0, 0
        for i, tok in enumerate(self.tokens):
            if tok == "(":
                depth += 1
                if depth > best:
                    best, where = depth, i
            elif tok == ")":
                depth -= 1
        return where, best

    # ----- terms ----------------------------------------------------------------------------------------
    def linear(self, node: int | _Node) -> tuple[dict[str, float], float]:
        """A linear term as (coefficients by variable name, constant)."""
        if isinstance(node, int):
            tok = self.tokens[node]
            declared = self.declared.get(tok)
            if declared is not None:
                if declared[2] > node:
                    raise self.error(node, f"variable {tok} is used before its declaration (SMT-LIB needs "
                                           "'(declare-const ...)' first)")
                return {tok: 1.0}, 0.0
            if _NUMBER_RE.fullmatch(tok):
                value = float(tok)
                if not math.isfinite(value):
                    raise self.error(node, f"number {tok!r} is out of the float64 range")
                return {}, value
            if _VAR_RE.fullmatch(tok):
                raise self.error(node, f"undeclared variable {tok}: add '(declare-const {tok} Real)' before "
                                       "its first use")
            raise self.error(node, f"expected a number or a declared variable, got {tok!r}")
        op = self.head(node, "a term: a number, a variable or '(+|-|*|/ ...)'")
        args = node[2:]
        if op not in _TERM_OPS:
            raise self.error(node[1], f"unknown operator {op!r} in a term: expected one of "
                                      f"{', '.join(_TERM_OPS)}")
        if not args:
            raise self.error(node[1], f"operator {op!r} needs at least one argument")
        terms = [self.linear(arg) for arg in args]
        if op == "+":
            return _combine(terms, [1.0] * len(terms))
        if op == "-":
            if len(terms) == 1:
                return _combine(terms, [-1.0])
            return _combine(terms, [1.0] + [-1.0] * (len(terms) - 1))
        if op == "*":
            coefs: dict[str, float] = {}
            factor, constant = 1.0, 1.0
            variable_seen = False
            for arg, (c, k) in zip(args, terms, strict=True):
                if c:
                    if variable_seen:
                        raise self.error(self.where(arg), "nonlinear term: '*' may have at most one factor "
                                                          "with variables; the others must be numbers")
                    variable_seen = True
                    coefs, constant = c, k
                else:
                    factor *= k
            if not variable_seen:
                return {}, factor
            return {v: factor * c for v, c in coefs.items() if factor * c != 0.0}, factor * constant
        # "/": the first term divided by numeric constants
        coefs, constant = terms[0]
        for arg, (c, k) in zip(args[1:], terms[1:], strict=True):
            if c:
                raise self.error(self.where(arg), "nonlinear term: '/' may only divide by numbers")
            if k == 0.0:
                raise self.error(self.where(arg), "division by zero")
            coefs, constant = {v: x / k for v, x in coefs.items()}, constant / k
        return coefs, constant

    # ----- formulas -------------------------------------------------------------------------------------
    def dnf(self, node: int | _Node) -> list[_Clause]:
        """A formula in disjunctive normal form: clauses (conjunctions) of rows ``coefs . v <= bound``."""
        if isinstance(node, int):
            raise self.error(node, f"expected a formula '(and ...)', '(or ...)' or a comparison "
                                   f"'(<= a b)', got {self.describe(node)}")
        op = self.head(node, "a formula '(and ...)', '(or ...)' or a comparison '(<= a b)'")
        if len(node) == 4 and op in _INEQUALITIES:  # fast path for the common '(<= a b)'
            left, right = self.linear(node[2]), self.linear(node[3])
            coefs, bound = _less_equal(right, left) if op[0] == ">" else _less_equal(left, right)
            if coefs:
                return [[(coefs, bound, node[1])]]
            return [] if bound < 0.0 else [[]]
        args = node[2:]
        if op in _COMPARISONS:
            if len(args) < 2:
                raise self.error(node[1], f"comparison {op!r} needs at least two terms, got {len(args)}")
            terms = [self.linear(arg) for arg in args]
            rows: _Clause = []
            for left, right in pairwise(terms):
                if op[0] == ">":  # (>= a b) is b <= a
                    left, right = right, left
                candidates = [_less_equal(left, right)]
                if op == "=":
                    candidates.append(_less_equal(right, left))
                for coefs, bound in candidates:
                    if coefs:
                        rows.append((coefs, bound, node[1]))
                    elif bound < 0.0:  # a false constant comparison: the conjunction cannot hold
                        return []
            return [rows]
        if op == "and":
            if not args:
                raise self.error(node[1], "'and' needs at least one argument")
            clauses: list[_Clause] = [[]]
            for arg in args:
                sub = self.dnf(arg)
                if len(clauses) * len(sub) > MAX_CLAUSES:
                    raise self.error(node[1], f"the formula has more than {MAX_CLAUSES} clauses in "
                                              "disjunctive normal form; it is too large to expand")
                clauses = [a + b for a, b in product(clauses, sub)]
            return clauses
        if op == "or":
            if not args:
                raise self.error(node[1], "'or' needs at least one argument")
            clauses = []
            for arg in args:
                clauses.extend(self.dnf(arg))
                if len(clauses) > MAX_CLAUSES:
                    raise self.error(node[1], f"the formula has more than {MAX_CLAUSES} clauses; it is too "
                                              "large to expand")
            return clauses
        if op in _TERM_OPS:
            raise self.error(node[1], f"expected a formula, got the term {self.describe(node)}: compare it "
                                      "with '<=', '>=', '<', '>' or '='")
        raise self.error(node[1], f"unknown operator {op!r}: expected 'and', 'or' or a comparison "
                                  f"({', '.join(_COMPARISONS)})")

    # ----- the whole file -------------------------------------------------------------------------------
    def parse(self, name: str, n_inputs: int | None, n_outputs: int | None) -> Spec:
        commands = self.read_sexprs()
        if not commands:
            raise self.error(None, "empty property: expected '(declare-const X_i Real)', "
                                   "'(declare-const Y_j Real)' and '(assert ...)' commands")
        asserts: list[_Node] = []
        for node in commands:
            if isinstance(node, int):
                raise self.error(node, f"expected a command '(declare-const ...)' or '(assert ...)', "
                                       f"got {self.describe(node)}")
            op = self.head(node, "a command '(declare-const ...)' or '(assert ...)'")
            if op == "declare-const":
                self.declare(node)
            elif op == "assert":
                if len(node) != 3:
                    raise self.error(node[0], f"expected '(assert FORMULA)' with one formula, got "
                                              f"{len(node) - 2}")
                asserts.append(node)
            elif op in _IGNORED_COMMANDS:
                logger.debug("%s: ignoring (%s ...)", self.source, op)
            else:
                raise self.error(node[1], f"unknown command {op!r}: expected 'declare-const' or 'assert'")

        inputs, outputs = self.variables("X"), self.variables("Y")
        if not inputs:
            raise self.error(None, "the property declares no input: expected '(declare-const X_0 Real)' ...")
        for kind, declared, expected in (("inputs", inputs, n_inputs), ("outputs", outputs, n_outputs)):
            if expected is not None and len(declared) != expected:
                raise VnnlibError(f"{self.source}: the property declares {len(declared)} {kind} but the "
                                  f"network has {expected}")
        out_index = {name: self.declared[name][1] for name in outputs}
        inf = math.inf
        lows: list[float] = [-inf] * len(inputs)
        highs: list[float] = [inf] * len(inputs)
        unsafe: list[_Clause] = [[]]
        for node in asserts:
            clauses = self.dnf(node[2])
            if not clauses:
                raise self.error(node[0], "this assert can never hold (it compares constants only)")
            output_clauses: list[_Clause] = []
            for clause in clauses:
                out_rows: _Clause = []
                for row in clause:
                    coefs = row[0]
                    n_outputs_used = sum(1 for v in coefs if v[0] == "Y") if len(coefs) > 1 else None
                    if n_outputs_used is None:  # one variable: the common case
                        ((var, coef),) = coefs.items()
                        if var[0] == "Y":
                            out_rows.append(row)
                            continue
                    elif n_outputs_used == len(coefs):
                        out_rows.append(row)
                        continue
                    elif n_outputs_used:
                        raise self.error(row[2], "a constraint that mixes inputs (X) and outputs (Y) is not "
                                                 "supported")
                    if len(clauses) > 1:
                        raise self.error(node[0], "disjunctive input constraints (an 'or' over input "
                                                  "constraints, i.e. several input boxes) are not "
                                                  "supported yet; split the property into one file per box")
                    if n_outputs_used is not None:
                        raise self.error(row[2], "a linear constraint over several inputs is not supported: "
                                                 "each input assert must bound one X_i")
                    idx, bound = self.declared[var][1], row[1] / coef
                    if coef > 0:
                        if bound < highs[idx]:
                            highs[idx] = bound
                    elif bound > lows[idx]:
                        lows[idx] = bound
                output_clauses.append(out_rows)
            if output_clauses == [[]]:  # input constraints only
                continue
            if len(unsafe) * len(output_clauses) > MAX_CLAUSES:
                raise self.error(node[0], f"the conjunction of the output asserts has more than {MAX_CLAUSES} "
                                          "clauses in disjunctive normal form; it is too large to expand")
            unsafe = [a + b for a, b in product(unsafe, output_clauses)]
        lower, upper = np.array(lows, dtype=np.float64), np.array(highs, dtype=np.float64)

        for bounds, which in ((lower, "lower"), (upper, "upper")):
            missing = np.nonzero(~np.isfinite(bounds))[0]
            if missing.size:
                var = inputs[int(missing[0])]
                raise self.error(self.declared[var][2],
                                 f"input {var} has no {which} bound ({missing.size} input(s) lack one): "
                                 f"add '(assert ({'>=' if which == 'lower' else '<='} {var} <number>))'")
        empty = np.nonzero(lower > upper)[0]
        if empty.size:
            var = inputs[int(empty[0])]
            raise self.error(self.declared[var][2], f"empty input box: the bounds on {var} contradict each "
                                                    f"other ({float(lower[empty[0]])!r} > {float(upper[empty[0]])!r})")
        if unsafe == [[]]:
            logger.warning("%s: no output constraint: the unsafe region is every output", self.source)

        m = len(outputs)
        matrices: list[tuple[np.ndarray, np.ndarray]] = []
        for clause in unsafe:
            a = np.zeros((len(clause), m))
            b = np.empty(len(clause))
            for r, (coefs, bound, _) in enumerate(clause):
                for var, coef in coefs.items():
                    a[r, out_index[var]] += coef
                b[r] = bound
            matrices.append((a, b))
        return Spec(lower, upper, matrices, name=name, meta={"source": self.source})


def _less_equal(left: tuple[dict[str, float], float],
                right: tuple[dict[str, float], float]) -> tuple[dict[str, float], float]:
    """The row ``coefs . v <= bound`` equivalent to ``left <= right`` (both linear terms)."""
    (lc, lk), (rc, rk) = left, right
    if rc:
        coefs = dict(lc)
        for var, x in rc.items():
            coefs[var] = coefs.get(var, 0.0) - x
        coefs = {v: x for v, x in coefs.items() if x != 0.0}
    else:
        coefs = dict(lc)
    return coefs, rk - lk + 0.0  # + 0.0 turns -0.0 into 0.0


def _combine(terms: Sequence[tuple[dict[str, float], float]],
             weights: Sequence[float]) -> tuple[dict[str, float], float]:
    """The weighted sum of linear terms, without zero coefficients."""
    coefs: dict[str, float] = {}
    constant = 0.0
    for (c, k), w in zip(terms, weights, strict=True):
        constant += w * k
        for var, x in c.items():
            coefs[var] = coefs.get(var, 0.0) + w * x
    return {v: x for v, x in coefs.items() if x != 0.0}, constant


def parse_vnnlib(text: str, source: str = "<string>", n_inputs: int | None = None,
                 n_outputs: int | None = None) -> Spec:
    """Parse VNN-LIB text into a :class:`Spec`.

    Args:
        text: the property (the content of a ``.vnnlib`` file).
        source: the name used in error messages (``source:line:col: ...``); also the spec's name.
        n_inputs: when given, the number of inputs the network has; the property must declare as many.
        n_outputs: when given, the number of outputs the network has; the property must declare as many.

    Returns:
        ``Spec(lower, upper, unsafe, name=source)``: the input box over ``X_0..X_{n-1}`` and the unsafe
        region, a list of clauses ``(A, b)`` with ``A`` of shape (rows, number of declared outputs).

    Raises:
        VnnlibError: malformed text (unbalanced parentheses, unknown operator or command, undeclared
            variable, non-numeric constant), an input without a lower or upper bound, an unsupported
            construct (disjunctive or multi-variable input constraints, constraints mixing inputs and
            outputs, nonlinear terms), too many DNF clauses, formulas nested too deeply to read (many
            hundreds of levels), or declared counts that differ from ``n_inputs`` / ``n_outputs``. The
            message starts with ``source:line:col`` where a token is at fault.

    Example:
        >>> spec = parse_vnnlib("(declare-const X_0 Real) (declare-const Y_0 Real) "
        ...                     "(assert (<= X_0 1)) (assert (>= X_0 0)) (assert (<= Y_0 -0.5))")
        >>> spec.unsafe[0][0].tolist(), spec.unsafe[0][1].tolist()
        ([[1.0]], [-0.5])
    """
    start = time.perf_counter()
    parser = _Parser(text, source)
    try:
        spec = parser.parse(source, n_inputs, n_outputs)
    except RecursionError as exc:  # terms and formulas are read recursively, one Python frame per level
        where, depth = parser.deepest()
        raise parser.error(where, f"the formula is nested too deeply ({depth} levels of parentheses) to be "
                                  "read; flatten it, e.g. '(+ a b c)' instead of '(+ a (+ b c))' and "
                                  "'(and p q r)' instead of '(and p (and q r))'") from exc
    logger.debug("%s: parsed %d inputs, %d unsafe clause(s) in %.1f ms", source, spec.n_inputs,
                 len(spec.unsafe), 1e3 * (time.perf_counter() - start))
    return spec


def read_vnnlib(path: str | os.PathLike[str], n_inputs: int | None = None,
                n_outputs: int | None = None) -> Spec:
    """Read a VNN-LIB file (``.vnnlib``, or gzip-compressed ``.vnnlib.gz``) into a :class:`Spec`.

    Args:
        path: the file.
        n_inputs: when given, the number of inputs the network has; the property must declare as many.
        n_outputs: when given, the number of outputs the network has; the property must declare as many.

    Returns:
        The spec, named after the file's stem (``prop_0_0.03`` for ``prop_0_0.03.vnnlib``); see
        :func:`parse_vnnlib`.

    Raises:
        VnnlibError: the file cannot be read or decoded (the message names the path), or its content is
            not a supported property (see :func:`parse_vnnlib`; messages start with ``path:line:col``).

    Example:
        >>> spec = read_vnnlib("mnistfc/prop_0_0.03.vnnlib", n_inputs=784, n_outputs=10)  # doctest: +SKIP
        >>> len(spec.unsafe)  # doctest: +SKIP
        9
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise VnnlibError(f"cannot read the VNN-LIB file {str(path)!r}: {exc}") from exc
    stem = path.name
    for suffix in (".gz", ".vnnlib"):
        stem = stem.removesuffix(suffix)
    spec = parse_vnnlib(text, source=str(path), n_inputs=n_inputs, n_outputs=n_outputs)
    spec.name = stem
    return spec


def write_counterexample(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> str:
    """Format a counterexample as the body of a VNN-COMP result file (the caller writes ``sat`` first).

    Args:
        x: the input (any shape; flattened in C order as ``X_0, X_1, ...``).
        y: the network's output on ``x`` (flattened as ``Y_0, Y_1, ...``).

    Returns:
        ``((X_0 v0)\\n (X_1 v1)\\n ... (Y_0 w0)\\n ... (Y_{m-1} w))`` with every value written as the
        ``repr`` of a Python float (full precision: it reads back to the same float64); no trailing newline.

    Raises:
        VnnlibError: a value is NaN or infinite.

    Example:
        >>> print(write_counterexample([0.1, 1e-05], [2.0]))
        ((X_0 0.1)
         (X_1 1e-05)
         (Y_0 2.0))
    """
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    for kind, values in (("X", xs), ("Y", ys)):
        bad = np.nonzero(~np.isfinite(values))[0]
        if bad.size:
            raise VnnlibError(f"counterexample value {kind}_{int(bad[0])} is {values[bad[0]]!r}: "
                              "only finite values can be written")
    entries = [f"(X_{i} {float(v)!r})" for i, v in enumerate(xs.tolist())]
    entries += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(ys.tolist())]
    return "(" + "\n ".join(entries) + ")"
