"""PersonaPlex voice server: real-time full-duplex speech over the official WebSocket protocol.

Importing this package does no work; see :func:`personaplex_server.app.create_app` and the
``personaplex-server`` command (:mod:`personaplex_server.cli`).
"""

__version__ = "0.1.0"
