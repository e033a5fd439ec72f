"""A short scenario through the Python client that openapi-python-client generates from
`/openapi.json` (tests/contract/run.sh generates and installs it): cache put and get, a
session created and read back, a rate-limit check, an event published, and a problem
answer parsed as one. Usage: client_scenario.py BASE_URL TOKEN"""

import sys

from blink_chamber_client import AuthenticatedClient
from blink_chamber_client.api.cache import get_cache, put_cache
from blink_chamber_client.api.events import publish_events
from blink_chamber_client.api.rate_limits import ratelimit_check
from blink_chamber_client.api.sessions import create_session, get_session
from blink_chamber_client.models import (
    Accepted,
    CheckRequestType0,
    CheckResponse,
    CreateRequest,
    Problem,
    PublishBodyType0,
    PublishBodyType0Specversion,
    PutRequest,
    SessionBody,
    ValueBody,
)


def expect(what, response, status, model):
    if response.status_code != status or not isinstance(response.parsed, model):
        raise SystemExit(
            f"{what}: expected {status} {model.__name__}, got {response.status_code} "
            f"{response.parsed!r} {response.content[:200]!r}"
        )
    print(f"client: {what}: {status}")
    return response.parsed


def main(base_url, token):
    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)

    put = put_cache.sync_detailed(
        "users", "42", client=client, body=PutRequest(value={"name": "Ada"}, ttl="10m")
    )
    if put.status_code != 204:
        raise SystemExit(f"cache put: {put.status_code} {put.content!r}")
    print("client: cache put: 204")
    value = expect("cache get", get_cache.sync_detailed("users", "42", client=client), 200, ValueBody)
    assert value.value == {"name": "Ada"}, value.value
    missing = expect(
        "cache get of a missing key", get_cache.sync_detailed("users", "nope", client=client), 404, Problem
    )
    assert missing.type_ == "not-found", missing

    session = expect(
        "session create",
        create_session.sync_detailed(client=client, body=CreateRequest(user_id="u-1", data={"cart": 3})),
        201,
        SessionBody,
    )
    read = expect(
        "session read", get_session.sync_detailed(client=client, session_id=session.id), 200, SessionBody
    )
    assert (read.user_id, read.data, read.version) == ("u-1", {"cart": 3}, 1), read

    decision = expect(
        "rate-limit check",
        ratelimit_check.sync_detailed(client=client, body=CheckRequestType0(rule="login", key="10.0.0.1")),
        200,
        CheckResponse,
    )
    assert decision.allowed and decision.remaining < decision.limit + 1, decision

    accepted = expect(
        "event publish",
        publish_events.sync_detailed(
            client=client,
            body=PublishBodyType0(
                id="evt-1",
                source="contract",
                specversion=PublishBodyType0Specversion.VALUE_0,
                type_="user.created",
                data={"userId": "u-1"},
            ),
        ),
        202,
        Accepted,
    )
    assert accepted.accepted == 1 and accepted.ids == ["evt-1"], accepted


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
