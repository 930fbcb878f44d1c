#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: validate the fleet settings and build every fleet resource and its cost (no API call)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_fleet_plan
short_description: The fleet's desired state and cost at min and max instances (offline)
description:
  - Validates the C(gcp_fleet_*) settings (failing with every problem and the accepted values) and
    returns the REST body of each fleet resource in creation order (plugins/module_utils/gcp_fleet.py).
  - Makes no API call and changes nothing.
options:
  plan:
    description: The single-VM plan from gcp_deployment_plan (project, region, labels, marker).
    type: dict
    required: true
  profile:
    description: The chosen profile's row of gcp_infra_profiles.
    type: dict
    required: true
  fleet:
    description: The fleet settings (gcp_fleet_* without the prefix).
    type: dict
    required: true
  prices:
    description: gcp_infra_prices.
    type: dict
    required: true
  fleet_prices:
    description: gcp_fleet_prices (load balancer, Cloud Armor, image storage).
    type: dict
    required: true
  require_certificate:
    description: Fail without a domain or a self-managed certificate (false for plan and check mode).
    type: bool
    default: true
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Build the fleet
  gcp_fleet_plan:
    plan: "{{ gcp_infra_plan }}"
    profile: "{{ gcp_infra_profile }}"
    fleet: "{{ gcp_fleet_settings }}"
    prices: "{{ gcp_infra_prices }}"
    fleet_prices: "{{ gcp_fleet_prices }}"
"""

RETURN = r"""
fleet:
  description: names, zones, capacity and resources (kind, name, collection, body, update) in creation order.
  type: dict
  returned: success
cost:
  description: USD per hour and month at min and at max instances.
  type: dict
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_fleet import FleetSettingsError, build_fleet, fleet_cost


def main() -> None:
    module = AnsibleModule(argument_spec={
        "plan": {"type": "dict", "required": True},
        "profile": {"type": "dict", "required": True},
        "fleet": {"type": "dict", "required": True},
        "prices": {"type": "dict", "required": True},
        "fleet_prices": {"type": "dict", "required": True},
        "require_certificate": {"type": "bool", "default": True},
    }, supports_check_mode=True)
    p = module.params
    try:
        fleet = build_fleet(p["plan"], p["profile"], p["fleet"], require_certificate=p["require_certificate"])
    except FleetSettingsError as exc:
        module.fail_json(msg=str(exc))
    cost = fleet_cost(p["prices"], p["fleet_prices"], p["plan"]["profile"], bool(p["plan"].get("spot")),
                      str(p["fleet"]["disk_type"]), int(p["fleet"]["disk_size_gb"]), fleet["min_instances"],
                      fleet["max_instances"], float(p["fleet_prices"]["image_gb"]))
    module.exit_json(changed=False, fleet=fleet, cost=cost)


if __name__ == "__main__":
    main()
