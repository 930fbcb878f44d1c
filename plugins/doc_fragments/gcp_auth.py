# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Documentation of the credential options every project GCP module shares.

The options themselves are defined once, as AUTH_ARGUMENT_SPEC in module_utils/gcp_rest.py; modules pull this
text in with `extends_documentation_fragment: [gcp_auth]`.
"""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  auth_kind:
    description: Credentials kind.
    type: str
    choices: [application, serviceaccount, machineaccount, accesstoken]
    default: application
  service_account_file:
    description: Service-account JSON key file (O(auth_kind=serviceaccount)).
    type: path
  access_token:
    description: OAuth access token (O(auth_kind=accesstoken)).
    type: str
  scopes:
    description: OAuth scopes.
    type: list
    elements: str
    default: [https://www.googleapis.com/auth/cloud-platform]
  request_timeout:
    description: Seconds per HTTP request.
    type: int
    default: 60
"""
