"""OpenSearch Dashboards saved objects for the heart-rate index."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from hrnb.config import Settings
from hrnb.errors import ProvisionError
from hrnb.provision.base import Action, StepResult
from hrnb.provision.domain import opensearch_url
from hrnb.provision.role import covers
from hrnb.provision.security import _require_master_user

LOCAL_DASHBOARDS_URL = "http://127.0.0.1:5601"


# --- OpenSearch Dashboards -----------------------------------------------------------------------
DASHBOARDS_FILE = "dashboards.ndjson"


def dashboards_objects(settings: Settings) -> list[dict[str, Any]]:
    """The saved objects from ``hrnb/provision/data/dashboards.ndjson`` with this settings' index
    pattern and alert threshold filled in (pure)."""
    text = resources.files("hrnb.provision").joinpath("data", DASHBOARDS_FILE).read_text()
    objects = [json.loads(line) for line in text.splitlines() if line.strip()]
    for obj in objects:
        attributes = obj["attributes"]
        if obj["type"] == "index-pattern":
            attributes["title"] = f"{settings.index_name}*"
        elif obj["type"] == "visualization":
            vis_state = json.loads(attributes["visState"])
            vis_state["params"]["thresholdLine"]["value"] = settings.hr_alert_threshold_bpm
            attributes["visState"] = json.dumps(vis_state, separators=(",", ":"))
    return objects


def dashboards_url(settings: Settings, url: str | None) -> str | None:
    """OpenSearch Dashboards: beside the local node, or ``/_dashboards`` on the domain."""
    if settings.is_local:
        return LOCAL_DASHBOARDS_URL
    return f"{url}/_dashboards" if url else None


def ensure_dashboards(settings: Settings, *, url: str | None = None,
                      dashboards: str | None = None) -> StepResult:
    """Import the index pattern, the heart-rate chart and the dashboard when Dashboards answers;
    skipped, with the reason, when it does not."""
    target = dashboards or dashboards_url(settings, url or opensearch_url(settings))
    return _dashboards_step(settings, apply=True, dashboards=target)


def _dashboards_step(settings: Settings, *, apply: bool, dashboards: str | None) -> StepResult:
    import requests

    resource = "heart-rate dashboard"
    if dashboards is None:
        return StepResult("dashboards", "created", resource, None, "after the domain is active")
    session = requests.Session()
    session.headers["osd-xsrf"] = "true"
    if not settings.is_local:
        master = _require_master_user(settings)
        session.auth = (master.username, master.password)
        session.headers["securitytenant"] = "global"  # shared with every Dashboards user
    try:
        session.get(f"{dashboards}/api/status", timeout=3).raise_for_status()
    except requests.RequestException as exc:
        return StepResult("dashboards", "skipped", resource, dashboards,
                          f"OpenSearch Dashboards not reachable ({type(exc).__name__}); run "
                          "set-up again when it runs, or import "
                          f"hrnb/provision/data/{DASHBOARDS_FILE} "
                          "under Dashboards Management > Saved objects")
    objects = dashboards_objects(settings)
    try:
        current = session.post(
            f"{dashboards}/api/saved_objects/_bulk_get",
            json=[{"type": obj["type"], "id": obj["id"]} for obj in objects], timeout=10,
        )
        current.raise_for_status()
        stored = {(obj["type"], obj["id"]): obj.get("attributes")
                  for obj in current.json()["saved_objects"]}
        if all(covers(stored.get((obj["type"], obj["id"])), obj["attributes"])
               for obj in objects):
            return StepResult("dashboards", "unchanged", resource, dashboards,
                              f"{len(objects)} saved objects")
        action: Action = "updated" if any(stored.values()) else "created"
        if apply:
            ndjson = "".join(json.dumps(obj) + "\n" for obj in objects)
            response = session.post(
                f"{dashboards}/api/saved_objects/_import", params={"overwrite": "true"},
                files={"file": (DASHBOARDS_FILE, ndjson, "application/ndjson")}, timeout=30,
            )
            response.raise_for_status()
            if not response.json().get("success"):
                raise ProvisionError(f"Dashboards rejected the import: {response.text[:500]}",
                                     resource=resource)
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise ProvisionError(f"cannot import the dashboards into {dashboards}: {exc}",
                             resource=resource) from exc
    return StepResult("dashboards", action, resource, dashboards,
                      f"{len(objects)} saved objects (index pattern {settings.index_name}*)")

