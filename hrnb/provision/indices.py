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
#: ``_meta`` key on every mapping and template set-up writes: the prefix that owns it.
OWNER_META = "owner"


def template_name(index_name: str) -> str:
    return f"{index_name}-template"


def concrete_index(alias: str) -> str:
    """The index set-up creates behind the write alias ``alias`` (the name everyone uses).

    The function writes with ``require_alias``: once set-up's alias is gone, a write fails and
    is retried instead of auto-creating an index with a dynamic mapping."""
    return f"{alias}-000001"


def ensure_indices(settings: Settings, *, url: str | None = None) -> tuple[StepResult, ...]:
    """Composable templates for the heart-rate and dead-letter indices, then the indices."""
    url = url or opensearch_url(settings)
    if url is None:
        raise ProvisionError("the domain has no endpoint yet; run the domain step first",
                             resource=settings.domain_name)
    return _indices_step(settings, apply=True, url=url)


def _owned_body(body: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A template body whose mapping says which prefix owns it (copied, not changed)."""
    mappings = {**body["template"]["mappings"], "_meta": {OWNER_META: prefix}}
    return {**body, "template": {**body["template"], "mappings": mappings}}


def _indices_step(settings: Settings, *, apply: bool, url: str | None) -> tuple[StepResult, ...]:
    index, dlq = settings.index_name, settings.dlq_index_name
    pairs = ((index, index_template(concrete_index(index))),
             (dlq, dead_letter_template(concrete_index(dlq))))
    if url is None:
        return tuple(
            StepResult(step, "created", name, None, "after the domain is active")
            for alias, _body in pairs
            for step, name in (("index template", template_name(alias)), ("index", alias))
        )
    client = _admin_opensearch(settings, url)
    results = []
    for alias, body in pairs:
        owned = _owned_body(body, settings.prefix)
        results.append(_template(client, template_name(alias), owned, settings.prefix,
                                 apply=apply))
        results.append(_index(client, alias, owned, settings.prefix, apply=apply))
    return tuple(results)


#: The alert episode state: one document per athlete, its state stored, not searched.
def alert_state_body(prefix: str) -> dict[str, Any]:
    return {
        "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"_meta": {OWNER_META: prefix}, "dynamic": False,
                     "properties": {"state": {"type": "object", "enabled": False}}},
    }


def ensure_alert_state(settings: Settings, *, url: str | None = None) -> StepResult:
    """The alert episode state index (the function reads and writes it; never creates it)."""
    url = url or opensearch_url(settings)
    if url is None:
        raise ProvisionError("the domain has no endpoint yet; run the domain step first",
                             resource=settings.domain_name)
    return _alert_state_step(settings, apply=True, url=url)


def _alert_state_step(settings: Settings, *, apply: bool, url: str | None) -> StepResult:
    """The state index behind the write alias the function uses (with ``require_alias``, so a
    write after teardown fails instead of auto-creating it)."""
    name = settings.alert_state_index
    detail = f"alert episode state, one document per athlete: {concrete_index(name)}, alias {name}"
    if url is None:
        return StepResult("alert state index", "created", name, None, "after the domain is active")
    client = _admin_opensearch(settings, url)
    found = _opensearch(name, "read index", client.indices.get, missing_ok=True, index=name)
    if found is None:
        if apply:
            _opensearch(name, "create index", client.indices.create,
                        index=concrete_index(name),
                        body={**alert_state_body(settings.prefix),
                              "aliases": {name: {"is_write_index": True}}})
        return StepResult("alert state index", "created", name, None, detail)
    (index, concrete), *_ = found.items()
    owner = _owner(concrete.get("mappings"))
    if index == name or owner != settings.prefix:
        raise _not_ours("index", name, owner if index != name else None, settings.prefix)
    return StepResult("alert state index", "unchanged", name, None, detail)


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


def _owner(mappings: Mapping[str, Any] | None) -> str | None:
    return ((mappings or {}).get("_meta") or {}).get(OWNER_META)


def _not_ours(kind: str, name: str, owner: str | None, prefix: str) -> ProvisionError:
    found = f"owned by prefix {owner!r}" if owner else "not made by hrnb set-up"
    return ProvisionError(
        f"{kind} {name} already exists, {found}; choose another prefix or index name "
        "(HRNB_PREFIX, HRNB_INDEX_NAME), or reindex and delete it yourself",
        resource=name,
    )


def _template(client: OpenSearch, name: str, body: Mapping[str, Any], prefix: str, *,
              apply: bool) -> StepResult:
    found = _opensearch(name, "read index template", client.indices.get_index_template,
                        missing_ok=True, name=name)
    templates = (found or {}).get("index_templates", [])
    if templates:
        current = templates[0]["index_template"]
        owner = _owner(current.get("template", {}).get("mappings"))
        if owner != prefix:
            raise _not_ours("index template", name, owner, prefix)
        if template_matches(current, body):
            return StepResult("index template", "unchanged", name, None,
                              f"pattern {', '.join(body['index_patterns'])}")
    if apply:
        _opensearch(name, "write index template", client.indices.put_index_template, name=name,
                    body=body)
    return StepResult("index template", "updated" if templates else "created", name, None,
                      f"pattern {', '.join(body['index_patterns'])}, replicas 0")


def _index(client: OpenSearch, alias: str, body: Mapping[str, Any], prefix: str, *,
           apply: bool) -> StepResult:
    desired = body["template"]["mappings"]["properties"]
    found = _opensearch(alias, "read index", client.indices.get, missing_ok=True, index=alias)
    if found is None:
        if apply:
            # The template supplies mapping and settings; the alias is where the function writes.
            _opensearch(alias, "create index", client.indices.create,
                        index=concrete_index(alias),
                        body={"aliases": {alias: {"is_write_index": True}}})
        return StepResult("index", "created", alias, None,
                          f"{concrete_index(alias)} from its template, write alias {alias}")
    (index, concrete), *_ = found.items()
    if index == alias:
        raise ProvisionError(
            f"index {alias} exists as an index, not set-up's write alias (auto-created by a "
            "write, or by an earlier hrnb); its mapping cannot be trusted: reindex it into "
            "another name or delete it, then run set-up again",
            resource=alias,
        )
    owner = _owner(concrete.get("mappings"))
    if owner != prefix:
        raise _not_ours("index", alias, owner, prefix)
    current = concrete.get("mappings", {}).get("properties", {})
    clashes = [f"{field_name} is {current[field_name].get('type')}, needs {spec.get('type')}"
               for field_name, spec in desired.items()
               if field_name in current and current[field_name].get("type") != spec.get("type")]
    if clashes:
        raise ProvisionError(
            f"index {alias} exists with an incompatible mapping ({'; '.join(clashes)}); "
            "reindex it or delete it, then run set-up again",
            resource=alias,
        )
    changes = []
    missing = {name: spec for name, spec in desired.items() if name not in current}
    if missing:
        changes.append("added fields " + ", ".join(sorted(missing)))
        if apply:
            _opensearch(index, "extend mapping of index", client.indices.put_mapping,
                        index=index, body={"properties": missing})
    replicas = concrete["settings"]["index"].get("number_of_replicas")
    if str(replicas) != "0":
        changes.append(f"replicas {replicas} -> 0 (one node: green, not yellow)")
        if apply:
            _opensearch(index, "set replicas of index", client.indices.put_settings, index=index,
                        body={"index": {"number_of_replicas": 0}})
    if changes:
        return StepResult("index", "updated", alias, None, "; ".join(changes))
    return StepResult("index", "unchanged", alias, None, "mapping and replicas as desired")


def _teardown_indices(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    """Delete the indices and templates this prefix's set-up made (their ``_meta`` owner), and
    nothing else: another prefix's, or one nobody set up, is left with a note."""
    aliases = (settings.index_name, settings.dlq_index_name)
    if not settings.is_local:
        return [StepResult("index", "skipped", alias, None, "deleted with the domain")
                for alias in (*aliases, settings.alert_state_index)]
    client = _admin_opensearch(settings, settings.resolved_opensearch_url or "")
    prefix = settings.prefix
    results = [_teardown_alert_state(settings, client, apply=apply)]
    for alias in aliases:
        found = _opensearch(alias, "read index", client.indices.get, missing_ok=True,
                            index=alias) or {}
        if not found:
            results.append(StepResult("index", "absent", alias))
        for index, concrete in found.items():
            owner = _owner(concrete.get("mappings"))
            if owner != prefix:
                results.append(StepResult("index", "skipped", index, None,
                                          f"not made by set-up for prefix {prefix!r}; left alone"))
                continue
            if apply:
                _opensearch(index, "delete index", client.indices.delete, index=index)
            results.append(StepResult("index", "deleted", alias, None, index))
        template = template_name(alias)
        stored = _opensearch(template, "read index template", client.indices.get_index_template,
                             missing_ok=True, name=template)
        templates = (stored or {}).get("index_templates", [])
        if not templates:
            results.append(StepResult("index template", "absent", template))
            continue
        owner = _owner(templates[0]["index_template"].get("template", {}).get("mappings"))
        if owner != prefix:
            results.append(StepResult("index template", "skipped", template, None,
                                      f"not made by set-up for prefix {prefix!r}; left alone"))
            continue
        if apply:
            _opensearch(template, "delete index template", client.indices.delete_index_template,
                        name=template)
        results.append(StepResult("index template", "deleted", template))
    return results


def _teardown_alert_state(settings: Settings, client: OpenSearch, *, apply: bool) -> StepResult:
    name = settings.alert_state_index
    found = _opensearch(name, "read index", client.indices.get, missing_ok=True, index=name)
    if not found:
        return StepResult("alert state index", "absent", name)
    (index, concrete), *_ = found.items()
    if _owner(concrete.get("mappings")) != settings.prefix:
        return StepResult("alert state index", "skipped", index, None,
                          f"not made by set-up for prefix {settings.prefix!r}; left alone")
    if apply:
        _opensearch(index, "delete index", client.indices.delete, index=index)
    return StepResult("alert state index", "deleted", name, None, index)
