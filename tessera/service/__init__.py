"""The read side: search, status and quarantine listings; the HTTP API, MCP server and web page.
No Prefect on this path."""
