"""``CaseIndex``: the one case-slip lookup behind ``nbo batch``'s customer list, the
catalogue's items and the posted purchases' items (their messages are tested with them)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nbo.core.ids import CaseIndex


def test_each_slip_names_the_id_meant_folding_case_as_casefold_does() -> None:
    known = np.array(["M-000008", "straße", "85123A", "Ab", "aB", "12347"])
    index = CaseIndex(known)
    slips = index.slips(["m-000008", "STRASSE", "85123a", "AB", "12347.0", "nobody"])
    # 'STRASSE'.lower() is 'strasse' and 'straße'.lower() 'straße': lower would miss it.
    # Where two known ids fold alike, the first is named.
    assert slips == {"m-000008": "M-000008", "STRASSE": "straße", "85123a": "85123A", "AB": "Ab"}
    assert all(type(meant) is str for meant in slips.values())  # not numpy's str_
    assert CaseIndex(["STRASSE"]).slips(["straße", "Strasse"]) == {
        "straße": "STRASSE",
        "Strasse": "STRASSE",
    }
    assert index.meant("85123A") is None  # an id held as written is no slip
    assert index.meant("12347") is None and index.meant("") is None


def test_the_known_ids_are_read_once_whatever_is_looked_up() -> None:
    passes = []

    def known() -> Iterator[str]:
        passes.append(1)
        yield from ["M-1", "Ab"]

    index = CaseIndex(known())
    for batch in (["m-1"], ["ab", "x"], [f"new-{n}" for n in range(100)]):
        index.slips(batch)
    assert index.slips(["AB"]) == {"AB": "Ab"}
    assert passes == [1]
