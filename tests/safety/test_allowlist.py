"""The allowlist's two kinds of globals: reconstructors the unpickler may call, and functions a model may
only reference (called at predict time by scikit-learn, never while unpickling)."""

from __future__ import annotations

import pytest
from bigpickle.safety.allowlist import BASE, RECONSTRUCTORS, REFERENCE_ONLY, Allowlist


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "dtype"),
        ("copyreg", "__newobj__"),
        ("copy_reg", "_reconstructor"),  # python 2 spelling of the same helper
        ("_codecs", "encode"),
        ("sklearn.tree._tree", "Tree"),
        ("sklearn.linear_model._logistic", "LogisticRegression"),
        ("scipy.sparse._csr", "csr_matrix"),
    ],
)
def test_a_reconstructor_may_be_called(module: str, name: str) -> None:
    assert Allowlist().may_call(module, name)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("numpy", "exp"),
        ("numpy", "absolute"),
        ("numpy", "ndarray"),
        ("numpy", "float64"),
        ("numpy.dtypes", "Float64DType"),
    ],
)
def test_a_function_a_model_keeps_may_be_referenced_but_never_called(module: str, name: str) -> None:
    allowlist = Allowlist()

    assert allowlist.allows(module, name)
    assert not allowlist.may_call(module, name)


def test_what_is_not_allowlisted_may_not_be_called_either() -> None:
    allowlist = Allowlist()

    assert not allowlist.may_call("os", "system")
    assert not allowlist.may_call("joblib.numpy_pickle", "NumpyArrayWrapper")
    assert allowlist.for_format("joblib").may_call("joblib.numpy_pickle", "NumpyArrayWrapper")


def test_an_operator_extra_is_a_reconstructor() -> None:
    allowlist = Allowlist(extra=frozenset({("mypkg.models", "MyEstimator")}))

    assert allowlist.may_call("mypkg.models", "MyEstimator")


def test_the_two_kinds_partition_the_allowlist() -> None:
    assert not RECONSTRUCTORS & REFERENCE_ONLY
    assert RECONSTRUCTORS | REFERENCE_ONLY == BASE
