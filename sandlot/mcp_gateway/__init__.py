"""The MCP gateway that runs *inside* ``mcp-gateway`` sandboxes (``Sandbox.create(mcp=...)``).

The E2B SDK runs ``mcp-gateway --config '<JSON>'`` as root after the create; this package
is that command: it starts the configured MCP servers (stdio, from npm or PyPI packages
installed in the template or on demand, or a public GitHub repository), aggregates their
tools and serves them over MCP streamable HTTP on port 50005 at ``/mcp`` behind the
``Authorization: Bearer`` token the SDK reads from ``/etc/mcp-gateway/.token``.

It imports nothing else of Sandlot: the host installs this directory into the envd runtime
(``sandlot/templates/mcp_gateway.py``) and the template's ``mcp-gateway`` command runs it under
the template venv's Python, which has the ``mcp`` package.
"""
