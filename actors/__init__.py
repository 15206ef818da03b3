"""Swarm actors: what agents are written against, the built-in agents, and swarm configuration.

Write an agent by subclassing `Agent` and name it in a pool's `agent.class`; `swarm up` creates
the meta registry, the queens, the agent pools and the health monitors for you (their actor
classes live in `actors._private`). A task is a `Task`; its outcome a `TaskResult`.
"""

from models._private.core.lazy import lazy_exports

# Each name is imported on first use, so that a process reading one corner of the package
# (an agent host, the `swarm` CLI, an MCP upstream client) does not import the rest: the MCP
# SDK and its HTTP stack, the facts and LLM agents' clients. At start every agent host and
# Serve replica paid for all of it (a quarter of a second each for the MCP SDK alone, enough to
# push a busy node's hosts past their ready timeout).
__getattr__, __dir__ = lazy_exports(
    "actors",
    {
        "actors._private.agents.agent": ("Agent", "AgentContext", "CallableAgent"),
        "actors._private.agents.builtin": (
            "AmortizeAgent",
            "ChecksumAgent",
            "DeduplicateAgent",
            "FactorizeAgent",
            "InvoiceAgent",
            "KeywordsAgent",
            "MemoryAgent",
            "NumberStatsAgent",
            "ReadabilityAgent",
            "TextStatsAgent",
            "ValidateAgent",
        ),
        "actors._private.agents.facts": ("FactsAgent",),
        "actors._private.agents.llm": ("LLMAgent",),
        "actors._private.agents.tasks": ("TaskClient",),
        "actors._private.agents.tool_agent": ("ToolAgent", "ToolAgentInput"),
        "actors._private.config": (
            "AgentConfig",
            "AgentPoolConfig",
            "CapabilityConfig",
            "HealthConfig",
            "JournalConfig",
            "MemoryStoreConfig",
            "QueenConfig",
            "RegistryConfig",
            "SupervisionConfig",
            "SwarmConfig",
            "ToolAnnotationsConfig",
        ),
        "actors._private.mcp.agent": ("McpToolAgent",),
        "actors._private.mcp.config": ("McpFederationConfig", "McpServerConfig"),
        "actors._private.mcp.service": ("start_federation", "stop_federation"),
        "actors._private.memory_store": ("MemoryClient",),
        "actors._private.task": ("Task", "TaskResult", "TaskStatus", "Timings"),
        "models._private.core.errors": ("PayloadError",),
    },
)

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentContext",
    "AgentPoolConfig",
    "AmortizeAgent",
    "CallableAgent",
    "CapabilityConfig",
    "ChecksumAgent",
    "DeduplicateAgent",
    "FactorizeAgent",
    "FactsAgent",
    "HealthConfig",
    "InvoiceAgent",
    "JournalConfig",
    "KeywordsAgent",
    "LLMAgent",
    "McpFederationConfig",
    "McpServerConfig",
    "McpToolAgent",
    "MemoryAgent",
    "MemoryClient",
    "MemoryStoreConfig",
    "NumberStatsAgent",
    "PayloadError",
    "QueenConfig",
    "ReadabilityAgent",
    "RegistryConfig",
    "SupervisionConfig",
    "SwarmConfig",
    "Task",
    "TaskClient",
    "TaskResult",
    "TaskStatus",
    "TextStatsAgent",
    "Timings",
    "ToolAgent",
    "ToolAgentInput",
    "ToolAnnotationsConfig",
    "ValidateAgent",
    "start_federation",
    "stop_federation",
]
