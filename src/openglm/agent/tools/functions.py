"""User functions as tools: typed Python functions, OpenAPI operations (MCP servers: ``mcp_tools``).

    @function_tool
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        '''Current weather of a city.

        Args:
            city: the city name, e.g. 北京
        '''

Every call's arguments are checked against the tool's JSON schema before the
function runs; a mismatch comes back to the model as an error observation.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from .base import BUILTIN_NAMES, Observation, Tool, ToolError, clip

RESULT_CHARS = 8000


class FunctionTool(Tool):
    """A tool the model calls with JSON arguments: ``{"type": "function", "function": {...}}``."""

    def __init__(self, name: str, description: str, parameters: dict, fn: Callable[..., Any], *,
                 needs_confirmation: bool = False, timeout_s: float | None = 60.0, result_chars: int = RESULT_CHARS):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", name):
            raise ValueError(f"tool name {name!r}: use 1-128 letters, digits, '_', '.' or '-'")
        if name in BUILTIN_NAMES:
            raise ValueError(f"tool name {name!r} is reserved for the built-in GLM-4 tool")
        try:
            jsonschema.validators.validator_for(parameters).check_schema(parameters)
        except jsonschema.SchemaError as e:
            raise ValueError(f"tool {name}: its parameters are not a valid JSON schema: {e.message}") from None
        self.name, self.description, self.parameters, self.fn = name, description, parameters, fn
        self.needs_confirmation, self.timeout_s, self.result_chars = needs_confirmation, timeout_s, result_chars
        self._validator = jsonschema.validators.validator_for(parameters)(parameters)

    def spec(self) -> dict:
        fn = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": fn}

    def validate(self, arguments: Any) -> None:
        """Raise :class:`ToolError` listing every way ``arguments`` breaks the schema."""
        if not isinstance(arguments, dict):
            raise ToolError(f"{self.name}: arguments must be a JSON object, got {type(arguments).__name__}")
        # best_match descends into anyOf/oneOf to name the sub-schema that failed
        errors = sorted((jsonschema.exceptions.best_match([e]) for e in self._validator.iter_errors(arguments)),
                        key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            lines = [f"at '{'/'.join(map(str, e.absolute_path)) or '(root)'}': {e.message}" for e in errors]
            raise ToolError(f"invalid arguments for {self.name}: " + "; ".join(lines))

    def run(self, arguments: Any) -> Observation:
        self.validate(arguments)
        result = self.fn(**arguments)
        if isinstance(result, Observation):
            return result
        text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
        return Observation(clip(text, self.result_chars))

    def __call__(self, *args, **kwargs):
        """Decorated functions stay callable as plain Python."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r})"


def function_tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None,
                  confirm: bool = False, timeout_s: float | None = 60.0):
    """Decorator: a typed, docstringed function -> :class:`FunctionTool`.

    The JSON schema comes from the type hints (via pydantic), parameter and tool
    descriptions from the docstring (Google, NumPy or reST style).
    ``confirm=True`` makes the agent ask the user before each call.
    """

    def wrap(f: Callable) -> FunctionTool:
        desc, params = schema_from_signature(f)
        return FunctionTool(name or f.__name__, description or desc, params, f,
                            needs_confirmation=confirm, timeout_s=timeout_s)

    return wrap(fn) if fn is not None else wrap


def schema_from_signature(fn: Callable) -> tuple[str, dict]:
    """``(description, parameters_schema)`` for a function's signature and docstring."""
    import docstring_parser
    import pydantic

    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    param_docs = {p.arg_name: p.description for p in doc.params}
    hints = _type_hints(fn)
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ValueError(f"{fn.__name__}: *args/**kwargs cannot be described as a JSON schema")
        if p.name not in hints:
            raise ValueError(f"{fn.__name__}: parameter {p.name!r} needs a type hint")
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints[p.name], pydantic.Field(default, description=param_docs.get(p.name)))
    model = pydantic.create_model(f"{fn.__name__}_arguments", **fields)
    schema = _drop_titles(model.model_json_schema())
    schema.setdefault("properties", {})
    description = "\n\n".join(x for x in (doc.short_description, doc.long_description) if x)
    return description, schema


def _type_hints(fn: Callable) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except NameError as e:
        raise ValueError(f"{fn.__name__}: cannot resolve a type hint ({e})") from None


def _drop_titles(schema: Any) -> Any:
    """pydantic titles every property; they only add noise to the prompt."""
    if isinstance(schema, dict):
        return {k: _drop_titles(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_drop_titles(v) for v in schema]
    return schema


def load_functions(path: str | Path) -> list[FunctionTool]:
    """Every :class:`FunctionTool` defined at the top level of a Python file (e.g. with ``@function_tool``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"functions file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"openglm_user_functions_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tools = [v for v in vars(module).values() if isinstance(v, FunctionTool)]
    if not tools:
        raise ValueError(f"{path}: no @function_tool functions found")
    return tools


# ---- OpenAPI ----

_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def openapi_tools(spec: Mapping | str | Path, *, base_url: str | None = None, headers: Mapping[str, str] | None = None,
                  timeout_s: float = 30.0, client=None) -> list[FunctionTool]:
    """One tool per operation (named by ``operationId``) of an OpenAPI 3 spec (dict, or JSON/YAML file).

    Path, query and header parameters become arguments; a JSON request body
    becomes the ``body`` argument.  Operations other than GET/HEAD/OPTIONS are
    marked as needing confirmation.  ``headers`` (e.g. an API key) are sent with
    every request and never shown to the model; ``client`` (an ``httpx.Client``
    with its own base URL, auth or proxies) replaces the default one.
    """
    import httpx

    if not isinstance(spec, Mapping):
        spec = _read_spec(Path(spec))
    base = base_url or ((spec.get("servers") or [{}])[0].get("url"))
    if not base:
        raise ValueError("OpenAPI spec has no servers[0].url; pass base_url=")
    http = client or httpx.Client(base_url=base, headers=dict(headers or {}), timeout=timeout_s, trust_env=False)
    tools = []
    for path, item in (spec.get("paths") or {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            where = f"paths.{path}.{method}"
            if not op.get("operationId"):
                raise ValueError(f"{where}: operationId is required to name the tool")
            params = [_resolve(spec, p, where) for p in (item.get("parameters") or []) + (op.get("parameters") or [])]
            schema, locations = _operation_schema(spec, op, params, where)
            call = _make_call(http, method, path, locations)
            desc = op.get("summary") or op.get("description") or f"{method.upper()} {path}"
            tools.append(FunctionTool(re.sub(r"[^A-Za-z0-9_.\-]", "_", op["operationId"])[:128], desc, schema, call,
                                      needs_confirmation=method not in ("get", "head", "options"), timeout_s=timeout_s))
    return tools


def _read_spec(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def _resolve(spec: Mapping, node: Any, where: str, depth: int = 0) -> Any:
    """``node`` with local ``$ref``s (``#/components/...``) replaced by their targets."""
    if depth > 32:
        raise ValueError(f"{where}: $ref nesting deeper than 32 (a cycle?)")
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise ValueError(f"{where}: only local $ref ('#/...') is supported, got {ref!r}")
            target: Any = spec
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or part not in target:
                    raise ValueError(f"{where}: $ref {ref!r} does not resolve")
                target = target[part]
            return _resolve(spec, target, where, depth + 1)
        return {k: _resolve(spec, v, where, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(spec, v, where, depth) for v in node]
    return node


def _operation_schema(spec: Mapping, op: Mapping, params: list, where: str) -> tuple[dict, dict[str, str]]:
    props, required, locations = {}, [], {}
    for p in params:
        name, loc = p.get("name"), p.get("in")
        if loc not in ("path", "query", "header") or not name:
            raise ValueError(f"{where}: parameter {name!r} in {loc!r} is not supported (path, query, header)")
        prop = dict(p.get("schema") or {"type": "string"})
        if p.get("description"):
            prop["description"] = p["description"]
        props[name], locations[name] = prop, loc
        if p.get("required") or loc == "path":
            required.append(name)
    body = _resolve(spec, op.get("requestBody"), where) if op.get("requestBody") else None
    if body:
        content = body.get("content") or {}
        if "application/json" not in content:
            raise ValueError(f"{where}: only application/json request bodies are supported, got {sorted(content)}")
        props["body"] = content["application/json"].get("schema") or {}
        locations["body"] = "body"
        if body.get("required"):
            required.append("body")
    schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema, locations


def _make_call(http, method: str, path: str, locations: dict[str, str]) -> Callable[..., str]:
    def call(**arguments) -> str:
        url = path
        query, headers, body = {}, {}, None
        for name, value in arguments.items():
            loc = locations[name]
            if loc == "path":
                url = url.replace("{" + name + "}", _quote(value))
            elif loc == "query":
                query[name] = value
            elif loc == "header":
                headers[name] = str(value)
            else:
                body = value
        r = http.request(method.upper(), url, params=query, headers=headers, json=body)
        if r.status_code >= 400:
            raise ToolError(f"{method.upper()} {url} answered HTTP {r.status_code}: {r.text[:500]}")
        return r.text

    return call


def _quote(value: Any) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")
