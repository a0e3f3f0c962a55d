import numpy as np
import pytest

from recsys.data.vocabulary import Vocabulary
from recsys.errors import ModelFormatError


def test_string_ids_round_trip_and_unknown_is_minus_one():
    vocab = Vocabulary(["b", "a", "c"])
    assert vocab.index(["a", "c", "zzz"]).tolist() == [1, 2, -1]
    assert vocab.index("b") == 0
    assert vocab.ids[[2, 0]].tolist() == ["c", "b"]


def test_integer_ids_accept_text_and_text_ids_accept_integers():
    ints = Vocabulary(np.array([10, -3, 2**62], dtype=np.int64))
    assert ints.is_integer
    assert ints.index(["-3", "10", str(2**62), "007", "x"]).tolist() == [1, 0, 2, -1, -1]
    text = Vocabulary(["7", "8"])
    assert text.index([8, 7, 9]).tolist() == [1, 0, -1]


def test_from_strings_keeps_non_canonical_integers_as_text():
    assert Vocabulary.from_strings(np.array(["1", "2", "30"], dtype=object)).is_integer
    # "007" would not round-trip through int: the ids stay text, exactly as written.
    v = Vocabulary.from_strings(np.array(["007", "8"], dtype=object))
    assert not v.is_integer and v.ids.tolist() == ["007", "8"]
    # Beyond int64: text.
    assert not Vocabulary.from_strings(np.array([str(2**64), "1"], dtype=object)).is_integer


@pytest.mark.parametrize("ids", [["α", "β", "日本", "", "a,b"], np.array([5, -1, 9], dtype=np.int64)])
def test_persistence_without_pickle(ids):
    vocab = Vocabulary(ids)
    arrays = vocab.to_arrays("users")
    assert all(not a.dtype.hasobject for a in arrays.values())
    assert Vocabulary.from_arrays(arrays, "users") == vocab


def test_corrupt_tables_are_refused():
    arrays = Vocabulary(["a", "b"]).to_arrays("items")
    arrays["items_offsets"] = arrays["items_offsets"][::-1].copy()
    with pytest.raises(ModelFormatError):
        Vocabulary.from_arrays(arrays, "items")
    with pytest.raises(ModelFormatError):
        Vocabulary.from_arrays({"items_int": np.array([1, 1])}, "items")
