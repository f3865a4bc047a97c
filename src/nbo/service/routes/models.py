"""The published model versions, their aliases and which ones are serving."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request

from nbo.core.apikeys import Role
from nbo.core.errors import ArtifactError
from nbo.models.artifacts import list_versions
from nbo.models.registry import aliases_with_current
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import ServingModelsDep, SettingsDep
from nbo.service.query import QueryCheckedRoute

log = logging.getLogger(__name__)

router = APIRouter(
    route_class=QueryCheckedRoute,
    prefix="/v1",
    tags=["model"],
    dependencies=[requires(Role.read)],
    responses=AUTH_RESPONSES,
)


@router.get("/models")
def get_models(request: Request, settings: SettingsDep, models: ServingModelsDep) -> dict[str, Any]:
    """Every published version (newest first) with its aliases; ``serving`` marks the
    versions loaded (the current one and those experiments use). An ALIASES.json that
    cannot be read (not JSON, not an object of names) lists no alias, and says why in
    ``aliases_problem``: the versions and what serves are still worth seeing (it was a
    500)."""
    problem = None
    try:
        aliases = aliases_with_current(settings.models_dir)
    except ArtifactError as exc:
        problem = str(exc)
        log.warning("model listing without aliases: %s", problem)
        aliases = {}
    loaded = {m.version: m for m in models.models()}
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(version, []).append(alias)
    return {
        "current": models.current.version,
        "aliases": aliases,
        "aliases_problem": problem,
        "models": [
            {
                "version": version,
                "aliases": by_version.get(version, []),
                "current": version == models.current.version,
                "serving": version in loaded,
            }
            for version in reversed(list_versions(settings.models_dir))
        ],
    }
