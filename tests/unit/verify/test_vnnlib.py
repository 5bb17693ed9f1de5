"""verify.vnnlib: parsing small inline VNN-LIB properties, error messages, and counterexample output."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from verify.errors import SpecError, VnnlibError
from verify.vnnlib import MAX_CLAUSES, parse_vnnlib, read_vnnlib, write_counterexample


def _declare(n_inputs: int, n_outputs: int) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    return "\n".join(lines) + "\n"


def _box(lower: list[float], upper: list[float]) -> str:
    return "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n"
                   for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)))


def _clauses(spec) -> list[tuple[list[list[float]], list[float]]]:
    return [(a.tolist(), b.tolist()) for a, b in spec.unsafe]


def _raises_at(text: str, line: int, column: int, *words: str, **kwargs) -> str:
    with pytest.raises(VnnlibError) as info:
        parse_vnnlib(text, source="p.vnnlib", **kwargs)
    message = str(info.value)
    assert message.startswith(f"p.vnnlib:{line}:{column}: "), message
    for word in words:
        assert word in message, message
    return message


# ----- well-formed properties --------------------------------------------------------------------------------
def test_robustness_or_of_ands() -> None:
    text = """; Mnist property with label: 1.
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
; Input constraints:
(assert (<= X_0 0.75))
(assert (>= X_0 0.25))
(assert (<= X_1 1.0))
(assert (>= X_1 0.0))
; Output constraints:
(assert (or
    (and (>= Y_0 Y_1))
    (and (>= Y_2 Y_1))
))
"""
    spec = parse_vnnlib(text)
    assert spec.lower.tolist() == [0.25, 0.0]
    assert spec.upper.tolist() == [0.75, 1.0]
    # y_0 >= y_1  <=>  y_1 - y_0 <= 0
    assert _clauses(spec) == [([[-1.0, 1.0, 0.0]], [0.0]), ([[0.0, 1.0, -1.0]], [0.0])]
    assert spec.name == "<string>"
    assert spec.violated_by(np.array([1.0, 0.0, 0.0])) and not spec.violated_by(np.array([0.0, 1.0, 0.0]))


def test_marabou_style_conjunction_of_asserts_is_one_clause() -> None:
    text = _declare(1, 3) + _box([0.0], [1.0]) + "(assert (>= Y_1 Y_0))\n(assert (>= Y_1 Y_2))\n"
    spec = parse_vnnlib(text)
    assert _clauses(spec) == [([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]], [0.0, 0.0])]


def test_and_of_ors_expands_to_dnf_in_order() -> None:
    text = _declare(1, 2) + _box([0], [1]) + (
        "(assert (and (or (<= Y_0 1) (<= Y_0 2)) (or (>= Y_1 3) (and (>= Y_1 4) (<= Y_1 5)))))\n"
    )
    spec = parse_vnnlib(text)
    assert _clauses(spec) == [
        ([[1.0, 0.0], [0.0, -1.0]], [1.0, -3.0]),
        ([[1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], [1.0, -4.0, 5.0]),
        ([[1.0, 0.0], [0.0, -1.0]], [2.0, -3.0]),
        ([[1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], [2.0, -4.0, 5.0]),
    ]


def test_several_top_level_asserts_cross_product() -> None:
    text = _declare(1, 2) + _box([0], [1]) + (
        "(assert (or (<= Y_0 1) (<= Y_0 2)))\n(assert (or (<= Y_1 3) (<= Y_1 4)))\n"
    )
    spec = parse_vnnlib(text)
    assert [b for _, b in _clauses(spec)] == [[1.0, 3.0], [1.0, 4.0], [2.0, 3.0], [2.0, 4.0]]


def test_linear_terms() -> None:
    text = _declare(1, 3) + _box([0], [1]) + (
        "(assert (<= (+ Y_0 (* 2 Y_1) (- Y_2)) (- 3 0.5)))\n"   # y0 + 2 y1 - y2 <= 2.5
        "(assert (>= (- Y_0 Y_1 1.5) (* -0.5 Y_2)))\n"          # y0 - y1 - 1.5 >= -0.5 y2
        "(assert (<= (* Y_1 3 2) (/ Y_2 4)))\n"                 # 6 y1 <= y2 / 4
        "(assert (< (+ Y_0 Y_1 (- Y_1)) 7))\n"                  # y_1 cancels: y0 < 7
    )
    spec = parse_vnnlib(text)
    (a, b), = _clauses(spec)
    assert a == [[1.0, 2.0, -1.0], [-1.0, 1.0, -0.5], [0.0, 6.0, -0.25], [1.0, 0.0, 0.0]]
    assert b == [2.5, -1.5, 0.0, 7.0]


def test_numbers_scientific_negative_and_strict() -> None:
    text = _declare(3, 1) + (
        "(assert (>= X_0 -0.5)) (assert (<= X_0 (- 0.25)))\n"
        "(assert (> X_1 1e-3)) (assert (< X_1 1.5E+2))\n"
        "(assert (>= X_2 -2.5e-1)) (assert (<= X_2 .5))\n"
        "(assert (> Y_0 -1))\n"
    )
    spec = parse_vnnlib(text)
    assert spec.lower.tolist() == [-0.5, 0.001, -0.25]
    assert spec.upper.tolist() == [-0.25, 150.0, 0.5]
    assert _clauses(spec) == [([[-1.0]], [1.0])]  # strict read as non-strict: -y0 <= 1


def test_bounds_intersect_reversed_operands_and_coefficients() -> None:
    text = _declare(2, 1) + (
        "(assert (<= X_0 1)) (assert (<= X_0 0.5)) (assert (>= X_0 -1)) (assert (>= X_0 -2))\n"
        "(assert (<= 0.25 X_1)) (assert (>= 1 X_1)) (assert (<= (* 2 X_1) 1.5))\n"
        "(assert (and (<= Y_0 0)))\n"
    )
    spec = parse_vnnlib(text)
    assert spec.lower.tolist() == [-1.0, 0.25]
    assert spec.upper.tolist() == [0.5, 0.75]


def test_chained_and_equality_comparisons() -> None:
    text = _declare(1, 2) + (
        "(assert (<= 0 X_0 1))\n"          # chained: 0 <= X_0 and X_0 <= 1
        "(assert (= Y_0 Y_1))\n"           # two rows
    )
    spec = parse_vnnlib(text)
    assert spec.lower.tolist() == [0.0] and spec.upper.tolist() == [1.0]
    assert _clauses(spec) == [([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0])]


def test_input_and_output_constraints_in_one_assert() -> None:
    text = _declare(1, 1) + "(assert (and (>= X_0 0) (<= X_0 1) (<= Y_0 3)))\n"
    spec = parse_vnnlib(text)
    assert spec.lower.tolist() == [0.0] and spec.upper.tolist() == [1.0]
    assert _clauses(spec) == [([[1.0]], [3.0])]


def test_comments_whitespace_and_ignored_commands() -> None:
    text = """(set-logic QF_LRA) ; a comment with ( parens ) and ;; more
(declare-const X_0 Real)(declare-const Y_0 Real)
\t(assert
   (<=   X_0   ; inline
      1))
(assert (>= X_0 0));no space before comment
(assert (<= Y_0 0))
(check-sat)
; trailing comment without newline"""
    spec = parse_vnnlib(text)
    assert spec.lower.tolist() == [0.0] and spec.upper.tolist() == [1.0]
    assert _clauses(spec) == [([[1.0]], [0.0])]


def test_no_output_assert_means_every_output(caplog: pytest.LogCaptureFixture) -> None:
    spec = parse_vnnlib(_declare(1, 2) + _box([0], [1]))
    assert len(spec.unsafe) == 1 and spec.unsafe[0][0].shape == (0, 2)
    assert spec.violated_by(np.zeros(2))
    assert "no output constraint" in caplog.text


def test_counts_match() -> None:
    spec = parse_vnnlib(_declare(2, 3) + _box([0, 0], [1, 1]) + "(assert (<= Y_2 0))", n_inputs=2, n_outputs=3)
    assert spec.n_inputs == 2 and spec.n_outputs == 3


def test_read_vnnlib_file_and_gzip(tmp_path: Path) -> None:
    text = _declare(1, 1) + _box([0], [1]) + "(assert (<= Y_0 0))\n"
    plain = tmp_path / "prop_3_0.05.vnnlib"
    plain.write_text(text)
    packed = tmp_path / "other.vnnlib.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path, name in ((plain, "prop_3_0.05"), (str(packed), "other")):
        spec = read_vnnlib(path, n_inputs=1, n_outputs=1)
        assert spec.name == name
        assert spec.upper.tolist() == [1.0]


def test_exact_float_values() -> None:
    text = _declare(1, 1) + "(assert (<= X_0 0.029999999329447746)) (assert (>= X_0 0.0)) (assert (<= Y_0 0))"
    assert parse_vnnlib(text).upper[0] == 0.029999999329447746


# ----- malformed properties ----------------------------------------------------------------------------------
def test_unbalanced_parentheses() -> None:
    _raises_at(_declare(1, 1) + "(assert (<= X_0 1)\n", 3, 1, "unbalanced", "never closed")
    _raises_at(_declare(1, 1) + "(assert (<= X_0 1)))\n", 3, 20, "unbalanced", "')'")


def test_empty_file() -> None:
    _raises_at("", 1, 1, "empty")
    _raises_at("; only a comment\n\n", 3, 1, "empty")


def test_unknown_operators_and_commands() -> None:
    base = _declare(1, 1) + _box([0], [1])
    _raises_at(base + "(assert (=> Y_0 1))", 5, 10, "unknown operator '=>'", "'and', 'or'")
    _raises_at(base + "(assert (<= (exp Y_0) 1))", 5, 14, "unknown operator 'exp'", "+, -, *, /")
    _raises_at(base + "(assert (not (<= Y_0 1)))", 5, 10, "unknown operator 'not'")
    _raises_at(base + "(define-fun f () Real 1)", 5, 2, "unknown command 'define-fun'")
    _raises_at(base + "(assert (+ Y_0 1))", 5, 10, "expected a formula")
    _raises_at(base + "(assert Y_0)", 5, 9, "expected a formula")
    _raises_at(base + "(assert (* Y_0 Y_0))", 5, 10, "expected a formula")
    _raises_at(base + "(assert (<= (* Y_0 Y_0) 1))", 5, 20, "nonlinear")
    _raises_at(base + "(assert (<= Y_0))", 5, 10, "at least two terms")
    _raises_at(base + "(assert (or))", 5, 10, "at least one argument")
    _raises_at(base + "(assert (<= Y_0 1) (<= Y_0 2))", 5, 1, "one formula")
    _raises_at(base + "Y_0", 5, 1, "expected a command")
    _raises_at(base + "((assert (<= Y_0 1)))", 5, 1, "expected a command")


def test_non_numeric_constants() -> None:
    base = _declare(1, 1) + _box([0], [1])
    _raises_at(base + "(assert (<= Y_0 abc))", 5, 17, "expected a number or a declared variable", "'abc'")
    _raises_at(base + "(assert (<= Y_0 1.2.3))", 5, 17, "'1.2.3'")
    _raises_at(base + "(assert (<= Y_0 inf))", 5, 17, "'inf'")
    _raises_at(base + "(assert (<= Y_0 1_000))", 5, 17, "'1_000'")
    _raises_at(base + "(assert (<= Y_0 1e999))", 5, 17, "out of the float64 range")
    _raises_at(base + "(assert (<= Y_0 (/ Y_0 0)))", 5, 24, "division by zero")


def test_undeclared_variables() -> None:
    base = _declare(1, 1) + _box([0], [1])
    _raises_at(base + "(assert (<= Y_1 0))", 5, 13, "undeclared variable Y_1", "declare-const Y_1 Real")
    _raises_at(base + "(assert (or (<= Y_0 0) (>= Y_0 (+ X_0 X_7))))", 5, 39, "undeclared variable X_7")
    text = "(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(declare-const X_0 Real)\n"
    _raises_at(text, 2, 13, "X_0", "before its declaration")


def test_bad_declarations() -> None:
    _raises_at("(declare-const X_0 Int)", 1, 20, "expected sort 'Real'")
    _raises_at("(declare-const Z_0 Real)", 1, 16, "X_<i>")
    _raises_at("(declare-const X_0 Real)\n(declare-const X_0 Real)", 2, 16, "declared twice", "line 1")
    _raises_at("(declare-const X_0 Real)\n(declare-const X_2 Real)", 2, 16, "X_1 is not declared")
    _raises_at("(declare-const X_0)", 1, 1, "declare-const NAME Real")
    _raises_at("(declare-const Y_0 Real)\n(assert (<= Y_0 1))\n", 3, 1, "declares no input")


def test_missing_bounds_name_the_variable() -> None:
    text = _declare(3, 1) + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (<= X_1 1)) (assert (<= Y_0 0))"
    _raises_at(text, 2, 16, "X_1 has no lower bound")
    text = _declare(2, 1) + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 1)) (assert (<= Y_0 0))"
    _raises_at(text, 2, 16, "X_1 has no upper bound")


def test_empty_box_is_a_vnnlib_error() -> None:
    text = _declare(1, 1) + "(assert (>= X_0 1)) (assert (<= X_0 0)) (assert (<= Y_0 0))"
    _raises_at(text, 1, 16, "empty input box", "X_0", "(1.0 > 0.0)")
    with pytest.raises(SpecError):  # a VnnlibError is a SpecError
        parse_vnnlib(text)


def test_wrong_counts_against_the_network() -> None:
    text = _declare(2, 3) + _box([0, 0], [1, 1]) + "(assert (<= Y_0 0))"
    with pytest.raises(VnnlibError, match=r"p\.vnnlib: the property declares 2 inputs but the network has 5"):
        parse_vnnlib(text, source="p.vnnlib", n_inputs=5)
    with pytest.raises(VnnlibError, match=r"declares 3 outputs but the network has 10"):
        parse_vnnlib(text, source="p.vnnlib", n_inputs=2, n_outputs=10)


def test_unsupported_input_constraints() -> None:
    base = _declare(2, 1)
    boxes = "(assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))\n"
    _raises_at(base + boxes, 4, 1, "disjunctive input constraints", "not supported")
    mixed_boxes = "(assert (or (and (>= X_0 0) (<= Y_0 1)) (and (>= X_0 2) (<= Y_0 3))))\n"
    _raises_at(base + mixed_boxes, 4, 1, "disjunctive input constraints")
    _raises_at(base + "(assert (<= (+ X_0 X_1) 1))", 4, 10, "several inputs", "not supported")
    _raises_at(base + "(assert (<= X_0 Y_0))", 4, 10, "mixes inputs (X) and outputs (Y)", "not supported")


def test_contradictory_constant_assert() -> None:
    _raises_at(_declare(1, 1) + _box([0], [1]) + "(assert (<= 2 1))", 5, 1, "never hold")


def test_dnf_blow_up_is_refused() -> None:
    # 14 binary ors conjoined: 2**14 = 16384 clauses > MAX_CLAUSES.
    assert 2**14 > MAX_CLAUSES
    asserts = "".join(f"(assert (or (<= Y_0 {k}) (<= Y_1 {k})))\n" for k in range(14))
    with pytest.raises(VnnlibError, match=rf"more than {MAX_CLAUSES} clauses"):
        parse_vnnlib(_declare(1, 2) + _box([0], [1]) + asserts)
    one_assert = "(assert (and " + " ".join(f"(or (<= Y_0 {k}) (<= Y_1 {k}))" for k in range(14)) + "))"
    with pytest.raises(VnnlibError, match=rf"more than {MAX_CLAUSES} clauses"):
        parse_vnnlib(_declare(1, 2) + _box([0], [1]) + one_assert)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.vnnlib"
    with pytest.raises(VnnlibError, match=re.escape(str(missing))):
        read_vnnlib(missing)
    with pytest.raises(VnnlibError, match="cannot read"):
        read_vnnlib(tmp_path)  # a folder
    binary = tmp_path / "bad.vnnlib"
    binary.write_bytes(b"\xff\xfe(declare")
    with pytest.raises(VnnlibError, match=r"bad\.vnnlib"):
        read_vnnlib(binary)


def test_file_errors_carry_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.vnnlib"
    path.write_text(_declare(1, 1) + "(assert (<= X_0 1)\n")
    with pytest.raises(VnnlibError, match=re.escape(f"{path}:3:1: unbalanced")):
        read_vnnlib(path)


# ----- counterexamples ---------------------------------------------------------------------------------------
def test_write_counterexample_round_trips_floats() -> None:
    x = np.array([[0.1, 1 / 3]], dtype=np.float64)
    y = np.array([-2.5e-10, 7.0], dtype=np.float32)
    text = write_counterexample(x, y)
    assert text == (f"((X_0 0.1)\n (X_1 {1 / 3!r})\n (Y_0 {float(np.float32(-2.5e-10))!r})\n (Y_1 7.0))")
    values = [float(v) for v in re.findall(r"\(\w_\d+ ([^)]+)\)", text)]
    assert values == [0.1, 1 / 3, float(np.float32(-2.5e-10)), 7.0]


def test_write_counterexample_rejects_non_finite() -> None:
    with pytest.raises(VnnlibError, match="Y_1"):
        write_counterexample([0.0], [1.0, float("nan")])
