"""Tools an agent may call: the registry of built-ins (``registry``), the rows the admin
edits (``models``: tools and MCP servers), and the service that lists the tools a
principal may use and calls one (``service``)."""
