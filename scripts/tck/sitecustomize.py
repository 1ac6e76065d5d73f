"""Gives the A2A TCK's HTTP clients a bearer token and a CA, for a run through a2a's gateway.

The TCK (`run_tck.py`) has no option for credentials or a private CA; scripts/tck.sh puts this
directory on PYTHONPATH when it targets the gateway, so every httpx client the TCK makes sends
`Authorization: Bearer $A2A_TCK_BEARER` and verifies TLS with the CA file $A2A_TCK_CA. Nothing
else of the TCK changes.
"""

import os
import ssl

try:
    import httpx
except ImportError:  # not the TCK's interpreter
    httpx = None

_token = os.environ.get("A2A_TCK_BEARER")
_ca = os.environ.get("A2A_TCK_CA")

if httpx is not None and _token:
    _context = ssl.create_default_context(cafile=_ca) if _ca else None

    def _wrap(cls):
        original = cls.__init__

        def __init__(self, *args, **kwargs):
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("Authorization", f"Bearer {_token}")
            kwargs["headers"] = headers
            if _context is not None and kwargs.get("verify", True) is True:
                kwargs["verify"] = _context
            original(self, *args, **kwargs)

        cls.__init__ = __init__

    _wrap(httpx.Client)
    _wrap(httpx.AsyncClient)
