#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible module: check the kind of credentials before any API call (offline, reads a local file only)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gcp_credentials_check
short_description: Say what the Application Default Credentials are and what they lack (no API call)
description:
  - With O(auth_kind=application), reads the ADC file (C(GOOGLE_APPLICATION_CREDENTIALS), else
    gcloud's C(application_default_credentials.json)).
  - User credentials (C(authorized_user), from C(gcloud auth application-default login)) without a
    C(quota_project_id) make client-based APIs such as Service Usage refuse every call
    (https://cloud.google.com/docs/authentication/adc-troubleshooting/user-creds); the module then
    fails with the exact command C(gcloud auth application-default set-quota-project PROJECT).
  - Makes no network call.
options:
  project:
    description: Project ID (named in the command to run).
    type: str
    required: true
  auth_kind:
    description: Credential kind in use.
    type: str
    default: application
  service_account_file:
    description: Key file (with O(auth_kind=serviceaccount)).
    type: path
author: PersonaPlex deployment project
"""

EXAMPLES = r"""
- name: Check the credentials
  gcp_credentials_check:
    project: my-project
"""

RETURN = r"""
kind:
  description: C(authorized_user), C(service_account), C(external_account), C(metadata) (no file) or C(access_token).
  type: str
  returned: success
quota_project:
  description: The quota project of user credentials (empty when none or not applicable).
  type: str
  returned: success
source:
  description: The file read, when one was.
  type: str
  returned: success
"""

import json
import os
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def adc_path(env: dict[str, str]) -> Path:
    """Where google-auth looks for ADC: the env variable, else gcloud's well-known file."""
    if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return Path(env["GOOGLE_APPLICATION_CREDENTIALS"]).expanduser()
    config = Path(env["CLOUDSDK_CONFIG"]).expanduser() if env.get("CLOUDSDK_CONFIG") else Path(env.get("HOME", "~")).expanduser() / ".config" / "gcloud"
    return config / "application_default_credentials.json"


def check(params: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    project = params["project"]
    if params["auth_kind"] == "accesstoken":
        return {"kind": "access_token", "quota_project": "", "source": ""}
    path = Path(params["service_account_file"]) if params["auth_kind"] == "serviceaccount" and params.get("service_account_file") else adc_path(env)
    if params["auth_kind"] == "machineaccount" or not path.is_file():
        return {"kind": "metadata", "quota_project": "", "source": ""}  # google-auth then tries the metadata server
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"Cannot read the credentials file {path}: {exc}. Run 'gcloud auth application-default login' again.") from exc
    kind = str(info.get("type") or "")
    quota = str(info.get("quota_project_id") or "")
    if kind == "authorized_user" and not quota:
        raise RuntimeError(
            f"Your Application Default Credentials ({path}) are user credentials without a quota project, so the Service "
            "Usage API refuses every call (it needs a project to bill quota to). Run:\n"
            f"  gcloud auth application-default set-quota-project {project}\n"
            "(you need serviceusage.services.use on that project, e.g. Owner or Editor), then rerun. Or use a service-account "
            "key: export GCP_SERVICE_ACCOUNT_FILE=/path/key.json."
        )
    return {"kind": kind, "quota_project": quota, "source": str(path)}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "project": {"type": "str", "required": True},
            "auth_kind": {"type": "str", "default": "application"},
            "service_account_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    try:
        result = check(module.params, dict(os.environ))
    except RuntimeError as exc:
        module.fail_json(msg=str(exc))
    if result["kind"] == "authorized_user" and result["quota_project"] != module.params["project"]:
        module.warn(f"API quota is billed to project {result['quota_project']}, not {module.params['project']} "
                    f"(gcloud auth application-default set-quota-project {module.params['project']} changes it).")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
