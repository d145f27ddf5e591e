"""`/token`: the Docker registry token endpoint, served by every node.

GET (the token spec): Basic credentials, or none for an anonymous token;
`service`, any number of `scope`, `offline_token=true` for a refresh token.
POST (the OAuth2 flavour containerd and `docker login` use): a form with
`grant_type=password` (`username`, `password`) or `grant_type=refresh_token`
(`refresh_token`), plus `service` and `scope`. Either answers JSON with
`token`/`access_token`, `expires_in`, `issued_at` and, when asked for or on
a password grant, `refresh_token`. Scopes are granted only as far as the
caller's grants go; asking for more is not an error, the token just lists less.
"""

from __future__ import annotations

import json

from quart import Response, request

from node.access.callers import ANONYMOUS, Caller
from node.access.errors import AuthenticationRequired
from node.access.gate import TokenRequestInvalid
from node.access.rules import parse_scope
from node.api.access import client_address, realm
from node.api.errors import NotFound
from node.api.request_bodies import read_body_bounded
from node.services import NodeServices

MAX_FORM_BYTES = 64 * 1024
MAX_SCOPES = 64
MAX_FORM_FIELDS = 200


def _scopes(values: list[str]) -> list:
    found = []
    for value in values[:MAX_SCOPES]:
        for text in value.split(" "):  # OAuth2 joins scopes with spaces
            scope = parse_scope(text)
            if scope is not None:
                found.append(scope)
    return found[:MAX_SCOPES]


async def token(rt: NodeServices) -> Response:
    gate = rt.gate
    if gate.settings.mode != "token":
        raise NotFound("this registry does not issue tokens (auth is not token)")
    if request.method == "POST":
        body = await read_body_bounded(MAX_FORM_BYTES)
        form = _form(body)
        grant = form.get("grant_type", [""])[0]
        service = form.get("service", [gate.settings.service])[0]
        if grant == "password":
            username = form.get("username", [""])[0]
            password = form.get("password", [""])[0]
            who = await gate.login(username, password, client_address(), realm())
        elif grant == "refresh_token":
            who = await gate.refresh_login(
                form.get("refresh_token", [""])[0], client_address(), realm()
            )
        else:
            raise TokenRequestInvalid("grant_type must be password or refresh_token")
        scopes = _scopes(form.get("scope", []))
        refresh = True
    else:
        who = await gate.authenticate(request.headers.get("Authorization"), client_address(),
                                      realm())
        if who.token_access is not None:  # a bearer token cannot buy another token
            raise AuthenticationRequired("log in with a password or robot token",
                                         challenge=gate.challenge(realm()))
        service = request.args.get("service", gate.settings.service)
        scopes = _scopes(request.args.getlist("scope"))
        refresh = request.args.get("offline_token") == "true"
    answer = await gate.grant_tokens(_plain(who), scopes, service, refresh=refresh)
    return Response(json.dumps(answer), status=200, content_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _plain(who: Caller) -> Caller:
    return who if who.is_account else Caller(ANONYMOUS, "", who.address)


def _form(body: bytes) -> dict[str, list[str]]:
    from urllib.parse import parse_qs

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenRequestInvalid("the form is not UTF-8") from None
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # more fields than the bound
        raise TokenRequestInvalid(f"the form has more than {MAX_FORM_FIELDS} fields") from None
