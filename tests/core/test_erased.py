"""The erased list's membership test (``nbo.core.erased``): keyed hashes answer which
ids are on it, under its key only."""

from __future__ import annotations

from nbo.core.erased import ErasedList, erased_among, id_hash

KEY = b"k" * 32


def test_the_list_answers_which_ids_it_holds_without_holding_them() -> None:
    erased = ErasedList.of_ids(KEY, ["a", "é", "\udcff"])  # any str, as log pseudonyms
    assert len(erased) == 3 and all(len(h) == 32 for h in erased.hashes)
    assert erased.among(["a", "b", "a", "é", "\udcff", "A"]) == {"a", "é", "\udcff"}
    assert "a" in erased and "b" not in erased and 1 not in erased
    assert id_hash(KEY, "a") in erased.hashes and b"a" not in b"".join(erased.hashes)
    # Under another key the same ids are other hashes: nothing is on that list.
    assert ErasedList(b"x" * 32, erased.hashes).among(["a", "é"]) == set()
    assert ErasedList(KEY, ()).among(["a"]) == set()


def test_since_is_what_was_erased_in_between() -> None:
    before = ErasedList.of_ids(KEY, ["a"])
    after = ErasedList.of_ids(KEY, ["a", "b", "c"])
    assert after.since(before).among(["a", "b", "c", "d"]) == {"b", "c"}
    assert not before.since(after)


def test_ids_given_in_clear_are_tested_the_same_way() -> None:
    assert erased_among(["a", "c"], ["a", "b"]) == {"a"}
    assert erased_among(ErasedList.of_ids(KEY, ["a", "c"]), ["a", "b"]) == {"a"}
