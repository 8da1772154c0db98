"""Routing: given a task's history, which role acts next, or whether the task is done.

A workflow object holds only the *definition* (roles, conditions); the
position in it lives in `message.route`, so any agent anywhere can route any
message without asking a central component. After every step the runtime
calls `advance`, which handles what all workflows share (failed steps, step
caps, tool-call detours, `data["stop"]`) and defers the rest to `after`.

Writing a new workflow means subclassing `Workflow` and implementing
`first`, `after` and `roles` (every role it may route to: `peerflow check`
refuses a custom workflow that declares none); name the class in YAML as `workflow: {kind: custom,
path: "pkg.module:MyWorkflow", options: {...}}`.

Rejection ends a task before the workflow is asked: a step whose `data` has `reject`
(a reason, or `{"reason": ..., ...detail}`), or a role's `reject` rule that holds after
its step (`roles.<name>.reject: [{when: ..., reason: ...}]`, kept in `reject_rules`).
A rejected task is final, like a finished one; only a failed one is ever re-attempted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from peerflow.loading import load_object
from peerflow.message import OK, RUNNING, Message, Step

END = "end"

Condition = Callable[[Message], bool]


class Workflow:
    """Base class; `tool_role` enables detours for steps that return tool calls.

    The detour: a step with `tool_calls` (by any role but the tool role) goes to the tool
    role, which answers every call in one step; the message then goes back to the caller,
    which sees its calls and their results and speaks again. The workflow's own position
    does not move meanwhile. Failed tool calls (`is_error` results) are counted per task in
    `route["tool_errors"]`; at `max_tool_errors` the task fails with that reason.
    """

    def __init__(
        self, *, tool_role: str | None = None, max_steps: int = 200, max_tool_errors: int = 5
    ):
        self.tool_role = tool_role
        self.max_steps = max_steps
        self.max_tool_errors = max_tool_errors
        # role -> [(reason, condition)], tried in order after each of the role's steps.
        self.reject_rules: dict[str, list[tuple[str, Condition]]] = {}

    # --- to implement ---------------------------------------------------
    def first(self, message: Message) -> str | None:
        raise NotImplementedError

    def after(self, message: Message) -> str | None:
        """The next role after the last step, or None when the task is done."""
        raise NotImplementedError

    def roles(self) -> set[str]:
        """Every role this workflow may route to (checked against the config up front).

        A custom workflow must implement it: one that returns no roles is refused
        before the run, since a route to a role nobody defined would only fail tasks.
        """
        return set()

    # --- shared ---------------------------------------------------------
    def start(self, message: Message) -> str | None:
        nxt = self.first(message)
        message.next_role = nxt
        if nxt is None and message.status == RUNNING:
            message.status = OK
            message.reason = "done"
        return nxt

    def advance(self, message: Message) -> str | None:
        message.hops += 1
        last = message.history[-1]
        if not last.ok:
            fail_with_step(message, last)
            return None
        if last.tool_results and self._tool_errors(message, last):
            return None
        if (last.data and "reject" in last.data) or last.role in self.reject_rules:
            try:
                if self._rejected(message, last):
                    return None
            except Exception as exc:  # a user condition raised: the task fails, the run goes on
                message.fail(
                    "workflow", f"reject rule: {type(exc).__name__}: {exc}", role=last.role
                )
                return None
        tool_role = self.tool_role
        if tool_role is not None and last.tool_calls and last.role != tool_role:
            message.route.setdefault("return", []).append(last.role)
            nxt: str | None = tool_role
        elif tool_role is not None and last.role == tool_role and message.route.get("return"):
            nxt = message.route["return"].pop()
        elif last.data and last.data.get("stop"):
            nxt = None
            message.reason = "stop"
        else:
            try:
                nxt = self.after(message)
            except Exception as exc:  # a user condition raised: the task fails, the run goes on
                message.fail("workflow", f"{type(exc).__name__}: {exc}", role=last.role)
                return None
        if nxt is not None and message.hops >= self.max_steps:
            message.fail("workflow", f"max_steps ({self.max_steps}) reached", role=last.role)
            message.reason = "max_steps"
            return None
        message.next_role = nxt
        if nxt is None and message.status == RUNNING:
            message.status = OK
            if message.reason is None:
                message.reason = "done"
        return nxt

    def _rejected(self, message: Message, step: Step) -> bool:
        """Reject the task if the step says so (`data.reject`) or a rule of its role holds."""
        said = step.data.get("reject") if step.data else None
        if said is not None and said is not False:
            if isinstance(said, dict):
                detail = {k: v for k, v in said.items() if k != "reason"} or None
                message.reject(step.role, str(said.get("reason") or step.role), detail)
            else:
                message.reject(step.role, step.role if said is True else str(said))
            return True
        for reason, condition in self.reject_rules.get(step.role, ()):
            if condition(message):
                message.reject(step.role, reason)
                return True
        return False

    def _tool_errors(self, message: Message, step: Step) -> bool:
        """Count a tool step's failed calls; True (the task failed) at the cap."""
        failed = sum(1 for r in step.tool_results or () if r.get("is_error"))
        if not failed:
            return False
        total = message.route.get("tool_errors", 0) + failed
        message.route["tool_errors"] = total
        if total < self.max_tool_errors:
            return False
        last_error = next(r for r in reversed(step.tool_results or ()) if r.get("is_error"))
        message.fail(
            "workflow",
            f"max_tool_errors ({self.max_tool_errors}) reached: {total} failed tool calls; "
            f"last: {last_error.get('name') or '?'}: {last_error.get('content')}",
            role=step.role,
            tool_errors=total,
        )
        message.reason = "max_tool_errors"
        return True


def fail_with_step(message: Message, step: Step) -> None:
    """Fail the task with its failed step's error (transient or not, as the step says)."""
    message.fail(
        "agent",
        step.error or "step failed",
        transient=step.transient,
        status=step.http_status,
        attempts=step.attempts,
        role=step.role,
    )


class Sequence(Workflow):
    """Each role once, in order."""

    def __init__(self, roles: list[str], **kw: Any):
        super().__init__(**kw)
        self.order = list(roles)

    def roles(self) -> set[str]:
        return set(self.order)

    def first(self, message: Message) -> str | None:
        message.route["pos"] = 0
        return self.order[0]

    def after(self, message: Message) -> str | None:
        pos = message.route["pos"] + 1
        message.route["pos"] = pos
        return self.order[pos] if pos < len(self.order) else None


class Loop(Workflow):
    """Cycle through `roles` until `until(message)` holds or `max_turns` turns are done.

    A turn ends after each `check_after` step (Coral: after every matcher
    step), or, without `check_after`, after each full pass through `roles`.
    """

    def __init__(
        self,
        roles: list[str],
        *,
        until: Condition | None = None,
        check_after: str | None = None,
        max_turns: int = 10,
        **kw: Any,
    ):
        super().__init__(**kw)
        self.order = list(roles)
        self.until = until
        self.check_after = check_after
        self.max_turns = max_turns

    def roles(self) -> set[str]:
        return set(self.order)

    def first(self, message: Message) -> str | None:
        message.route["pos"] = 0
        message.route["turns"] = 0
        return self.order[0]

    def after(self, message: Message) -> str | None:
        route = message.route
        pos = route["pos"] + 1
        n = len(self.order)
        turn_ended = (
            message.history[-1].role == self.check_after
            if self.check_after is not None
            else pos == n
        )
        if turn_ended:
            route["turns"] += 1
            if self.until is not None and self.until(message):
                message.reason = "until"
                return None
            if route["turns"] >= self.max_turns:
                message.reason = "max_turns"
                return None
        if pos == n:
            pos = 0
        route["pos"] = pos
        return self.order[pos]


class Graph(Workflow):
    """Nodes are roles; each node's edges are tried in order, the first whose condition holds wins.

    A condition is a callable `(message) -> bool` or a mapping matched against
    the last step's `data` (`{verdict: yes}`); an edge without one always
    matches. The target `end` finishes the task.
    """

    def __init__(self, start: str, edges: dict[str, list[tuple[str, Condition | None]]], **kw: Any):
        super().__init__(**kw)
        self.start_node = start
        self.edges = edges

    def roles(self) -> set[str]:
        names = {self.start_node, *self.edges}
        for targets in self.edges.values():
            names.update(to for to, _ in targets)
        names.discard(END)
        return names

    def first(self, message: Message) -> str | None:
        return None if self.start_node == END else self.start_node

    def after(self, message: Message) -> str | None:
        role = message.history[-1].role
        for to, condition in self.edges.get(role, ()):
            if condition is None or condition(message):
                return None if to == END else to
        return None


def data_matches(expected: dict[str, Any]) -> Condition:
    """A condition true when the last step's data holds every key/value of `expected`."""
    items = tuple(expected.items())

    def condition(message: Message) -> bool:
        data = message.history[-1].data or {}
        return all(data.get(k) == v for k, v in items)

    return condition


def condition(spec: str | dict[str, Any], what: str = "condition") -> Condition:
    """A condition from config: a data mapping to match, or a `module:function` to load."""
    if isinstance(spec, dict):
        return data_matches(spec)
    return load_object(spec, what=what)


def build_workflow(config: Any) -> Workflow:
    """Make a workflow from its config section (one of the `*WorkflowConfig` models)."""
    common = {
        "tool_role": config.tool_role,
        "max_steps": config.max_steps,
        "max_tool_errors": getattr(config, "max_tool_errors", 5),
    }
    kind = config.kind
    if kind == "sequence":
        return Sequence(config.roles, **common)
    if kind == "loop":
        until = load_object(config.until, what="workflow.until") if config.until else None
        return Loop(
            config.roles,
            until=until,
            check_after=config.check_after,
            max_turns=config.max_turns,
            **common,
        )
    if kind == "graph":
        edges: dict[str, list[tuple[str, Condition | None]]] = {}
        for node, spec in config.edges.items():
            if isinstance(spec, str):
                edges[node] = [(spec, None)]
            else:
                edges[node] = [(e.to, None if e.when is None else condition(e.when)) for e in spec]
        return Graph(config.start, edges, **common)
    if kind == "custom":
        cls = load_object(config.path, what="workflow.path")
        if not (isinstance(cls, type) and issubclass(cls, Workflow)):
            raise ValueError(f"workflow.path {config.path!r} is not a peerflow Workflow subclass")
        return cls(**config.options, **common)
    raise ValueError(f"unknown workflow kind {kind!r}")


def unknown_roles(workflow: Workflow, known: Iterable[str]) -> set[str]:
    roles = workflow.roles()
    if workflow.tool_role:
        roles.add(workflow.tool_role)
    return roles - set(known)
