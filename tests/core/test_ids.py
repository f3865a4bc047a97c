"""``case_slips``: the one case-slip lookup behind ``nbo batch``'s customer list and the
catalogue's items (their messages are tested with them)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nbo.core.ids import case_slips


def test_each_slip_names_the_id_meant_folding_case_as_casefold_does() -> None:
    known = np.array(["M-000008", "straße", "85123A", "Ab", "aB", "12347"])
    slips = case_slips(["m-000008", "STRASSE", "85123a", "AB", "12347.0", "nobody"], known)
    # 'STRASSE'.lower() is 'strasse' and 'straße'.lower() 'straße': lower would miss it.
    # Where two known ids fold alike, the first is named.
    assert slips == {"m-000008": "M-000008", "STRASSE": "straße", "85123a": "85123A", "AB": "Ab"}
    assert all(type(meant) is str for meant in slips.values())  # not numpy's str_
    assert case_slips(["straße", "Strasse"], ["STRASSE"]) == {
        "straße": "STRASSE",
        "Strasse": "STRASSE",
    }


def test_ids_without_a_case_to_slip_do_not_read_the_known_ids() -> None:
    def untouched() -> Iterator[str]:
        raise AssertionError("the known ids were read")
        yield ""  # pragma: no cover

    assert case_slips(["12347", "0042-7", ""], untouched()) == {}
    assert case_slips([], untouched()) == {}
