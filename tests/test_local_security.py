"""Fine-grained access control on the local stack, as on the AWS domain.

The local domain endpoint is the SigV4 front (hrnb.local.front) inside the emulator process; the
node behind it runs the real security plugin with TLS from the local CA. These tests talk to both
over real HTTPS: what is refused (unsigned, tampered, plain HTTP, forged proxy headers), which
identity the node sees for each kind of credentials, and the query path for mapped and unmapped
IAM identities.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from botocore.credentials import Credentials
from opensearchpy import OpenSearch, Urllib3AWSV4SignerAuth
from requests_aws4auth import AWS4Auth
from support import make_test_record

from hrnb.clients import trusted_ca
from hrnb.config import Settings
from hrnb.errors import QueryError
from hrnb.provision.security import _admin_opensearch, ensure_role_mapping, reader_role_name
from hrnb.provision.state import load_master_user, master_user_path
from hrnb.query import views
from hrnb.search_client import opensearch_client
from hrnb.wire.index_schema import index_template
from hrnb.wire.sigv4 import Credentials as SigningCredentials
from hrnb.wire.sigv4 import SigV4Signer

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def secured(settings: Settings) -> Settings:
    if not settings.local_security:
        pytest.skip("the local stack runs without security (HRNB_OPENSEARCH_SECURITY=off)")
    return settings


@pytest.fixture
def admin(secured: Settings) -> Any:
    return _admin_opensearch(secured, str(secured.resolved_opensearch_url))


def signed(settings: Settings, key: str, secret: str, token: str | None = None) -> AWS4Auth:
    return AWS4Auth(key, secret, settings.region, "es", session_token=token)


def authinfo(settings: Settings, auth: Any) -> requests.Response:
    return requests.get(f"{settings.resolved_opensearch_url}/_plugins/_security/authinfo",
                        auth=auth, verify=str(settings.local_ca_path), timeout=30)


@pytest.fixture
def iam_user(secured: Settings, make_aws_client: Callable[..., Any],
             unique_name: Callable[[str], str]) -> Iterator[Callable[[], tuple[str, AWS4Auth]]]:
    """IAM users with an access key on the emulator: (user ARN, signing auth)."""
    iam = make_aws_client("iam")
    made: list[tuple[str, str]] = []

    def make() -> tuple[str, AWS4Auth]:
        name = unique_name("fgac-user")
        arn = iam.create_user(UserName=name)["User"]["Arn"]
        key = iam.create_access_key(UserName=name)["AccessKey"]
        made.append((name, key["AccessKeyId"]))
        return arn, signed(secured, key["AccessKeyId"], key["SecretAccessKey"])

    yield make
    for name, key_id in made:
        iam.delete_access_key(UserName=name, AccessKeyId=key_id)
        iam.delete_user(UserName=name)


@pytest.fixture
def assumable_role(secured: Settings, make_aws_client: Callable[..., Any],
                   unique_name: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    """A role the local account may assume: (name, ARN)."""
    iam = make_aws_client("iam")
    name = unique_name("fgac-role")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}
    yield name, iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust)
                                )["Role"]["Arn"]
    iam.delete_role(RoleName=name)


def test_the_stack_reports_security_and_keeps_its_secrets_private(secured: Settings) -> None:
    answer = subprocess.run([sys.executable, "-m", "hrnb", "local", "status", "--json"],
                            capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(answer.stdout)
    assert report["security"] is True and report["healthy"] is True
    assert report["opensearch_url"] == secured.resolved_opensearch_url
    assert report["opensearch_url"].startswith("https://")
    for path in (master_user_path(secured), *secured.local_ca_path.parent.glob("*-key.pem")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    master = load_master_user(secured)
    assert master is not None and master.password not in answer.stdout


def test_unsigned_plain_http_and_forged_proxy_requests_are_refused(secured: Settings) -> None:
    url = str(secured.resolved_opensearch_url)
    ca = str(secured.local_ca_path)
    unsigned = requests.get(f"{url}/_cluster/health", verify=ca, timeout=30)
    assert unsigned.status_code == 403
    assert "SigV4" in unsigned.json()["message"]

    with pytest.raises(requests.ConnectionError):
        requests.get(url.replace("https://", "http://") + "/_cluster/health", timeout=30)

    # The node itself: nobody anonymous, and proxy headers count only from the front's address.
    node = f"https://127.0.0.1:{secured.resolved_opensearch_node_port}"
    forged = requests.get(f"{node}/_cluster/health", verify=ca, timeout=30, headers={
        "x-proxy-user": "arn:aws:iam::123456789012:root", "x-proxy-roles": "all_access",
        "x-forwarded-for": "10.0.0.1"})
    assert forged.status_code == 401


def test_tampered_and_wrongly_keyed_requests_are_refused(
    secured: Settings, iam_user: Callable[[], tuple[str, AWS4Auth]],
) -> None:
    _, auth = iam_user()
    url = f"{secured.resolved_opensearch_url}/_plugins/_security/authinfo"
    with requests.Session() as session:
        prepared = session.prepare_request(requests.Request("POST", url, auth=auth, json={}))
        prepared.body = b'{"tampered": true}'
        prepared.headers["Content-Length"] = str(len(prepared.body))
        tampered = session.send(prepared, verify=str(secured.local_ca_path), timeout=30)
    assert tampered.status_code == 403

    wrong_secret = signed(secured, auth.access_id, "not-the-secret")
    refused = authinfo(secured, wrong_secret)
    assert refused.status_code == 403 and "signature" in refused.json()["message"]
    unknown = authinfo(secured, signed(secured, "hrnb-test-unknown-key", "x" * 40))
    assert unknown.status_code == 403 and "unknown access key" in unknown.json()["message"]


def test_each_credential_reaches_the_node_as_its_iam_principal(
    secured: Settings, iam_user: Callable[[], tuple[str, AWS4Auth]],
    make_aws_client: Callable[..., Any], assumable_role: tuple[str, str],
) -> None:
    user_arn, user_auth = iam_user()
    seen = authinfo(secured, user_auth).json()
    assert (seen["user_name"], seen["backend_roles"]) == (user_arn, [])

    name, role_arn = assumable_role
    sts = make_aws_client("sts")
    assumed = sts.assume_role(RoleArn=role_arn, RoleSessionName="analyst")["Credentials"]
    auth = signed(secured, assumed["AccessKeyId"], assumed["SecretAccessKey"],
                  assumed["SessionToken"])
    seen = authinfo(secured, auth).json()
    assert seen["backend_roles"] == [role_arn]
    assert seen["user_name"].endswith(f":assumed-role/{name}/analyst")
    without_token = authinfo(secured, signed(secured, assumed["AccessKeyId"],
                                             assumed["SecretAccessKey"]))
    assert without_token.status_code == 403

    caller = sts.get_caller_identity()["Arn"]
    client = opensearch_client(secured)
    assert client.transport.perform_request(
        "GET", "/_plugins/_security/authinfo")["user_name"] == caller

    master = load_master_user(secured)
    assert master is not None
    seen = authinfo(secured, (master.username, master.password)).json()
    assert seen["user_name"] == master.username and "all_access" in seen["roles"]


def test_the_handlers_signer_reaches_the_node_as_its_role_across_refreshed_credentials(
    secured: Settings, make_aws_client: Callable[..., Any], assumable_role: tuple[str, str],
) -> None:
    """hrnb.wire.sigv4 (the Lambda handler's signer) through the front, with session tokens."""
    name, role_arn = assumable_role
    sts = make_aws_client("sts")
    url = str(secured.resolved_opensearch_url)
    path = "/_plugins/_security/authinfo"

    def session(session_name: str) -> SigningCredentials:
        issued = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
        return SigningCredentials(issued["AccessKeyId"], issued["SecretAccessKey"],
                                  issued["SessionToken"])

    def ask(signer: SigV4Signer) -> requests.Response:
        headers = signer.sign("GET", urlsplit(url).netloc, path, "", {}, b"")
        return requests.get(f"{url}{path}", headers=headers, verify=str(secured.local_ca_path),
                            timeout=30)

    first = session("indexer-1")
    signer = SigV4Signer(first, secured.region, "es")
    seen = ask(signer).json()
    assert (seen["user_name"].endswith(f":assumed-role/{name}/indexer-1")
            and seen["backend_roles"] == [role_arn])
    signer.credentials = session("indexer-2")  # refreshed, as a new container gets them
    assert ask(signer).json()["user_name"].endswith(f":assumed-role/{name}/indexer-2")
    signer.credentials = SigningCredentials(first.access_key, first.secret_key)
    without_token = ask(signer)
    assert without_token.status_code == 403 and "token" in without_token.json()["message"]
    signer.credentials = SigningCredentials(first.access_key, "not-the-secret",
                                            first.session_token)
    wrong_secret = ask(signer)
    assert wrong_secret.status_code == 403 and "signature" in wrong_secret.json()["message"]


def test_a_mapped_reader_queries_and_an_unmapped_one_gets_one_line_naming_the_fix(
    secured: Settings, admin: Any, iam_user: Callable[[], tuple[str, AWS4Auth]],
    unique_name: Callable[[str], str],
) -> None:
    index = unique_name("fgac-hr")
    prefix = unique_name("f")[:10]
    reader_arn, reader_auth = iam_user()
    stranger_arn, stranger_auth = iam_user()
    admin.indices.put_index_template(name=index, body=index_template(index))
    record = make_test_record("athlete-1", "s-fgac", 0)
    admin.index(index=index, id="athlete-1/s-fgac/0", body=dict(record), refresh=True)
    scoped = secured.with_overrides(prefix=prefix, index_name=index,
                                    dlq_index_name=f"{index}-dlq",
                                    reader_principals=reader_arn)
    role = reader_role_name(scoped)

    def client(auth: AWS4Auth) -> OpenSearch:
        signer = Urllib3AWSV4SignerAuth(Credentials(auth.access_id, auth.signing_key.secret_key),
                                        secured.region, "es")
        return OpenSearch(hosts=[str(secured.resolved_opensearch_url)], http_auth=signer,
                          ca_certs=trusted_ca(secured), timeout=30)

    try:
        with pytest.raises(QueryError) as before:
            views.samples(client(reader_auth), index)
        assert reader_arn in str(before.value)

        result = ensure_role_mapping(scoped)
        assert result.action == "created"
        mapping = admin.transport.perform_request(
            "GET", f"/_plugins/_security/api/rolesmapping/{role}")[role]
        assert mapping["users"] == [reader_arn] and mapping["backend_roles"] == []

        assert len(views.samples(client(reader_auth), index).df) == 1
        with pytest.raises(QueryError) as refused:
            views.samples(client(stranger_auth), index)
        message = str(refused.value)
        assert "\n" not in message
        assert stranger_arn in message and "reader role" in message
        assert f"HRNB_READER_PRINCIPALS={stranger_arn}" in message and "hrnb setup" in message
        assert ensure_role_mapping(scoped).action == "unchanged"
    finally:
        admin.indices.delete(index=index, ignore_unavailable=True)
        admin.indices.delete_index_template(name=index)
        for kind in ("rolesmapping", "roles"):
            for name in (role, f"{prefix}-indexer-writer"):
                admin.transport.perform_request(
                    "DELETE", f"/_plugins/_security/api/{kind}/{name}", params={"ignore": 404})


def test_the_cli_tells_an_unmapped_reader_in_one_line_how_to_be_mapped(
    secured: Settings, make_aws_client: Callable[..., Any], unique_name: Callable[[str], str],
) -> None:
    caller = make_aws_client("sts").get_caller_identity()["Arn"]
    environment = {**os.environ, "HRNB_INDEX_NAME": unique_name("fgac-unmapped")}
    answer = subprocess.run([sys.executable, "-m", "hrnb", "query", "recent"], env=environment,
                            capture_output=True, text=True, timeout=120)
    assert answer.returncode == 1
    (line,) = answer.stderr.strip().splitlines()
    assert "403" in line and caller in line and "reader role" in line
    assert f"HRNB_READER_PRINCIPALS={caller}" in line and "hrnb setup" in line
