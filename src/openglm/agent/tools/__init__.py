"""Agent tools: the GLM-4 built-ins (python, simple_browser, cogview) and user functions.

Heavy dependencies (jupyter_client, bm25s, mcp, diffusers) are imported by the
tool that needs them, so importing this package stays cheap.
"""

from .base import Observation, Tool, ToolError
from .browser import BrowserTool
from .cogview import CogViewTool, DiffusersImages, OpenAIImages
from .fetch import Fetcher, FetchError, html_to_text
from .functions import FunctionTool, function_tool, load_functions, openapi_tools
from .mcp_tools import MCPTools
from .python import PythonTool
from .sandbox import SandboxLimits
from .search import BingSearch, LocalSearch, SearchResult, SearxNGSearch

__all__ = [
    "BingSearch",
    "BrowserTool",
    "CogViewTool",
    "DiffusersImages",
    "FetchError",
    "Fetcher",
    "FunctionTool",
    "LocalSearch",
    "MCPTools",
    "Observation",
    "OpenAIImages",
    "PythonTool",
    "SandboxLimits",
    "SearchResult",
    "SearxNGSearch",
    "Tool",
    "ToolError",
    "function_tool",
    "html_to_text",
    "load_functions",
    "openapi_tools",
]
