"""swarmray as an MCP server: every capability of the system's swarms as an MCP tool on `/mcp`."""
