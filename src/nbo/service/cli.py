"""``nbo serve``: check where it may listen and the model, then run uvicorn on the app."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from nbo.core.apikeys import check_bind
from nbo.settings import load_settings


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve offers over HTTP",
        description="Serve the current model (models/CURRENT) over HTTP. Settings come from "
        "NBO_* environment variables; these flags override them.",
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="NBO_MODELS_DIR (models)")
    parser.add_argument(
        "--host", default=None, help="NBO_HOST (127.0.0.1); other than loopback needs API keys"
    )
    parser.add_argument("--port", type=int, default=None, help="NBO_PORT (8000)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from threadpoolctl import threadpool_limits

    from nbo.models.served import load_serving_model
    from nbo.service.app import create_app
    from nbo.service.logs import configure_logging

    settings = load_settings(models_dir=args.models_dir, host=args.host, port=args.port)
    configure_logging(settings.log_level, settings.log_format)
    # Secure by default: without API keys, loopback only. Checked first: it costs nothing.
    bind = check_bind(settings.host, settings.api_keys, settings.allow_unauthenticated)
    logging.getLogger("nbo.service").log(bind.level, bind.message)
    # One BLAS thread for the whole process, before any model object exists.
    with threadpool_limits(limits=1, user_api="blas"):
        if settings.require_model:
            # Refuse a missing, corrupt or incompatible model with one line, before binding.
            model = load_serving_model(settings.models_dir, settings.model_version)
            logging.getLogger("nbo").info("model %s verified", model.version)
            del model
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            # nbo's handler formats uvicorn's own lines (they reach the root logger), and
            # the request middleware writes the access log: uvicorn's would repeat each
            # request, with the raw path and query string.
            log_config=None,
            access_log=False,
        )
    return 0
