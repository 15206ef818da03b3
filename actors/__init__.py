"""Swarm actors: the meta registry, queens, agent pools, agents and health monitors.

Write an agent by subclassing `Agent`; the rest is created for you by `swarm up`.
"""

from actors._private.agent import Agent, AgentContext, CallableAgent
from actors._private.builtin_agents import (
    AmortizeAgent,
    ChecksumAgent,
    DeduplicateAgent,
    FactorizeAgent,
    InvoiceAgent,
    KeywordsAgent,
    MemoryAgent,
    NonceAgent,
    NoopAgent,
    NumberStatsAgent,
    ReadabilityAgent,
    TextStatsAgent,
    ValidateAgent,
)
from actors._private.health import HealthMonitor
from actors._private.host import AgentHost
from actors._private.llm_agent import LLMAgent
from actors._private.memory_store import MemoryClient, MemoryStore
from actors._private.pool import AgentPool
from actors._private.queen import SwarmQueen
from actors._private.registry import MetaRegistry
from actors._private.task import Task, TaskResult, TaskStatus, Timings

__all__ = [
    "Agent",
    "AgentContext",
    "AgentHost",
    "AgentPool",
    "AmortizeAgent",
    "CallableAgent",
    "ChecksumAgent",
    "DeduplicateAgent",
    "FactorizeAgent",
    "HealthMonitor",
    "InvoiceAgent",
    "KeywordsAgent",
    "LLMAgent",
    "MemoryAgent",
    "MemoryClient",
    "MemoryStore",
    "MetaRegistry",
    "NonceAgent",
    "NoopAgent",
    "NumberStatsAgent",
    "ReadabilityAgent",
    "SwarmQueen",
    "Task",
    "TaskResult",
    "TaskStatus",
    "TextStatsAgent",
    "Timings",
    "ValidateAgent",
]
