"""The published model versions, their aliases and which ones are serving."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request

from nbo.core.apikeys import Role
from nbo.core.errors import ArtifactError
from nbo.models.artifacts import current_or_problem, list_versions
from nbo.models.registry import aliases_with_current
from nbo.service.auth import AUTH_RESPONSES, requires
from nbo.service.deps import MaybeServingModelsDep, SettingsDep
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
def get_models(
    request: Request, settings: SettingsDep, models: MaybeServingModelsDep
) -> dict[str, Any]:
    """Every published version (newest first) with its aliases. Two things that can
    differ are named apart: ``serving`` is the version this worker answers with (outside
    experiments; a reload to a version, or NBO_MODEL_VERSION, may make it other than
    CURRENT), ``current`` the version ``models/CURRENT`` names (what a restart, SIGHUP or
    a reload without a version serves; None when there is no CURRENT, or it names no
    version: ``current_problem`` says why). Per version, ``serving`` marks those loaded
    here (that one and those experiments use) and ``current`` the one CURRENT names. An
    ALIASES.json that cannot be read (not JSON, not an object of names) lists no alias,
    and says why in ``aliases_problem``: the versions and what serves are still shown.
    \f
    ``current`` used to name the serving version, contradicting the alias ``current``
    listed beside it after such a reload; in every other case the value is the same, so
    it kept its name for the meaning the alias, the file and ``nbo models --current``
    give it. An unreadable ALIASES.json was a 500. With no model loaded (a service
    started with NBO_REQUIRE_MODEL=false on an empty folder, or on a CURRENT it refused)
    the listing still answers, ``serving`` None: it reads only the folder, and it is what
    an operator picking a version to roll back to needs most then (it was a 503)."""
    problem = None
    try:
        aliases = aliases_with_current(settings.models_dir)
    except ArtifactError as exc:
        problem = str(exc)
        log.warning("model listing without aliases: %s", problem)
        aliases = {}
    loaded = {} if models is None else {m.version: m for m in models.models()}
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(version, []).append(alias)
    # Empty, or naming no version: said in current_problem, not a 500.
    current, current_problem = current_or_problem(settings.models_dir)
    refused = request.app.state.reloader.refused
    if current_problem is None and refused is not None and refused.version == current:
        # It loaded at no reload of this worker's: a restart would fail on it.
        current_problem = f"this worker refused it ({refused.problem}); a restart would fail"
    return {
        "serving": None if models is None else models.current.version,
        "current": current,
        "current_problem": current_problem,
        "aliases": aliases,
        "aliases_problem": problem,
        "models": [
            {
                "version": version,
                "aliases": by_version.get(version, []),
                "current": version == current,
                "serving": version in loaded,
            }
            for version in reversed(list_versions(settings.models_dir))
        ],
    }
