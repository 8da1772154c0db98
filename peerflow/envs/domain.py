"""A domain on disk, and the isolated environments made from it.

A domain is a folder a newcomer can copy and edit:

- `db.json`: the database the assistant works on, validated by `tools.DB` (pydantic);
- `user_db.json` (optional): the user's own state (their phone, their app), validated by
  `tools.UserState`; without the file, `UserState()`'s defaults;
- `policy.md`: the rules the assistant must follow (its system prompt includes it);
- `tools.py`: the models above and four `Toolset`s: `assistant` and `user` (the tools
  each side may call: dual control), `setup` (functions a task's initial actions may use
  besides the tools) and `assertions` (what a task's environment assertions may check),
  plus an optional `sync(env)` run after every call, which keeps the user's state and the
  database consistent (a suspended line shows "no service" on the phone).

A tool is a plain function whose first parameter is `env` (the `Environment`: `env.db`,
`env.user`); the rest is what the model sends, with type hints and an `Args:` docstring
from which its OpenAI schema is generated (`peerflow.agents.tools`), and against which the
arguments are validated. A tool that raises gives the caller an error result with the
exception's message: that is how a tool says "no such customer".

Environments are deep copies of the loaded database, so tasks never see each other's
writes; `state_hash` is what the reward compares.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from peerflow.agents.tools import Tool, ToolError, bind_arguments, tool_from_function

__all__ = ["Domain", "DomainError", "Environment", "Toolset", "load_domain"]

SIDES = ("assistant", "user")
ENV_PARAM = "env"


class DomainError(ValueError):
    """A domain folder cannot be loaded; the message names the file and what is wrong."""


class Toolset:
    """Functions registered with `@toolset.tool` (or `toolset.tool(name=...)`)."""

    def __init__(self) -> None:
        self.functions: dict[str, Callable[..., Any]] = {}

    def tool(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            key = name or f.__name__
            if key in self.functions:
                raise DomainError(f"two functions are registered as {key!r}")
            self.functions[key] = f
            return f

        return register(fn) if fn is not None else register

    def __contains__(self, name: str) -> bool:
        return name in self.functions


@dataclass
class Outcome:
    """What one call returned: the text the caller sees, and whether it is an error."""

    content: str
    is_error: bool = False


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, ensure_ascii=False, default=str)


def _dump(model: BaseModel | None) -> Any:
    return None if model is None else model.model_dump(mode="json")


def state_hash(value: Any) -> str:
    """sha256 of the sorted-key JSON of a state: equal states, equal hashes."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class Domain:
    """A loaded domain: its models, initial states, policy and tools (see the module doc)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise DomainError(f"domain {str(path)!r}: no such folder")
        self.module = self._import(self.path / "tools.py")
        self.db_model = self._model("DB", required=True)
        self.user_model = self._model("UserState", required=False)
        self.db = self._initial("db.json", self.db_model, required=True)
        self.user = self._initial("user_db.json", self.user_model, required=False)
        policy = self.path / "policy.md"
        if not policy.is_file():
            raise DomainError(f"{policy}: missing (the policy the assistant must follow)")
        self.policy = policy.read_text(encoding="utf-8")
        self.tools: dict[str, dict[str, Tool]] = {
            side: self._tools(side, required=side == "assistant") for side in SIDES
        }
        self.setup = self._functions("setup")
        self.assertions = self._functions("assertions")
        sync = getattr(self.module, "sync", None)
        if sync is not None and not callable(sync):
            raise DomainError(f"{self.path / 'tools.py'}: `sync` must be a function sync(env)")
        self.sync: Callable[[Environment], Any] | None = sync

    # --- loading ---------------------------------------------------------
    @staticmethod
    def _import(path: Path) -> ModuleType:
        if not path.is_file():
            raise DomainError(f"{path}: missing (the domain's models and tools)")
        digest = hashlib.blake2b(str(path).encode(), digest_size=6).hexdigest()
        name = f"peerflow_domain_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pydantic resolves the module's annotations through it
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise DomainError(f"{path}: cannot import: {type(exc).__name__}: {exc}") from None
        return module

    def _model(self, name: str, *, required: bool) -> type[BaseModel] | None:
        model = getattr(self.module, name, None)
        if model is None and not required:
            return None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise DomainError(f"{self.path / 'tools.py'}: `{name}` must be a pydantic model class")
        return model

    def _initial(
        self, file: str, model: type[BaseModel] | None, *, required: bool
    ) -> BaseModel | None:
        path = self.path / file
        if model is None:
            if path.is_file():
                raise DomainError(f"{path}: given, but tools.py defines no `UserState` model")
            return None
        if not path.is_file():
            if required:
                raise DomainError(f"{path}: missing (the initial database)")
            try:
                return model()
            except ValidationError as exc:
                raise DomainError(
                    f"{self.path / 'tools.py'}: UserState() needs {file} or defaults: {exc}"
                ) from None
        try:
            return model.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top)"
            raise DomainError(
                f"{path}: does not match {model.__name__}: at {where}: {first['msg']} "
                f"({exc.error_count()} error(s))"
            ) from None

    def _toolset(self, attr: str, *, required: bool) -> Toolset | None:
        found = getattr(self.module, attr, None)
        if found is None and not required:
            return None
        if not isinstance(found, Toolset):
            raise DomainError(
                f"{self.path / 'tools.py'}: `{attr}` must be a peerflow.envs.Toolset "
                f"(`{attr} = Toolset()`, then `@{attr}.tool` on each function)"
            )
        return found

    def _tools(self, side: str, *, required: bool) -> dict[str, Tool]:
        toolset = self._toolset(side, required=required)
        tools: dict[str, Tool] = {}
        for name, fn in (toolset.functions if toolset else {}).items():
            source = f"{self.path / 'tools.py'}:{fn.__name__}"
            try:
                tool = tool_from_function(fn, source=source, name=name, injected=ENV_PARAM)
            except ToolError as exc:
                raise DomainError(f"{side} tool {name!r}: {exc}") from None
            if not tool.wants_message:
                raise DomainError(
                    f"{side} tool {name!r} ({source}): its first parameter must be `env`"
                )
            tools[name] = tool
        return tools

    def _functions(self, attr: str) -> dict[str, Callable[..., Any]]:
        toolset = self._toolset(attr, required=False)
        return dict(toolset.functions) if toolset else {}

    # --- use -------------------------------------------------------------
    def schemas(self, side: str) -> list[dict[str, Any]]:
        """The OpenAI `tools` list offered to one side."""
        return [tool.schema for tool in self.tools[side].values()]

    def environment(self) -> Environment:
        """A fresh, isolated environment in the initial state."""
        return Environment(self)


class Environment:
    """One task's world: its own copy of the database and of the user's state."""

    def __init__(self, domain: Domain):
        self.domain = domain
        assert domain.db is not None
        self.db: Any = domain.db.model_copy(deep=True)
        self.user: Any = domain.user.model_copy(deep=True) if domain.user is not None else None
        self.calls = 0
        self.errors = 0

    def call(self, side: str, name: str, arguments: Any) -> Outcome:
        """Run one tool call of `side`; never raises: a problem is an error outcome."""
        self.calls += 1
        tools = self.domain.tools.get(side)
        if tools is None:
            return self._error(f"unknown side {side!r}; sides: {', '.join(SIDES)}")
        tool = tools.get(name)
        if tool is None:
            return self._error(f"unknown tool {name!r}; tools: {', '.join(tools) or 'none'}")
        kwargs, problem = bind_arguments(tool, arguments)
        if kwargs is None:
            return self._error(problem or "invalid arguments")
        try:
            value = tool.fn(self, **kwargs)
        except Exception as exc:
            self._sync()
            return self._error(str(exc) or type(exc).__name__)
        self._sync()
        return Outcome(_text(value))

    def initialize(self, actions: list[Mapping[str, Any]] | None) -> None:
        """Run a task's initial-state actions; DomainError names the one that fails.

        Each action is `{env_type: assistant | user, func_name, arguments}`; the name is a
        `setup` function or a tool of that side.
        """
        for i, action in enumerate(actions or ()):
            where = f"initial_state.initialization_actions[{i}]"
            if not isinstance(action, Mapping):
                raise DomainError(f"{where}: expected a mapping, got {type(action).__name__}")
            name = action.get("func_name")
            args = action.get("arguments") or {}
            side = action.get("env_type", "assistant")
            if not isinstance(args, Mapping):
                raise DomainError(f"{where}.arguments: expected a mapping")
            fn = self.domain.setup.get(str(name))
            if fn is None:
                tool = self.domain.tools.get(str(side), {}).get(str(name))
                if tool is None:
                    raise DomainError(
                        f"{where}.func_name: {name!r} is neither a setup function nor a "
                        f"{side} tool of the domain"
                    )
                outcome = self.call(str(side), str(name), dict(args))
                if outcome.is_error:
                    raise DomainError(f"{where} ({name}): {outcome.content}")
                continue
            try:
                fn(self, **args)
            except Exception as exc:
                raise DomainError(f"{where} ({name}): {type(exc).__name__}: {exc}") from None
            self._sync()
        self.calls = self.errors = 0

    def check(self, assertion: Mapping[str, Any]) -> tuple[bool, Any]:
        """(holds, actual value) of one environment assertion of a task."""
        name = str(assertion.get("func_name"))
        fn = self.domain.assertions.get(name)
        if fn is None:
            raise DomainError(f"env assertion {name!r}: no such function in `assertions`")
        actual = fn(self, **(assertion.get("arguments") or {}))
        return actual == assertion.get("assert_value", True), actual

    def state(self) -> dict[str, Any]:
        return {"db": _dump(self.db), "user": _dump(self.user)}

    def state_hash(self) -> dict[str, str]:
        """The hashes the reward compares: the database's and the user's state's."""
        return {"db": state_hash(_dump(self.db)), "user": state_hash(_dump(self.user))}

    def _sync(self) -> None:
        if self.domain.sync is not None:
            self.domain.sync(self)

    def _error(self, text: str) -> Outcome:
        self.errors += 1
        return Outcome(f"Error: {text}", is_error=True)


@functools.lru_cache(maxsize=16)
def _load(path: str) -> Domain:
    return Domain(path)


def load_domain(path: str | Path) -> Domain:
    """The domain in a folder, loaded once per process."""
    return _load(str(Path(path).resolve()))
