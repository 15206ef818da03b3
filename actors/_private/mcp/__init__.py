"""Remote MCP servers federated as capabilities: their config, the upstream clients (HTTP and
stdio), the `Federation` (tool cache, pins, router) and its actor, and the agent that calls it."""
