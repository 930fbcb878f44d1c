"""Test-only: send requests for *.googleapis.com to the fake API server (tests/standins/fake_gcp.py).

Active only when FAKE_GCP_URL is set; put this folder on PYTHONPATH so that every Python
process Ansible starts (modules included) loads it. The request itself is unchanged except for
its destination: https://HOST/PATH becomes FAKE_GCP_URL/HOST/PATH.
"""

import os

_FAKE = os.environ.get("FAKE_GCP_URL")

if _FAKE:
    try:
        import requests.adapters
    except ImportError:  # a Python without requests never talks to Google anyway
        pass
    else:
        from urllib.parse import urlsplit

        _send = requests.adapters.HTTPAdapter.send

        def _send_to_fake(self, request, *args, **kwargs):
            parts = urlsplit(request.url)
            if parts.hostname and parts.hostname.endswith("googleapis.com"):
                request.url = f"{_FAKE}/{parts.hostname}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            return _send(self, request, *args, **kwargs)

        requests.adapters.HTTPAdapter.send = _send_to_fake
