"""``nbo keys create --role read|write|admin``: a new API key, shown once.

The key goes to stdout exactly once and is kept nowhere; what the service needs is the
entry with its SHA-256, to add to ``NBO_API_KEYS``. The ready line carries the keys the
environment configures now plus the new one, so rotating is: create, deploy the line,
hand out the key, then remove the old entry and deploy again.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from nbo.apikeys import ApiKeyEntry, Role, create_key
from nbo.config import load_settings


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "keys",
        help="create API keys for the service",
        description="API keys for the service. Roles are ordered admin > write > read: "
        "read gets offers, profiles and reports; write also posts events and consent; "
        "admin also erases customers and reloads models.",
    )
    keys = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    keys.required = True
    create = keys.add_parser(
        "create",
        help="print a new key once, and the NBO_API_KEYS entry that lets it in",
        description="Print a new API key (shown once: nbo keeps only its SHA-256) and the "
        "entry to add to NBO_API_KEYS, with a ready NBO_API_KEYS='[...]' line holding the "
        "keys configured now plus the new one.",
    )
    create.add_argument(
        "--role", required=True, choices=[role.value for role in Role], help="the key's role"
    )
    create.set_defaults(handler=run_create)


def run_create(args: argparse.Namespace) -> int:
    configured = load_settings().api_keys
    key, entry = create_key(Role(args.role), taken={e.id for e in configured})
    print(f"New {entry.role.value} key (shown once; nbo keeps only its hash):")
    print(f"  {key}")
    print("Entry to add to NBO_API_KEYS:")
    print(f"  {_json(entry)}")
    everything = ", ".join(_json(e) for e in [*configured, entry])
    print("NBO_API_KEYS with the keys configured now plus this one:")
    print(f"  NBO_API_KEYS='[{everything}]'")
    return 0


def _json(entry: ApiKeyEntry) -> str:
    # Ids are hex, roles words and hashes hex: no quote in the JSON, safe in '...'.
    return json.dumps(entry.model_dump(mode="json"))
