"""E2B ``iam`` through the API in-process: tokens are kept with the sandbox (never shown by
info), the OIDC documents need no key, and the server-wide flag off refuses tokens with 400."""
from __future__ import annotations

from pathlib import Path

import httpx

from tests.inprocess.conftest import Stack, StoreTemplate, start_stack, stop_stack

IAM = {"tokens": {"aws": {"audience": "sts.amazonaws.com", "tokenType": "JWT-SVID"}}}


async def test_iam_is_kept_with_the_sandbox_and_not_shown(stack: Stack) -> None:
    made = await stack.create({"iam": IAM})
    row = stack.row(made["sandboxID"])
    assert row is not None and row.network == {"iam": IAM}
    info = (await stack.client.get(f"/sandboxes/{made['sandboxID']}", headers=stack.headers())).json()
    assert "iam" not in info and "sts.amazonaws.com" not in str(info)
    refused = await stack.client.put(f"/sandboxes/{made['sandboxID']}/network", headers=stack.headers(),
                                     json={"iam": {"tokens": {"gcp": {"audience": "g", "tokenType": "JWT-SVID"}}}})
    assert refused.status_code == 400
    cleared = await stack.client.put(f"/sandboxes/{made['sandboxID']}/network", headers=stack.headers(), json={})
    assert cleared.status_code == 204, cleared.text
    row = stack.row(made["sandboxID"])
    assert row is not None and row.network == {"iam": IAM}   # a PUT replaces rules, never the tokens
    anonymous = httpx.AsyncClient(transport=stack.client._transport, base_url="http://sandlot.test")
    discovery = (await anonymous.get("/.well-known/openid-configuration")).json()
    jwks = (await anonymous.get("/.well-known/jwks.json")).json()
    assert discovery["id_token_signing_alg_values_supported"] == ["ES256"]
    assert [key["kty"] for key in jwks["keys"]] == ["EC"] and "d" not in jwks["keys"][0]
    await anonymous.aclose()


async def test_workload_identity_off_refuses_tokens(tmp_path: Path, store_template: StoreTemplate) -> None:
    stack = await start_stack(tmp_path, store_template, workload_identity=False)
    try:
        answer = await stack.create({"iam": IAM}, expect=400)
        assert "SANDLOT_WORKLOAD_IDENTITY" in answer["message"]
        await stack.create({"iam": {"tokens": {}}})   # an empty map is no workload identity
    finally:
        await stop_stack(stack)
