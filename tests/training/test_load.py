"""The trainer's load step: erased customers (the store's list), and those whose consent
withdraws personalization, left out of training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import GROUP_ITEMS, small_training_config

from nbo.cli import main
from nbo.core.errors import PurchaseDataError
from nbo.data.mapping import load_mapping
from nbo.store.sqlite import SQLiteStore
from training.lifecycle import CUSTOMERS_FILE, read_customers
from training.load import DROP_ERASED, DROP_WITHDRAWN
from training.pipeline import train


def _config(tmp_path: Path) -> Path:
    config = small_training_config().als
    path = tmp_path / "training.toml"
    path.write_text(
        "[als]\n"
        f"factors = {config.factors}\niterations = {config.iterations}\n"
        f"regularization = {config.regularization}\n"
        f"refit_iterations = {config.refit_iterations}\n"
    )
    return path


def _customers(models: Path) -> list[str]:
    version = (models / "CURRENT").read_text().strip()
    return np.load(models / version / "customer_ids.npy").tolist()


def test_training_leaves_out_erased_customers(
    tmp_path: Path,
    planted_csv: Path,
    isolated_store: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = tmp_path / "models"
    args = ["train", "--data", str(planted_csv), "--models-dir", str(models)]
    args += ["--config", str(_config(tmp_path))]
    # No store yet (NBO_STORE_URL names a file that does not exist): nothing erased, and
    # the trainer does not create one.
    assert main(args) == 0
    assert "a00" in _customers(models)
    assert not isolated_store.exists()

    store = SQLiteStore(isolated_store)
    store.erase("a00")
    store.close()
    capsys.readouterr()
    assert main(args) == 0  # the store from NBO_STORE_URL

    assert "a00" not in _customers(models)
    assert len(_customers(models)) == 59
    version = (models / "CURRENT").read_text().strip()
    data = json.loads((models / version / "manifest.json").read_text())["data"]
    assert data["dropped"][DROP_ERASED] == 7  # every row of a00 in the file
    assert data["erased_customers"] == 1
    assert data["rows_kept"] == 420 - 7 and data["customers"] == 59
    assert f"{DROP_ERASED}: 7" in capsys.readouterr().out

    # --store-url names another store: its (empty) erased list applies.
    other = tmp_path / "other.db"
    assert main([*args, "--store-url", f"sqlite:///{other}"]) == 0
    assert "a00" in _customers(models) and not other.exists()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bad_store_is_said_of_what_the_user_gave(
    command: str,
    tmp_path: Path,
    planted_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--store-url given: its error names the flag, not NBO_STORE_URL (the user may never
    have set that); without the flag the setting it came from is named."""
    not_a_database = tmp_path / "purchases.db"
    not_a_database.write_text("customer_id,item_id\n", encoding="utf-8")
    args = [
        command,
        "--data",
        str(planted_csv),
        "--out" if command == "evaluate" else "--models-dir",
    ]
    args += [str(tmp_path / "out"), "--config", str(_config(tmp_path))]

    assert main([*args, "--store-url", "postgres-on-db1"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"nbo {command}: error: --store-url: unsupported store 'postgres-on-db1' "
        "(use sqlite:///PATH or postgresql://...)\n"
    )
    assert main([*args, "--store-url", f"sqlite:///{not_a_database}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nbo {command}: error: --store-url: ") and err.count("\n") == 1
    assert f"{not_a_database} (file is not a database)" in err and "NBO_STORE_URL" not in err

    # A folder that does not exist: a wrong path, not a store with nothing erased.
    missing = tmp_path / "nowhere" / "nbo.db"
    assert main([*args, "--store-url", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nbo {command}: error: --store-url: no folder {missing.parent} ")

    monkeypatch.setenv("NBO_STORE_URL", f"sqlite:///{not_a_database}")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"nbo {command}: error: setting NBO_STORE_URL: ")
        and "--store-url" not in err
    )
    assert not (tmp_path / "out").exists()


def test_training_with_every_customer_erased_is_a_data_error(
    tmp_path: Path, planted_csv: Path
) -> None:
    everyone = [f"{g}{c:02d}" for g in GROUP_ITEMS for c in range(30)]
    with pytest.raises(PurchaseDataError, match=DROP_ERASED):
        train(
            planted_csv,
            load_mapping("canonical"),
            tmp_path / "models",
            small_training_config(),
            erased=everyone,
        )


def test_the_blanks_filled_are_counted_in_the_summary_the_report_and_the_manifest(
    tmp_path: Path, planted_purchases: pd.DataFrame
) -> None:
    """Blank quantities and prices were filled without a word in the cleaning report; they
    are counted like its drops, over the rows trained on (an erased customer's blanks are
    not)."""
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from nbo.data.purchases import FILL_PRICE, FILL_QUANTITY
    from training.cli import print_summary
    from training.evaluate_cli import evaluation_document
    from training.report import evaluation_html

    purchases = planted_purchases.astype({"quantity": "object", "price": "object"})
    a00 = purchases.index[purchases["customer_id"] == "a00"]
    a01 = purchases.index[purchases["customer_id"] == "a01"]
    purchases.loc[a00, ["quantity", "price"]] = None  # erased: not counted
    purchases.loc[a01[:3], "quantity"] = None
    purchases.loc[a01[:2], "price"] = None
    data = tmp_path / "blanks.csv"
    purchases.to_csv(data, index=False)

    result = train(
        data,
        load_mapping("canonical"),
        tmp_path / "models",
        small_training_config(),
        erased=["a00"],
    )

    filled = {FILL_QUANTITY: 3, FILL_PRICE: 2}
    assert result.cleaning.filled == filled
    assert result.manifest["data"]["filled"] == filled
    out = io.StringIO()
    print_summary(Console(file=out, width=300, color_system=None), result)
    assert f"(erased customer: 7; filled: {FILL_QUANTITY}: 3, {FILL_PRICE}: 2)" in out.getvalue()
    page = evaluation_html(evaluation_document(result, datetime(2026, 7, 1, tzinfo=UTC)), "t")
    assert "<caption>rows kept with a blank filled</caption>" in page
    assert f"<td>{FILL_QUANTITY}</td><td>3</td>" in page


def test_training_leaves_out_customers_who_withdrew_personalization(
    tmp_path: Path,
    planted_csv: Path,
    isolated_store: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A consent record withdrawing personalization keeps the customer out of what is
    trained (profile, factors, shortlist, history), as an erasure does; consenting again
    brings them back at the next training."""
    models = tmp_path / "models"
    args = ["train", "--data", str(planted_csv), "--models-dir", str(models)]
    args += ["--config", str(_config(tmp_path)), "--force"]
    store = SQLiteStore(isolated_store)
    store.set_consent("a00", False, {})
    store.set_consent("a01", True, {"email": False})  # a channel only: still profiled
    store.close()
    capsys.readouterr()

    assert main(args) == 0
    assert "a00" not in _customers(models) and "a01" in _customers(models)
    version = (models / "CURRENT").read_text().strip()
    customers = read_customers(str(models / version / CUSTOMERS_FILE))
    assert "a00" not in set(customers["customer_id"])
    data = json.loads((models / version / "manifest.json").read_text())["data"]
    assert data["dropped"][DROP_WITHDRAWN] == 7  # every row of a00 in the file
    assert data["withdrawn_customers"] == 1
    assert data["erased_customers"] == 0
    assert data["rows_kept"] == 420 - 7 and data["customers"] == 59
    out = capsys.readouterr().out
    assert f"{DROP_WITHDRAWN}: 7" in out
    assert "personalization withdrawn" in out

    store = SQLiteStore(isolated_store)
    store.set_consent("a00", True, {})
    store.close()
    assert main(args) == 0
    assert "a00" in _customers(models)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_the_store_read_is_said_and_a_missing_one_warned_of(
    command: str,
    tmp_path: Path,
    planted_csv: Path,
    isolated_store: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run from another folder, or a wrong path, used to apply no erasure without a
    word: the command says which store it read and how many ids it left out, and warns
    in one line when there was no store there."""
    args = [command, "--data", str(planted_csv), "--config", str(_config(tmp_path))]
    args += ["--out" if command == "evaluate" else "--models-dir", str(tmp_path / "out")]
    if command == "train":
        args.append("--force")
    assert main(args) == 0  # no store file at NBO_STORE_URL
    out = capsys.readouterr().out
    warning = [line for line in out.splitlines() if "no store at" in line]
    assert warning == [
        f"warning: no store at {isolated_store.resolve()}: no erasures or consent applied "
        "(erased customers and those who withdrew personalization are trained on); point "
        "NBO_STORE_URL at the service's store, or a copy of its file"
    ]
    assert not isolated_store.exists()

    store = SQLiteStore(isolated_store)
    store.erase("a00")
    store.set_consent("a01", False, {})
    store.set_consent("a02", False, {})
    store.close()
    assert main([*args, "--store-url", f"sqlite:///{isolated_store}"]) == 0
    out = capsys.readouterr().out
    assert (
        f"store: erasures and consent read from SQLite {isolated_store.resolve()}: "
        "1 erased customer and 2 with personalization withdrawn left out\n"
    ) in out
    assert "no store at" not in out
