"""Predict bodies -> model inputs: the common body (rows of numbers), from SIMDJSON_MIN_BYTES up, goes
straight into a float64 matrix, bit for bit what the general path (orjson, then numpy) builds; every
other body gets the general path's answer. Bodies here are padded to that size, so both paths run."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import orjson
import pytest
from bigpickle.config import Settings
from bigpickle.errors import BadRequestError, LimitExceededError
from bigpickle.serving.validation import SIMDJSON_MIN_BYTES, RequestLimits, RequestValidator, parse_predict_request
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression

# Bounded and reproducible in CI: the same examples every run, no example database left in the tree.
EXAMPLES = settings(deadline=None, derandomize=True, database=None, max_examples=300)


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(RequestLimits.from_settings(Settings.from_env({})))


def big(body: str | bytes) -> bytes:
    """The same JSON, padded with trailing whitespace to the size where the simdjson path is tried."""
    data = body.encode() if isinstance(body, str) else body
    return data.ljust(SIMDJSON_MIN_BYTES, b" ")


def general_path_matrix(body: bytes) -> np.ndarray:
    """What the general path makes of a body of numeric rows: JSON values, then a float64 conversion."""
    return np.array(orjson.loads(body)["instances"], dtype=np.float64)


def model_taking(width: int) -> LinearRegression:
    """A real fitted model that takes rows of `width` numbers."""
    return LinearRegression().fit(np.eye(width), np.arange(width))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def spelled(value: float | int, style: int) -> str:
    """One of the ways a JSON number can be written."""
    if isinstance(value, int):
        return str(value)
    return (repr(value), f"{value:.17e}", f"{value:.17E}")[style]


whitespace = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])
cells = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-300, max_value=1e-300),  # subnormals and signed zeros
    st.integers(-(2**63), 2**64 - 1),  # simdjson's int64 and uint64 ranges
)


ENVELOPES = ['{{"instances":{gap}[{rows}]}}', '{{ "probabilities": false, "instances": [{rows}]{gap}}}']


@st.composite
def numeric_bodies(draw: st.DrawFn) -> bytes:
    width = draw(st.integers(1, 6))
    rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width), min_size=1, max_size=8))
    style, gap = draw(st.integers(0, 2)), draw(whitespace)
    text = f",{gap}".join("[" + f",{gap}".join(spelled(v, style) for v in row) + "]" for row in rows)
    envelope = draw(st.sampled_from(ENVELOPES))
    return envelope.format(gap=gap, rows=text).encode()


@EXAMPLES
@given(body=numeric_bodies())
def test_numeric_rows_become_the_matrix_the_general_path_builds_bit_for_bit(
    validator: RequestValidator, body: bytes
) -> None:
    parsed = validator.parse(big(body))

    assert isinstance(parsed.instances, np.ndarray)
    assert same_bits(parsed.instances, general_path_matrix(body)), body


def test_the_common_body_never_becomes_a_python_object_per_cell(validator: RequestValidator) -> None:
    # given a 1000-row body of 20 floats: 20,000 floats and 1,000 lists as Python objects take ~800 KB
    rows = np.random.default_rng(0).normal(size=(1000, 20))
    body = json.dumps({"instances": rows.tolist()}).encode()

    # when it is parsed
    tracemalloc.start()
    try:
        parsed = validator.parse(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # then the Python heap held at most the matrix itself (160 KB) and small change
    assert same_bits(parsed.instances, rows)
    assert peak < rows.nbytes + 64 * 1024, f"parsing peaked at {peak} bytes of Python objects"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # integers beyond 64 bits round like any other
        ('{"instances": [[18446744073709551616, -9223372036854775809]]}', [[2.0**64, -(2.0**63)]]),
        # booleans and null, as the schema maps them
        ('{"instances": [[true, false, null]]}', [[1.0, 0.0, math.nan]]),
        ('{"instances": [[-0, -0.0, 1E+2, 5e-324]]}', [[0.0, -0.0, 100.0, 5e-324]]),
    ],
)
def test_bodies_off_the_fast_path_give_the_general_paths_inputs(
    validator: RequestValidator, body: str, expected: list[list[float]]
) -> None:
    inputs = parse_predict_request(validator.parse(big(body)), model_taking(len(expected[0]))).inputs

    assert same_bits(inputs, np.array(expected))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        # a one-element list where a number belongs flattens to the right count of numbers: still refused
        ('{"instances": [[[5], 1], [2, 3]]}', "instances[0][0] must be number or boolean or null"),
        # a repeated key is refused on both paths (JSON parsers would let the last one win)
        ('{"instances": [[1, 2]], "instances": [[3, 4]]}', "repeats the key 'instances'"),
        ('{"instances": [[1, 2]], "instances": 5}', "repeats the key 'instances'"),
        ('{"instances": [[1, 2]], "probabilities": true, "probabilities": false}', "repeats the key 'probabilities'"),
        ('{"instances": [[1, 2]], "instan\\u0063es": [[3, 4]]}', "repeats the key 'instances'"),
        ('{"instances": [[1, 2]], "probabilities": 1}', '"probabilities" must be true or false'),
        ('{"instances": [[1, 2]], "signature": 1}', "must not contain {'signature'}"),
        ('{"instances": [["1", 2]]}', "instances[0][0] must be number or boolean or null"),
        ('{"instances": []}', '"instances" must be a non-empty list of rows'),
        ('{"instances": [[1, 2]]} [', "not valid JSON"),
        ('{"instances": [[1e999, 1]]}', "not valid JSON"),
        ("[[1, 2]]", 'must be a JSON object with an "instances" list'),
    ],
)
def test_bodies_the_schema_refuses_are_400_saying_what_is_wrong(
    validator: RequestValidator, body: str, says: str
) -> None:
    with pytest.raises(BadRequestError) as refused:
        validator.parse(big(body))

    assert says in refused.value.message


def test_ragged_rows_reach_no_model(validator: RequestValidator) -> None:
    # given rows of lengths 2, 1 and 3: as many numbers as three rows of two
    parsed = validator.parse(big('{"instances": [[1, 2], [3], [4, 5, 6]]}'))

    with pytest.raises(BadRequestError, match="every instance must be a list of the same length"):
        parse_predict_request(parsed, model_taking(3))


@pytest.mark.parametrize(
    ("rows", "code"),
    [([[1.0, 2.0]] * 4, "too_many_instances"), ([[1.0] * 4], "row_too_wide")],
)
def test_numeric_rows_over_a_limit_are_413(rows: list[list[float]], code: str) -> None:
    validator = RequestValidator(RequestLimits(max_body_bytes=1 << 20, max_instances=3, max_row_width=3))

    with pytest.raises(LimitExceededError) as refused:
        validator.parse(big(json.dumps({"instances": rows})))

    assert refused.value.code == code


def test_probabilities_are_read_on_the_fast_path(validator: RequestValidator) -> None:
    parsed = validator.parse(big('{"instances": [[1.5, 2]], "probabilities": true}'))

    assert parsed.probabilities is True
    assert same_bits(parsed.instances, np.array([[1.5, 2.0]]))
