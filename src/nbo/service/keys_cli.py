"""``nbo keys create --role read|write|admin``: a new API key, shown once.
``nbo keys pseudonym ID...``: the pseudonym logs name a customer by.

The key goes to stdout exactly once and is kept nowhere; what the service needs is the
entry with its SHA-256, to add to ``NBO_API_KEYS``. The ready line carries the keys the
environment configures now plus the new one, so rotating is: create, deploy the line,
hand out the key, then remove the old entry and deploy again.

A pseudonym is computed with the service's key (``NBO_LOG_KEY``, else the key kept in the
store ``NBO_STORE_URL`` names; see ``nbo.core.pseudonyms``), so an operator can find one
customer's lines in the logs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nbo.core.apikeys import ApiKeyEntry, Role, create_key
from nbo.core.errors import StoreUrlError
from nbo.core.pseudonyms import Pseudonyms
from nbo.settings import load_settings
from nbo.store import check_store_exists, read_pseudonym_key, store_location, store_setting


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "keys",
        help="create API keys for the service; customer pseudonyms of its logs",
        description="API keys for the service. Roles are ordered admin > write > read: "
        "read gets offers, profiles and reports; write also posts events and consent; "
        "admin also erases customers and reloads models. And the keyed pseudonyms the "
        "service's logs name customers by.",
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
    pseudonym = keys.add_parser(
        "pseudonym",
        help="print the pseudonym the service's logs name a customer by",
        description="Print, one per line, the pseudonym the service's logs name each "
        "customer by (the 'customer' field of access lines, and messages), computed with "
        "the service's key: NBO_LOG_KEY when set, else the key kept in the store "
        "(--store-url, default NBO_STORE_URL).",
    )
    pseudonym.add_argument(
        "customer_ids",
        nargs="+",
        metavar="ID",
        help="customer ids; '-' reads them from stdin, one per line (kept out of the "
        "shell's history)",
    )
    pseudonym.add_argument("--store-url", default=None, help="NBO_STORE_URL (the service's)")
    pseudonym.set_defaults(handler=run_pseudonym)


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


def run_pseudonym(args: argparse.Namespace) -> int:
    settings = load_settings(store_url=args.store_url)
    if settings.log_key is not None:
        key = settings.log_key.get_secret_value().encode("utf-8")
    else:
        setting = store_setting(args.store_url)
        stored = read_pseudonym_key(settings.store_url, setting)
        if stored is None:
            # No file there is a wrong path (or a store never served) and said as the
            # other commands say it, naming the path.
            check_store_exists(settings.store_url, setting)
            raise StoreUrlError(
                f"the store ({store_location(settings.store_url)}) holds no pseudonym key "
                "yet (the service makes it at its first start), and NBO_LOG_KEY is not set",
                setting,
            )
        key = stored
    pseudonyms = Pseudonyms(key)
    for customer_id in args.customer_ids:
        if customer_id == "-":
            for line in sys.stdin:
                print(pseudonyms.of(line.rstrip("\r\n")))
        else:
            print(pseudonyms.of(customer_id))
    return 0
