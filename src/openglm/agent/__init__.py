"""GLM-4 All Tools: an agent that plans and calls Python, a browser, text-to-image and user functions.

    from openglm.agent import Agent, OpenAIBackend
    from openglm.agent.tools import PythonTool, BrowserTool, LocalSearch

    with Agent(OpenAIBackend("http://127.0.0.1:8000/v1"), tools=[PythonTool("work"),
               BrowserTool(LocalSearch("docs"))]) as agent:
        print(agent.ask("What was the CAGR of China's population from 2000 to 2020?").content)
"""

from .backends import Backend, BackendError, Generation, LocalBackend, OpenAIBackend, ReplayBackend
from .events import Event, FinalEvent, ObservationEvent, TextDelta, ToolCallEvent, to_dict
from .loop import Agent, Limits
from .session import SessionStore

__all__ = [
    "Agent",
    "Backend",
    "BackendError",
    "Event",
    "FinalEvent",
    "Generation",
    "Limits",
    "LocalBackend",
    "ObservationEvent",
    "OpenAIBackend",
    "ReplayBackend",
    "SessionStore",
    "TextDelta",
    "ToolCallEvent",
    "to_dict",
]
