"""Swarm actors: what agents are written against, the built-in agents, and swarm configuration.

Write an agent by subclassing `Agent` and name it in a pool's `agent.class`; `swarm up` creates
the meta registry, the queens, the agent pools and the health monitors for you (their actor
classes live in `actors._private`). A task is a `Task`; its outcome a `TaskResult`.
"""

from actors._private.agents.agent import Agent, AgentContext, CallableAgent
from actors._private.agents.builtin import (
    AmortizeAgent,
    ChecksumAgent,
    DeduplicateAgent,
    FactorizeAgent,
    InvoiceAgent,
    KeywordsAgent,
    MemoryAgent,
    NumberStatsAgent,
    ReadabilityAgent,
    TextStatsAgent,
    ValidateAgent,
)
from actors._private.agents.facts import FactsAgent
from actors._private.agents.llm import LLMAgent
from actors._private.agents.tasks import TaskClient
from actors._private.agents.tool_agent import ToolAgent, ToolAgentInput
from actors._private.config import (
    AgentConfig,
    AgentPoolConfig,
    CapabilityConfig,
    HealthConfig,
    JournalConfig,
    MemoryStoreConfig,
    QueenConfig,
    RegistryConfig,
    SupervisionConfig,
    SwarmConfig,
    ToolAnnotationsConfig,
)
from actors._private.mcp.agent import McpToolAgent
from actors._private.mcp.config import McpFederationConfig, McpServerConfig
from actors._private.memory_store import MemoryClient
from actors._private.task import Task, TaskResult, TaskStatus, Timings
from models._private.core.errors import PayloadError
from models._private.core.lazy import lazy_exports

# Read on first use: they import the MCP SDK and its HTTP stack, which every agent host would
# otherwise import at start (a quarter of a second each, enough to push a busy node's hosts past
# their ready timeout).
__getattr__, __dir__ = lazy_exports(
    "actors", {"actors._private.mcp.service": ("start_federation", "stop_federation")}
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
