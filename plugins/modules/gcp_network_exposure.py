#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: list the firewall rules of a network that open given ports to the whole Internet. Read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_network_exposure
short_description: Find firewall rules that open SSH, RDP or the voice port to 0.0.0.0/0 (read-only)
description:
  - Reads the network and every firewall rule of the project (GET calls only).
  - A rule counts when it is an enabled INGRESS allow rule of O(network), has C(0.0.0.0/0) (or
    C(::/0)) among its sources, applies to every instance (no target tags or service accounts) or
    to one of O(target_tags), and allows TCP on one of O(ports) (a rule without ports allows all).
  - Rules carrying this deployment's O(marker) are left out (their sources are the configured CIDRs).
  - Fails, listing each rule and what to do, unless O(accept_open_rules=true).
  - A project's C(default) network comes with C(default-allow-ssh) and C(default-allow-rdp) open to
    0.0.0.0/0 (https://cloud.google.com/firewall/docs/firewalls#more_rules_default_vpc).
options:
  network:
    description: Network name.
    type: str
    required: true
  ports:
    description: TCP ports that must not be open to the world.
    type: list
    elements: int
    default: [22, 3389, 8998]
  target_tags:
    description: Network tags of the VM (rules targeting them also apply to it).
    type: list
    elements: str
    default: []
  marker:
    description: Marker of this deployment's own rules (left out).
    type: str
    default: ""
  accept_open_rules:
    description: Report the rules without failing.
    type: bool
    default: false
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Check the default network
  gcp_network_exposure:
    project: my-project
    network: default
"""

RETURN = r"""
open_rules:
  description: The rules found (name, ports, source_ranges, targets).
  type: list
  returned: success
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, COMPUTE, GcpApiError, GcpClient, client_from_params, error_result
from ansible.module_utils.gcp_settings import parse_marker

WORLD = ("0.0.0.0/0", "::/0")


def _port_open(allowed: list[dict[str, Any]], port: int) -> bool:
    for rule in allowed or []:
        if str(rule.get("IPProtocol", "")).lower() not in ("tcp", "all", "6"):
            continue
        ports = rule.get("ports") or []
        if not ports:  # no ports: every port of the protocol
            return True
        for spec in ports:
            low, _, high = str(spec).partition("-")
            if int(low) <= port <= int(high or low):
                return True
    return False


def open_rules(firewalls: list[dict[str, Any]], network: str, ports: list[int], tags: list[str], marker: str) -> list[dict[str, Any]]:
    found = []
    for fw in firewalls:
        if str(fw.get("network", "")).rstrip("/").rsplit("/", 1)[-1] != network or fw.get("disabled"):
            continue
        if fw.get("direction", "INGRESS") != "INGRESS" or not any(src in WORLD for src in fw.get("sourceRanges") or []):
            continue
        if marker and parse_marker(fw.get("description")) == parse_marker(marker):
            continue
        targets = list(fw.get("targetTags") or []) + list(fw.get("targetServiceAccounts") or [])
        if targets and not set(fw.get("targetTags") or []) & set(tags):
            continue
        hit = [p for p in ports if _port_open(fw.get("allowed") or [], p)]
        if hit:
            found.append({"name": fw["name"], "ports": hit, "source_ranges": fw.get("sourceRanges"),
                          "targets": targets or ["all instances"]})
    return sorted(found, key=lambda r: r["name"])


def run(params: dict[str, Any], client: GcpClient) -> dict[str, Any]:
    project, network = params["project"], params["network"]
    if client.get(f"{COMPUTE}/projects/{project}/global/networks/{network}", allow_404=True) is None:
        raise RuntimeError(
            f"Network {network!r} does not exist in project {project} (a project created with 'Compute Engine API' off, or "
            "whose default network was deleted, has none). Leave gcp_network_name at its default so the deployment creates "
            "a network of its own, or create the network and rerun."
        )
    firewalls: list[dict[str, Any]] = []
    query: dict[str, Any] = {}
    while True:
        doc = client.get(f"{COMPUTE}/projects/{project}/global/firewalls", params=query) or {}
        firewalls.extend(doc.get("items") or [])
        if not doc.get("nextPageToken"):
            break
        query["pageToken"] = doc["nextPageToken"]
    rules = open_rules(firewalls, network, [int(p) for p in params["ports"]], params["target_tags"], params["marker"])
    return {"changed": False, "open_rules": rules}


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        network={"type": "str", "required": True},
        ports={"type": "list", "elements": "int", "default": [22, 3389, 8998]},
        target_tags={"type": "list", "elements": "str", "default": []},
        marker={"type": "str", "default": ""},
        accept_open_rules={"type": "bool", "default": False},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = run(module.params, client_from_params(module.params))
    except (GcpApiError, RuntimeError) as exc:
        module.fail_json(**error_result(exc))
    lines = [f"{r['name']}: tcp {', '.join(map(str, r['ports']))} from {', '.join(r['source_ranges'])} to {', '.join(r['targets'])}"
             for r in result["open_rules"]]
    if lines and not module.params["accept_open_rules"]:
        module.fail_json(
            msg=(f"Network {module.params['network']} has firewall rules that open SSH, RDP or the voice port to the whole Internet:\n- "
                 + "\n- ".join(lines) + "\nThe VM would be reachable through them whatever gcp_admin_cidrs says. Either use a network "
                 "of the deployment's own (remove gcp_network_name: default), or delete/restrict those rules (e.g. gcloud compute "
                 f"firewall-rules delete {' '.join(r['name'] for r in result['open_rules'])}), or set "
                 "gcp_accept_default_network_rules: true to accept them."),
            **result,
        )
    for line in lines:
        module.warn(f"Open to the whole Internet (accepted by gcp_accept_default_network_rules): {line}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
