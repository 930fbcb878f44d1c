#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: a Cloud Billing budget on the project, with e-mail alerts at set thresholds."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_billing_budget
short_description: Create, update, remove or check a Cloud Billing budget for one project
description:
  - Uses the Cloud Billing Budget API v1 (C(billingbudgets.googleapis.com), budgets.create, list,
    patch, delete). The budget covers one project and alerts at each threshold of
    O(amount) by e-mail to the billing account's administrators and users (the API's default
    recipients, C(notificationsRule.disableDefaultIamRecipients) left false).
  - The billing account is O(billing_account) or, when empty, the project's own one read with the
    Cloud Billing API (C(projects.getBillingInfo)).
  - The budget is found by its display name, so reruns change nothing and O(state=absent) removes it.
  - O(state=check) changes nothing; it reads the billing account and asks
    C(billingAccounts.testIamPermissions) whether the credentials may manage budgets there (they need
    roles/billing.costsManager or roles/billing.admin on the billing account).
options:
  project:
    description: Project ID the budget covers.
    type: str
    required: true
  billing_account:
    description: Billing account ID (C(012345-6789AB-CDEF01)); empty reads the project's own.
    type: str
    default: ""
  display_name:
    description: The budget's display name (at most 60 characters); how it is found again.
    type: str
    required: true
  amount:
    description: Budget amount in O(currency), whole units.
    type: int
    default: 0
  currency:
    description: Currency of the amount; must be the billing account's currency.
    type: str
    default: USD
  thresholds:
    description: Fractions of the amount that send an alert.
    type: list
    elements: float
    default: [0.5, 0.9, 1.0]
  state:
    description: C(present), C(absent), or C(check) (permissions only, no write).
    type: str
    choices: [present, absent, check]
    default: present
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Alert at 50/90/100 % of 300 USD
  gcp_billing_budget:
    project: my-project
    display_name: personaplex@my-project
    amount: 300
"""

RETURN = r"""
billing_account:
  description: The billing account ID used.
  type: str
  returned: success
budget:
  description: The budget as the API returns it (absent after a removal).
  type: dict
  returned: when it exists
actions:
  description: What was done (or would be done in check mode).
  type: list
  returned: success
ok:
  description: With O(state=check), whether the credentials may manage budgets on the account.
  type: bool
  returned: with state=check
message:
  description: With O(state=check), what was found and what to do.
  type: str
  returned: with state=check
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, GcpApiError, GcpClient, client_from_params, error_result

BILLING = "https://cloudbilling.googleapis.com/v1"
BUDGETS = "https://billingbudgets.googleapis.com/v1"
CRM = "https://cloudresourcemanager.googleapis.com/v1"
NEEDED = ["billing.budgets.create", "billing.budgets.delete", "billing.budgets.get", "billing.budgets.list", "billing.budgets.update"]
ROLE_HINT = (
    "Grant the deploying identity roles/billing.costsManager (or roles/billing.admin) on billing account {acct}: "
    "https://console.cloud.google.com/billing/{acct}/manage (Add principal), or leave gcp_budget_usd at 0 "
    "and set a budget by hand at https://console.cloud.google.com/billing/{acct}/budgets ."
)


def billing_account(client: GcpClient, project: str, given: str) -> str:
    if given:
        return given.removeprefix("billingAccounts/")
    info = client.get(f"{BILLING}/projects/{project}/billingInfo")
    if not info.get("billingEnabled") or not info.get("billingAccountName"):
        raise RuntimeError(f"Project {project} has no billing account linked: link one at "
                           f"https://console.cloud.google.com/billing/linkedaccount?project={project} , or set gcp_billing_account.")
    return str(info["billingAccountName"]).removeprefix("billingAccounts/")


def find(client: GcpClient, acct: str, display_name: str) -> dict[str, Any] | None:
    token = ""
    while True:
        page = client.get(f"{BUDGETS}/billingAccounts/{acct}/budgets", params={"pageToken": token} if token else None)
        for budget in page.get("budgets") or []:
            if budget.get("displayName") == display_name:
                return dict(budget)
        token = page.get("nextPageToken") or ""
        if not token:
            return None


def desired(params: dict[str, Any], project_number: str) -> dict[str, Any]:
    return {
        "displayName": params["display_name"],
        "budgetFilter": {"projects": [f"projects/{project_number}"]},
        "amount": {"specifiedAmount": {"currencyCode": params["currency"], "units": str(int(params["amount"]))}},
        "thresholdRules": [{"thresholdPercent": float(t), "spendBasis": "CURRENT_SPEND"} for t in params["thresholds"]],
    }


def differences(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    out = []
    have_amount = (have.get("amount") or {}).get("specifiedAmount") or {}
    want_amount = want["amount"]["specifiedAmount"]
    if str(have_amount.get("units")) != want_amount["units"] or have_amount.get("currencyCode") != want_amount["currencyCode"]:
        out.append("amount")
    have_rules = sorted(float(r.get("thresholdPercent", 0)) for r in have.get("thresholdRules") or [])
    if have_rules != sorted(r["thresholdPercent"] for r in want["thresholdRules"]):
        out.append("thresholdRules")
    if sorted((have.get("budgetFilter") or {}).get("projects") or []) != want["budgetFilter"]["projects"]:
        out.append("budgetFilter")
    return out


def run(params: dict[str, Any], client: GcpClient, check_mode: bool) -> dict[str, Any]:
    project = params["project"]
    if len(params["display_name"]) > 60:
        raise RuntimeError(f"display_name {params['display_name']!r} is longer than the 60 characters the Budget API accepts.")
    acct = billing_account(client, project, params["billing_account"])
    if params["state"] == "check":
        granted = client.post(f"{BILLING}/billingAccounts/{acct}:testIamPermissions", {"permissions": NEEDED}).get("permissions") or []
        missing = [p for p in NEEDED if p not in granted]
        if missing:
            return {"changed": False, "ok": False, "billing_account": acct, "actions": [],
                    "message": f"Billing account {acct}: the credentials lack {', '.join(missing)}. " + ROLE_HINT.format(acct=acct)}
        return {"changed": False, "ok": True, "billing_account": acct, "actions": [],
                "message": f"Billing account {acct}: the credentials may create and remove budgets."}
    try:
        current = find(client, acct, params["display_name"])
    except GcpApiError as exc:
        if exc.status == 403:
            raise RuntimeError(f"Cannot list the budgets of billing account {acct} ({exc.message}). " + ROLE_HINT.format(acct=acct)) from exc
        raise
    if params["state"] == "absent":
        if current is None:
            return {"changed": False, "billing_account": acct, "actions": []}
        if not check_mode:
            client.request("DELETE", f"{BUDGETS}/{current['name']}")
        return {"changed": True, "billing_account": acct, "actions": [f"delete budget {current['name']}"]}
    if int(params["amount"]) <= 0:
        raise RuntimeError("amount must be a whole number above 0 (gcp_budget_usd), e.g. 300.")
    number = str(client.get(f"{CRM}/projects/{project}").get("projectNumber") or "")
    if not number:
        raise RuntimeError(f"Could not read the project number of {project} (Resource Manager projects.get).")
    want = desired(params, number)
    if current is None:
        if check_mode:
            return {"changed": True, "billing_account": acct, "actions": ["create budget"], "budget": want}
        try:
            made = client.post(f"{BUDGETS}/billingAccounts/{acct}/budgets", want)
        except GcpApiError as exc:
            if exc.status == 403:
                raise RuntimeError(f"Cannot create a budget on billing account {acct} ({exc.message}). " + ROLE_HINT.format(acct=acct)) from exc
            raise
        return {"changed": True, "billing_account": acct, "actions": [f"create budget {made.get('name')}"], "budget": made}
    diffs = differences(want, current)
    if not diffs:
        return {"changed": False, "billing_account": acct, "actions": [], "budget": current}
    if check_mode:
        return {"changed": True, "billing_account": acct, "actions": ["update " + ", ".join(diffs)], "budget": current}
    body = {k: v for k, v in want.items() if k in diffs}
    body["etag"] = current.get("etag", "")
    updated = client.request("PATCH", f"{BUDGETS}/{current['name']}", body=body, params={"updateMask": ",".join(diffs)})
    return {"changed": True, "billing_account": acct, "actions": ["update " + ", ".join(diffs)], "budget": updated}


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(
        billing_account={"type": "str", "default": ""},
        display_name={"type": "str", "required": True},
        amount={"type": "int", "default": 0},
        currency={"type": "str", "default": "USD"},
        thresholds={"type": "list", "elements": "float", "default": [0.5, 0.9, 1.0]},
        state={"type": "str", "default": "present", "choices": ["present", "absent", "check"]},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = run(module.params, client_from_params(module.params), module.check_mode)
    except (GcpApiError, RuntimeError, TimeoutError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
