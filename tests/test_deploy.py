"""The deployment files: every folder deploy/compose.yaml mounts for the container to
write to is one the image makes and gives its user."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _owned_by_the_user() -> set[str]:
    """The folders the Dockerfile makes and chowns to its user (``nbo``)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    made = {p for m in re.finditer(r"mkdir -p ([^&\n]+)", text) for p in m.group(1).split()}
    owned = {p for m in re.finditer(r"chown nbo ([^&\n]+)", text) for p in m.group(1).split()}
    return made & owned


def test_every_writable_volume_is_the_container_users() -> None:
    """A new named volume takes the owner of the folder it is mounted on: the
    campaigns volume at /campaigns was root's (the image did not make it), and the
    documented ``nbo batch --out /campaigns/week.parquet --record`` could not write."""
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    writable = {
        mount.split(":")[1]
        for service in compose["services"].values()
        if service.get("image") == "nbo"
        for mount in service.get("volumes", [])
        if not mount.endswith(":ro")
    }
    assert "/campaigns" in writable
    assert writable <= _owned_by_the_user()
    assert {"/models", "/data"} <= _owned_by_the_user()
