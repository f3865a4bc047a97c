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


def test_the_balancer_never_records_a_delivery_twice() -> None:
    """nginx tried a timed-out ``GET .../offers?record=true`` again on the other replica,
    which recorded a second delivery unless the client had sent an X-Request-ID. Now it
    tries nothing again after a timeout, and passes every request on with a request id
    (the client's, else its own), so a retry after a failed connection is a repeat of
    the same delivery, which a replica refuses."""
    conf = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    directives = [line.split("#")[0].strip() for line in conf.splitlines()]
    (retry,) = [d for d in directives if d.startswith("proxy_next_upstream ")]
    assert "timeout" not in retry and "error" in retry.split()
    assert "proxy_set_header X-Request-ID $nbo_request_id;" in directives
    start = directives.index("map $http_x_request_id $nbo_request_id {")
    mapping = directives[start + 1 : directives.index("}", start)]
    # nginx's own id only without the client's: a client's id nbo does not take is
    # passed on, so a delivery under it is refused (422) rather than recorded under
    # nginx's new id on every retry of the client's.
    assert mapping == ['"" $request_id;', "default $http_x_request_id;"]


def test_the_balancer_bounds_heads_and_slow_clients() -> None:
    """What nbo cannot bound on its own is the proxy's (docs/service.md, Heads and slow
    clients): nginx's header buffers and client timeouts, tighter than nbo's."""
    conf = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    directives = {line.split("#")[0].strip() for line in conf.splitlines()}
    assert {
        "large_client_header_buffers 4 16k;",
        "client_header_timeout 10s;",
        "client_body_timeout 10s;",
    } <= directives


def test_the_balancer_lets_go_of_idle_connections_before_nbo_does() -> None:
    """nginx keeps an idle upstream connection 60 s unless told, nbo 5 s (its
    NBO_KEEPALIVE_SECONDS default): nginx reused a connection nbo was closing, and a
    POST on it, which nginx never tries again, answered 502."""
    from nbo.settings import Settings

    conf = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    directives = [line.split("#")[0].strip() for line in conf.splitlines()]
    start = directives.index("upstream nbo {")
    upstream = directives[start : directives.index("}", start)]
    (idle,) = [d for d in upstream if d.startswith("keepalive_timeout ")]
    seconds = int(re.fullmatch(r"keepalive_timeout (\d+)s;", idle).group(1))  # type: ignore[union-attr]
    assert seconds < Settings.model_fields["keepalive_seconds"].default
