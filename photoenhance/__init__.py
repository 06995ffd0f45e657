"""The ``photoenhance`` command: runs the services, the embedded servers and the HTTP client."""
