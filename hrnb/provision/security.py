"""The security plugin's roles and role mappings (fine-grained access control): who may
write and who may read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hrnb.clients import trusted_ca
from hrnb.config import Settings
from hrnb.errors import ProvisionError
from hrnb.provision import policies
from hrnb.provision.base import AwsClients, StepResult, _opensearch
from hrnb.provision.domain import opensearch_url
from hrnb.provision.role import covers
from hrnb.provision.state import MasterUser, load_master_user, master_user_path

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


def _admin_opensearch(settings: Settings, url: str, *, timeout: float = 30.0) -> OpenSearch:
    """A data-plane client with the rights to create templates and map roles: the internal
    master user (HTTPS, basic auth), as on AWS; plain HTTP to a local node without security."""
    from opensearchpy import OpenSearch

    if settings.is_local and not settings.opensearch_security:
        return OpenSearch(hosts=[url], timeout=timeout)
    master = _require_master_user(settings)
    return OpenSearch(hosts=[url], http_auth=(master.username, master.password), use_ssl=True,
                      verify_certs=True, ca_certs=trusted_ca(settings), timeout=timeout)


def _require_master_user(settings: Settings) -> MasterUser:
    master = load_master_user(settings)
    if master is None:
        path = master_user_path(settings)
        raise ProvisionError(
            f"the domain's master user file {path} is missing, so set-up cannot sign in to "
            "configure the domain; reset the master password in the AWS console and write "
            '{"username": ..., "password": ...} there (mode 0600)',
            resource=str(path),
        )
    return master


# --- security plugin role mapping ----------------------------------------------------------------
def writer_role_name(settings: Settings) -> str:
    return f"{settings.prefix}-indexer-writer"


def reader_role_name(settings: Settings) -> str:
    return f"{settings.prefix}-operator-reader"


def reader_principals(settings: Settings, caller_arn: str) -> tuple[str, ...]:
    """Who may read (pure): the configured principals, or else whoever runs set-up (an
    assumed-role session as its role, which is what fine-grained access control sees)."""
    return settings.reader_principal_arns or (policies.iam_principal_arn(caller_arn),)


def ensure_role_mapping(settings: Settings, clients: AwsClients | None = None,
                        *, url: str | None = None) -> StepResult:
    """Map the indexer role (write) and the readers (``settings.reader_principals``, by default
    the set-up caller) to security-plugin roles, so signed requests are not refused with the
    well-known 403."""
    aws = clients or AwsClients(settings)
    return _role_mapping_step(settings, aws, apply=True,
                              url=url or opensearch_url(settings, aws))


def _role_mapping_step(settings: Settings, aws: AwsClients, *, apply: bool,
                       url: str | None) -> StepResult:
    resource = f"{writer_role_name(settings)}, {reader_role_name(settings)}"
    if settings.is_local and not settings.opensearch_security:
        return StepResult("role mapping", "skipped", resource, None,
                          "the local OpenSearch node runs without the security plugin "
                          "(HRNB_OPENSEARCH_SECURITY=off); nothing to map")
    if url is None:
        return StepResult("role mapping", "created", resource, None,
                          "after the domain is active")
    client = _admin_opensearch(settings, url)
    indices = (settings.index_name, settings.dlq_index_name)
    readers = reader_principals(settings, aws.caller_arn)
    wanted = (
        (writer_role_name(settings), policies.security_writer_role(
            indices, settings.alert_state_index), (aws.arns.role,)),
        (reader_role_name(settings), policies.security_reader_role(indices), readers),
    )
    changes = []
    found = False
    for role_name, role_body, principals in wanted:
        mapping_body = policies.security_role_mapping(*principals)
        for kind, body in (("roles", role_body), ("rolesmapping", mapping_body)):
            path = f"/_plugins/_security/api/{kind}/{role_name}"
            current = _opensearch(role_name, f"read security {kind} of", client.transport.
                                  perform_request, missing_ok=True, method="GET", url=path)
            found = found or bool(current)
            if not covers((current or {}).get(role_name), body):
                changes.append(f"{kind[:-1]} {role_name}")
                if apply:
                    _opensearch(role_name, f"write security {kind} of",
                                client.transport.perform_request, method="PUT", url=path,
                                body=body)
    if not changes:
        return StepResult("role mapping", "unchanged", resource, url, "writer and reader mapped")
    return StepResult("role mapping", "updated" if found else "created", resource, url,
                      "wrote " + ", ".join(changes))
