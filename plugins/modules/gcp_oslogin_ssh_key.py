#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: register an SSH public key with OS Login for the calling identity."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_oslogin_ssh_key
short_description: Register an SSH public key with OS Login and return the POSIX user name
description:
  - With OS Login, SSH users and keys come from Google identities. This module adds O(public_key)
    to the login profile of O(user) (by default the identity whose credentials are used) and
    returns the POSIX user name that Ansible must log in as.
  - Idempotent (a key already in the profile is not added again); supports check mode.
  - The identity needs roles/compute.osAdminLogin (sudo) on the project; Owners have it.
options:
  project:
    description: Project ID the POSIX account is created for.
    type: str
    required: true
  public_key:
    description: The OpenSSH public key line.
    type: str
    required: true
  user:
    description: E-mail of the Google identity; empty means the identity of the credentials.
    type: str
    default: ""
extends_documentation_fragment: [gcp_auth]
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Register my key with OS Login
  gcp_oslogin_ssh_key:
    project: my-project
    public_key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
  register: oslogin
"""

RETURN = r"""
username:
  description: POSIX user name to log in as.
  type: str
  returned: success
user:
  description: E-mail of the identity.
  type: str
  returned: success
"""

from typing import Any
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gcp_rest import AUTH_ARGUMENT_SPEC, OSLOGIN, GcpApiError, GcpClient, client_from_params, error_result

USERINFO = "https://openidconnect.googleapis.com/v1/userinfo"


def _key_body(key: str) -> str:
    """The type and base64 parts of an OpenSSH key line (the comment does not matter)."""
    return " ".join(key.split()[:2])


def username_of(profile: dict[str, Any], project: str) -> str:
    accounts = profile.get("posixAccounts") or []
    chosen = next((a for a in accounts if a.get("primary")), None) or next(
        (a for a in accounts if str(a.get("accountId")) == project), None) or (accounts[0] if accounts else None)
    return str((chosen or {}).get("username") or "")


def identity_email(client: GcpClient, params: dict[str, Any]) -> str:
    if params.get("user"):
        return str(params["user"])
    creds = getattr(client.session, "credentials", None)
    email = getattr(creds, "service_account_email", None)
    if email and email != "default":
        return str(email)
    info = client.get(USERINFO)
    if not info.get("email"):
        raise RuntimeError("Cannot tell which Google account the credentials belong to: set gcp_oslogin_user to its e-mail.")
    return str(info["email"])


def run(params: dict[str, Any], client: GcpClient, check_mode: bool) -> dict[str, Any]:
    key = params["public_key"].strip()
    if not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise RuntimeError("public_key is not an OpenSSH public key line (ssh-ed25519 AAAA... comment): check gcp_ssh_private_key_file and its .pub.")
    user = identity_email(client, params)
    base = f"{OSLOGIN}/users/{quote(user, safe='@')}"
    profile = client.get(f"{base}/loginProfile", params={"projectId": params["project"]}) or {}
    known = {_key_body(str(k.get("key", ""))) for k in (profile.get("sshPublicKeys") or {}).values()}
    if _key_body(key) in known and username_of(profile, params["project"]):
        return {"changed": False, "user": user, "username": username_of(profile, params["project"])}
    if check_mode:
        return {"changed": True, "user": user, "username": username_of(profile, params["project"])}
    result = client.request("POST", f"{base}:importSshPublicKey", body={"key": key}, params={"projectId": params["project"]})
    new_profile = result.get("loginProfile") or {}
    username = username_of(new_profile, params["project"]) or username_of(profile, params["project"])
    if not username:
        raise RuntimeError(f"OS Login created no POSIX account for {user}: grant it roles/compute.osAdminLogin on the project and rerun.")
    return {"changed": True, "user": user, "username": username}


def main() -> None:
    spec = dict(AUTH_ARGUMENT_SPEC)
    spec.update(public_key={"type": "str", "required": True}, user={"type": "str", "default": ""})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        result = run(module.params, client_from_params(module.params), module.check_mode)
    except (GcpApiError, RuntimeError) as exc:
        module.fail_json(**error_result(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
