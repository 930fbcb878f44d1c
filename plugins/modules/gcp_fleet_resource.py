#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: one Compute Engine resource of the fleet, created or brought to the desired body."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_fleet_resource
short_description: Create, update or delete one Compute Engine v1 resource from its REST body
description:
  - GETs C(collection)/C(name). Absent -> POST the body (insert). Present -> compare the body with
    what exists (only the fields given; links compared whatever their form); when something differs
    it is patched the way the API documents for that collection (C(update)), with the resource's
    current fingerprint where the API requires one (optimistic locking, HTTP 412 otherwise).
  - C(update=immutable) fails with what to do when an existing resource differs (templates,
    certificates, addresses and forwarding rules cannot be changed in place).
  - C(update=rules) (Cloud Armor security policies) changes rules with addRule/patchRule/removeRule,
    as PATCH cannot change rules.
  - Check mode reads only and reports what would change.
options:
  collection:
    description: Collection path below compute/v1, e.g. C(projects/P/global/healthChecks).
    type: str
    required: true
  name:
    description: Resource name.
    type: str
    required: true
  body:
    description: The resource in the API's JSON shape (required with state=present).
    type: dict
    default: {}
  update:
    description: How an existing resource that differs is updated.
    type: str
    choices: [patch, immutable, rules]
    default: patch
  ignore:
    description: Top-level fields set at insert only (e.g. a group's targetSize, owned by the autoscaler).
    type: list
    elements: str
    default: []
  write_only:
    description: Fields the API never returns (e.g. a certificate's privateKey); not compared, never returned.
    type: list
    elements: str
    default: []
  patch_query:
    description: When set, PATCH goes to the collection with this query parameter naming the resource (regionAutoscalers).
    type: str
  actions:
    description: Output-only fields set by their own verb, as field -> [verb, value] (backendServices setSecurityPolicy).
    type: dict
    default: {}
  state:
    description: present or absent.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Health check on /readyz
  gcp_fleet_resource:
    project: my-project
    collection: projects/my-project/global/healthChecks
    name: personaplex-fleet-hc
    body: {name: personaplex-fleet-hc, type: HTTPS, httpsHealthCheck: {port: 8998, requestPath: /readyz}}
"""

RETURN = r"""
action:
  description: created, updated, unchanged, deleted or absent.
  type: str
  returned: success
differences:
  description: Dotted paths of the fields that differed (before an update).
  type: list
  returned: success
resource:
  description: The resource after the call (write-only fields removed).
  type: dict
  returned: success
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, COMPUTE, GcpApiError, GcpClient, GcpOperationError, client_from_params, error_result

FINGERPRINTED = ("/urlMaps", "/backendServices", "/securityPolicies", "/targetHttpsProxies", "/instanceGroupManagers")


def norm(value: Any, project: str) -> Any:
    """Links in any form (full URL, projects/..., global/...) compared as projects/P/..."""
    if isinstance(value, str):
        if "/compute/v1/" in value:
            value = value.split("/compute/v1/", 1)[1]
        if value.startswith(("global/", "regions/", "zones/")):
            value = f"projects/{project}/{value}"
    return value


def diff(want: Any, have: Any, project: str, path: str = "") -> list[str]:
    """Paths where `want` is not contained in `have` (dicts: only the keys wanted)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in want.items():
            out += diff(value, have.get(key), project, f"{path}.{key}" if path else key)
        return out
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return [path]
        out = []
        for i, (w, h) in enumerate(zip(want, have)):
            out += diff(w, h, project, f"{path}[{i}]")
        return out
    if isinstance(want, (int, float)) and not isinstance(want, bool) and isinstance(have, (int, float, str)) and not isinstance(have, bool):
        try:
            return [] if float(want) == float(have) else [path]
        except ValueError:
            return [path]
    if want is None:
        return []
    return [] if norm(want, project) == norm(have, project) else [path]


def run(params: dict[str, Any], client: GcpClient, check: bool) -> dict[str, Any]:
    project = params["project"]
    base = f"{COMPUTE}/{params['collection']}"
    url = f"{base}/{params['name']}"
    hidden = set(params["write_only"])

    def shown(res: Any) -> dict[str, Any]:
        return {k: v for k, v in (res or {}).items() if k not in hidden}

    def wait(op: Any) -> None:
        if isinstance(op, dict) and op.get("kind") == "compute#operation":
            client.wait_operation(op)

    have = client.get(url, allow_404=True)
    if params["state"] == "absent":
        if not have:
            return {"changed": False, "action": "absent", "differences": [], "resource": {}}
        if not check:
            wait(client.request("DELETE", url))
        return {"changed": True, "action": "deleted", "differences": [], "resource": shown(have)}

    body = dict(params["body"])
    if body.get("name") != params["name"]:
        raise ValueError(f"body.name ({body.get('name')!r}) must equal name ({params['name']!r}).")
    if not have:
        if not check:
            wait(client.post(base, body))
            have = client.get(url)
            _actions(params, client, have, project, url, check)
            have = client.get(url)
        return {"changed": True, "action": "created", "differences": [], "resource": shown(have if not check else body)}

    skip = set(params["ignore"]) | hidden | {"rules"} if params["update"] == "rules" else set(params["ignore"]) | hidden
    wanted = {k: v for k, v in body.items() if k not in skip}
    differences = diff(wanted, have, project)
    rule_calls = _rule_calls(body.get("rules") or [], have.get("rules") or [], project) if params["update"] == "rules" else []
    differences += [f"rules[priority={p}]" for _, p, _ in rule_calls]
    action_calls = _actions(params, client, have, project, url, check=True)
    differences += [f"{f} (via {v})" for f, v in action_calls]
    if not differences:
        return {"changed": False, "action": "unchanged", "differences": [], "resource": shown(have)}
    if params["update"] == "immutable" and diff(wanted, have, project):
        raise ValueError(
            f"{params['name']} exists and differs in {', '.join(diff(wanted, have, project))}; this kind of resource cannot be "
            "changed in place. Delete it (make teardown, or the console) and rerun, or restore the previous setting.")
    if not check:
        if diff(wanted, have, project):
            patch = dict(wanted)
            if any(params["collection"].endswith(c) for c in FINGERPRINTED) and have.get("fingerprint"):
                patch["fingerprint"] = have["fingerprint"]
            if params.get("patch_query"):
                wait(client.request("PATCH", base, body=patch, params={params["patch_query"]: params["name"]}))
            else:
                wait(client.request("PATCH", url, body=patch))
        for verb, priority, rule in rule_calls:
            wait(client.request("POST", f"{url}/{verb}", body=rule, params=None if verb == "addRule" else {"priority": priority}))
        _actions(params, client, client.get(url), project, url, check=False)
        have = client.get(url)
    return {"changed": True, "action": "updated", "differences": differences, "resource": shown(have)}


def _rule_calls(want: list[dict[str, Any]], have: list[dict[str, Any]], project: str) -> list[tuple[str, int, dict[str, Any]]]:
    """Cloud Armor rules, keyed by priority: addRule, patchRule or removeRule."""
    have_by = {int(r["priority"]): r for r in have}
    want_by = {int(r["priority"]): r for r in want}
    calls: list[tuple[str, int, dict[str, Any]]] = []
    for prio, rule in sorted(want_by.items()):
        if prio not in have_by:
            calls.append(("addRule", prio, rule))
        elif diff(rule, have_by[prio], project):
            calls.append(("patchRule", prio, rule))
    calls += [("removeRule", prio, {}) for prio in sorted(have_by) if prio not in want_by]
    return calls


def _actions(params: dict[str, Any], client: GcpClient, have: dict[str, Any], project: str, url: str, check: bool) -> list[tuple[str, str]]:
    pending = []
    for field, (verb, value) in (params.get("actions") or {}).items():
        if norm(have.get(field), project) != norm(value, project):
            pending.append((field, verb))
            if not check:
                op = client.post(f"{url}/{verb}", {field: value})
                if isinstance(op, dict) and op.get("kind") == "compute#operation":
                    client.wait_operation(op)
    return pending


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        collection={"type": "str", "required": True},
        name={"type": "str", "required": True},
        body={"type": "dict", "default": {}},
        update={"type": "str", "choices": ["patch", "immutable", "rules"], "default": "patch"},
        ignore={"type": "list", "elements": "str", "default": []},
        write_only={"type": "list", "elements": "str", "default": [], "no_log": False},
        patch_query={"type": "str"},
        actions={"type": "dict", "default": {}},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = run(module.params, client_from_params(module.params), module.check_mode)
    except (GcpApiError, GcpOperationError, RuntimeError, TimeoutError, ValueError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
