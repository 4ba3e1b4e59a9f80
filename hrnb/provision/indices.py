"""The index templates and indices with their mapping, created before anything writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hrnb.config import Settings
from hrnb.errors import ProvisionError
from hrnb.provision.base import AwsClients, StepResult, _opensearch
from hrnb.provision.domain import opensearch_url
from hrnb.provision.security import _admin_opensearch
from hrnb.wire.index_schema import dead_letter_template, index_template

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


# --- index templates and indices -----------------------------------------------------------------
def template_name(index_name: str) -> str:
    return f"{index_name}-template"


def ensure_indices(settings: Settings, *, url: str | None = None) -> tuple[StepResult, ...]:
    """Composable templates for the heart-rate and dead-letter indices, then the indices."""
    url = url or opensearch_url(settings)
    if url is None:
        raise ProvisionError("the domain has no endpoint yet; run the domain step first",
                             resource=settings.domain_name)
    return _indices_step(settings, apply=True, url=url)


def _indices_step(settings: Settings, *, apply: bool, url: str | None) -> tuple[StepResult, ...]:
    pairs = ((settings.index_name, index_template(settings.index_name)),
             (settings.dlq_index_name, dead_letter_template(settings.dlq_index_name)))
    if url is None:
        return tuple(
            StepResult(step, "created", name, None, "after the domain is active")
            for index, _body in pairs
            for step, name in (("index template", template_name(index)), ("index", index))
        )
    client = _admin_opensearch(settings, url)
    results = []
    for index, body in pairs:
        results.append(_template(client, template_name(index), body, apply=apply))
        results.append(_index(client, index, body, apply=apply))
    return tuple(results)


def _flat_settings(value: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            flat.update(_flat_settings(item, f"{name}."))
        else:
            flat[name if name.startswith("index.") else f"index.{name}"] = str(item)
    return flat


def template_matches(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when a stored composable template already says what ``desired`` says (pure):
    OpenSearch returns settings nested and as strings, so both sides are flattened first."""
    current_template = current.get("template", {})
    return (
        list(current.get("index_patterns", [])) == list(desired["index_patterns"])
        and current.get("priority") == desired["priority"]
        and current_template.get("mappings") == desired["template"]["mappings"]
        and _flat_settings(current_template.get("settings", {}))
        == _flat_settings(desired["template"]["settings"])
    )


def _template(client: OpenSearch, name: str, body: Mapping[str, Any], *, apply: bool) -> StepResult:
    found = _opensearch(name, "read index template", client.indices.get_index_template,
                        missing_ok=True, name=name)
    templates = (found or {}).get("index_templates", [])
    if templates and template_matches(templates[0]["index_template"], body):
        return StepResult("index template", "unchanged", name, None,
                          f"pattern {', '.join(body['index_patterns'])}")
    if apply:
        _opensearch(name, "write index template", client.indices.put_index_template, name=name,
                    body=body)
    return StepResult("index template", "updated" if templates else "created", name, None,
                      f"pattern {', '.join(body['index_patterns'])}, replicas 0")


def _index(client: OpenSearch, index: str, body: Mapping[str, Any], *, apply: bool) -> StepResult:
    desired = body["template"]["mappings"]["properties"]
    found = _opensearch(index, "read mapping of index", client.indices.get_mapping,
                        missing_ok=True, index=index)
    if found is None:
        if apply:
            # The template supplies mapping and settings, as it will for a bulk that races us.
            _opensearch(index, "create index", client.indices.create, index=index)
        return StepResult("index", "created", index, None, "from its template")
    concrete = next(iter(found.values()))
    current = concrete.get("mappings", {}).get("properties", {})
    clashes = [f"{field_name} is {current[field_name].get('type')}, needs {spec.get('type')}"
               for field_name, spec in desired.items()
               if field_name in current and current[field_name].get("type") != spec.get("type")]
    if clashes:
        raise ProvisionError(
            f"index {index} exists with an incompatible mapping ({'; '.join(clashes)}); "
            "reindex it or delete it, then run set-up again",
            resource=index,
        )
    changes = []
    missing = {name: spec for name, spec in desired.items() if name not in current}
    if missing:
        changes.append("added fields " + ", ".join(sorted(missing)))
        if apply:
            _opensearch(index, "extend mapping of index", client.indices.put_mapping,
                        index=index, body={"properties": missing})
    index_settings = _opensearch(index, "read settings of index", client.indices.get_settings,
                                 index=index)
    replicas = next(iter(index_settings.values()))["settings"]["index"].get("number_of_replicas")
    if str(replicas) != "0":
        changes.append(f"replicas {replicas} -> 0 (one node: green, not yellow)")
        if apply:
            _opensearch(index, "set replicas of index", client.indices.put_settings, index=index,
                        body={"index": {"number_of_replicas": 0}})
    if changes:
        return StepResult("index", "updated", index, None, "; ".join(changes))
    return StepResult("index", "unchanged", index, None, "mapping and replicas as desired")


def _teardown_indices(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    indices = (settings.index_name, settings.dlq_index_name)
    if not settings.is_local:
        return [StepResult("index", "skipped", index, None, "deleted with the domain")
                for index in indices]
    client = _admin_opensearch(settings, settings.resolved_opensearch_url or "")
    results = []
    for index in indices:
        exists = _opensearch(index, "look up index", client.indices.exists, index=index)
        if apply and exists:
            _opensearch(index, "delete index", client.indices.delete, index=index)
        results.append(StepResult("index", "deleted" if exists else "absent", index))
        template = template_name(index)
        found = _opensearch(template, "look up index template",
                            client.indices.exists_index_template, name=template)
        if apply and found:
            _opensearch(template, "delete index template", client.indices.delete_index_template,
                        name=template)
        results.append(StepResult("index template", "deleted" if found else "absent", template))
    return results

