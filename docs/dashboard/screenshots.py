"""Screenshots of the dashboard's pages on the bundled sample, for the README
(``make dashboard-screenshots``; needs the dev extra's Playwright and Debian's chromium).

The published model of ``models/`` is copied to a temporary folder (with the alias
``production`` the demo experiment names) and served by ``nbo serve`` at the demo clock,
with the demo catalogue and experiment and a temporary store. The sample holds no offer
history, so the script makes some through the API: for 400 customers it asks the offers
route for their email offers and posts them as impressions spread over the fortnight
before the clock (each impression says what the answer said), one in six of them clicked
and one in twenty converted (impressions tagged with the experiment and variant that
answered, so the demo experiment has a report); 100 customers more get a real delivery
of three offers (``record=true``) on the app. Then ``nbo batch`` writes three campaign
files for the Campaigns page: a preview of the at_risk customers, a delivered (``--record``)
winback to 200 customers, and the same winback delivered again at once (every customer
frequency-capped: delivered, nothing recorded). Then Chromium takes each page, 1280 px
wide, saved as a palette PNG (small) in ``docs/dashboard/``.

    python docs/dashboard/screenshots.py --models-dir models
    python docs/dashboard/screenshots.py --models-dir models --only campaigns
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import yaml
from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.servers import running_server  # noqa: E402

OUT = Path(__file__).resolve().parent
CLOCK = "2011-12-09T13:00:00Z"  # the demo clock (Makefile: DEMO_CLOCK)
CUSTOMER = "12347"
PAGES = {
    "overview": "/dashboard",
    "offers": "/dashboard/offers?days=14",
    "customer": f"/dashboard/customer?customer_id={CUSTOMER}&k=5",
    "experiment": "/dashboard/experiments/personalization-uplift",
    "models": "/dashboard/models",
    "campaigns": "/dashboard/campaigns",
}


def customers(models_dir: Path) -> list[str]:
    """The model's customers (its id map), in order."""
    version = (models_dir / "CURRENT").read_text(encoding="utf-8").strip()
    ids = np.load(models_dir / version / "customer_ids.npy", allow_pickle=False)
    return [str(c) for c in ids]


def experiment_starts() -> dict[str, datetime]:
    """When each demo experiment starts: an impression before it is no exposure, and
    ``POST /v1/events`` refuses one tagged with it."""
    with (ROOT / "data" / "experiments.yaml").open(encoding="utf-8") as file:
        experiments = yaml.safe_load(file)["experiments"]
    return {
        e["name"]: datetime.fromisoformat(str(e["start"]).replace("Z", "+00:00"))
        for e in experiments
    }


def make_history(api: httpx.Client, ids: list[str]) -> None:
    """A fortnight of deliveries and answers (see the module docstring)."""
    rng = random.Random(7)
    now = datetime.fromisoformat(CLOCK.replace("Z", "+00:00"))
    starts = experiment_starts()
    shown, events = rng.sample(ids, 500), []
    for n, customer in enumerate(shown[:400]):
        answer = api.get(f"/v1/customers/{customer}/offers", params={"k": 3}).json()
        when = now - timedelta(days=rng.randrange(14), hours=3 + rng.randrange(12))
        for offer in answer.get("offers", []):
            item = offer["item_id"] or offer["offer_id"]
            base = {"customer_id": customer, "item_id": item, "channel": "email"}
            stamp = when.isoformat().replace("+00:00", "Z")
            events.append(
                {
                    **base,
                    "event_id": f"shot-i-{n}-{offer['rank']}",
                    "type": "offer_impression",
                    "timestamp": stamp,
                    "request_id": f"shot-{n}",
                    "kind": offer["kind"],
                    "source": offer["reason"]["source"],
                    "stage": answer["stage"],
                    # Tagged only from the experiment's start (refused before it: the
                    # answer of today names it, a send of last week was in none).
                    **(
                        {k: answer[k] for k in ("experiment", "variant")}
                        if answer.get("experiment") and when >= starts[answer["experiment"]]
                        else {}
                    ),
                }
            )
            later = (when + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
            draw = rng.random()
            if draw < 1 / 6:
                events.append(
                    {
                        **base,
                        "event_id": f"shot-k-{n}-{offer['rank']}",
                        "type": "offer_click",
                        "timestamp": later,
                    }
                )
            if draw < 1 / 20:
                events.append(
                    {
                        **base,
                        "event_id": f"shot-v-{n}-{offer['rank']}",
                        "type": "offer_conversion",
                        "timestamp": later,
                        "revenue": round(rng.uniform(5, 60), 2),
                    }
                )
    for start in range(0, len(events), 500):
        answer = api.post("/v1/events", json={"events": events[start : start + 500]})
        assert not answer.json()["rejected"], answer.json()["rejected"][:3]
    for customer in shown[400:]:
        api.get(
            f"/v1/customers/{customer}/offers",
            params={"k": 3, "channel": "app", "record": "true"},
        )


def make_campaigns(folder: Path, models: Path, settings: dict[str, str], ids: list[str]) -> None:
    """Three campaign files (see the module docstring), written by ``nbo batch`` into
    ``folder/campaigns`` and registered in the server's store."""
    out = folder / "campaigns"
    out.mkdir()
    winback = out / "winback-ids.txt"
    winback.write_text("\n".join(random.Random(11).sample(ids, 200)) + "\n", encoding="utf-8")
    env = {**os.environ, **settings, "NBO_STORE_URL": f"sqlite:///{folder / 'store.db'}"}
    for customers, name, extra in (
        ("stage=at_risk", "at-risk-preview.csv", []),
        (str(winback), "winback.parquet", ["--record"]),
        (str(winback), "winback-again.parquet", ["--record"]),
    ):
        command = [sys.executable, "-m", "nbo.cli", "batch", "--models-dir", str(models)]
        command += ["--customers", customers, "--k", "3", "--out", str(out / name), *extra]
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def shoot(base: str, chromium: str, only: list[str] | None = None) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for name, path in PAGES.items():
            if only and name not in only:
                continue
            errors: list[str] = []
            page.on("console", lambda m, e=errors: m.type == "error" and e.append(m.text))
            answer = page.goto(base + path)
            assert answer is not None and answer.status == 200, (path, answer)
            assert not errors, (path, errors)
            target = OUT / f"{name}.png"
            page.screenshot(path=str(target), full_page=True)
            with Image.open(target) as image:
                image = image.convert("RGB")
                if image.height > 2400:  # the top of a long page tells the story
                    image = image.crop((0, 0, image.width, 2400))
                image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
                    target, optimize=True
                )
            print(f"{target.relative_to(ROOT)}  {target.stat().st_size // 1024} KiB")
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--chromium", default=os.environ.get("NBO_TEST_CHROMIUM") or "chromium")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(PAGES),
        help="shoot this page only (repeatable; default: every page)",
    )
    args = parser.parse_args()
    chromium = shutil.which(args.chromium)
    if chromium is None:
        print(f"no {args.chromium}: apt-get install chromium (Debian's package)", file=sys.stderr)
        return 1
    version = (args.models_dir / "CURRENT").read_text(encoding="utf-8").strip()
    with tempfile.TemporaryDirectory(prefix="nbo-shots-") as tmp:
        folder = Path(tmp)
        models = folder / "models"
        models.mkdir()
        shutil.copytree(args.models_dir / version, models / version)
        (models / "CURRENT").write_text(version + "\n", encoding="utf-8")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nbo.cli",
                "models",
                "--models-dir",
                str(models),
                "--alias",
                "production",
                version,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        settings = {
            "NBO_CLOCK": CLOCK,
            "NBO_CATALOG": str(ROOT / "data" / "catalog.yaml"),
            "NBO_EXPERIMENTS": str(ROOT / "data" / "experiments.yaml"),
        }
        with running_server(models, folder / "store.db", folder / "serve.log", settings) as server:
            with httpx.Client(base_url=server.base, timeout=60) as api:
                make_history(api, customers(models))
            make_campaigns(folder, models, settings, customers(models))
            shoot(server.base, chromium, args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
