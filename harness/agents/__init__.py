"""Simulated RL agents: multi-turn episodes driven through real HTTP clients.

``Agent`` runs one planned session (harness.workload.SessionPlan) against a
session server; ``make_client`` builds one of the three clients (httpx, the
official openai SDK, aiohttp) that real rollout code uses. Over sockets,
``httpx`` is the agents' own HTTP/1.1 client (``H1Client``: httpx's request
bytes and h11's parsing rules at a fraction of the CPU, issue 15);
``httpx-lib`` is the library itself. See the modules' docstrings for why each
behaviour exists.
"""

from harness.agents._clients import (
    AiohttpClient,
    ClientFailure,
    H1Client,
    HttpClient,
    HttpxClient,
    OpenAIClient,
    Reply,
    RouteByHost,
    Upload,
    make_client,
)
from harness.agents._episode import (
    Agent,
    ChatOutcome,
    committed_choice,
    framing_facts,
    message_probe,
    sse_completion,
)

__all__ = [
    "Agent",
    "AiohttpClient",
    "ChatOutcome",
    "ClientFailure",
    "H1Client",
    "HttpClient",
    "HttpxClient",
    "OpenAIClient",
    "Reply",
    "RouteByHost",
    "Upload",
    "committed_choice",
    "framing_facts",
    "make_client",
    "message_probe",
    "sse_completion",
]
