from __future__ import annotations

import pickle

import pytest

from peerflow.message import Message, Step, from_bytes, from_json, new_message, to_bytes, to_json
from peerflow.workflow import Graph, Loop, Sequence, data_matches


def message() -> Message:
    return new_message("t1", {"q": "why?"}, {"q": "why?"}, seed=3)


def drive(workflow, msg: Message, data=None, limit: int = 50) -> list[str]:
    """Run the workflow with trivial steps; `data(role, msg)` gives each step's data."""
    roles = []
    role = workflow.start(msg)
    while role is not None and len(roles) < limit:
        roles.append(role)
        msg.history.append(Step(role=role, data=data(role, msg) if data else None))
        role = workflow.advance(msg)
    return roles


def test_message_round_trips_through_json_msgpack_and_pickle() -> None:
    msg = message()
    msg.history.append(
        Step(
            role="a",
            content="hi",
            usage={"prompt_tokens": 1, "completion_tokens": 2},
            tool_calls=[{"id": "c"}],
        )
    )
    msg.route["pos"] = 1
    for back in (
        from_json(to_json(msg)),
        from_bytes(to_bytes(msg)),
        pickle.loads(pickle.dumps(msg)),
    ):
        assert back == msg
    assert msg.tokens() == (1, 2)


def test_newer_schema_versions_are_refused() -> None:
    data = to_json(message()).replace(b'"id"', b'"v":99,"id"')
    with pytest.raises(ValueError, match="newer"):
        from_json(data)


def test_sequence() -> None:
    msg = message()
    assert drive(Sequence(["a", "b", "c"]), msg) == ["a", "b", "c"]
    assert msg.status == "ok"


def test_loop_checks_condition_after_the_named_role_and_caps_turns() -> None:
    wf = Loop(
        ["s", "m"], check_after="m", max_turns=4, until=lambda msg: msg.history[-1].data["agree"]
    )
    assert (
        drive(wf, message(), lambda role, msg: {"agree": len(msg.history) >= 5}) == ["s", "m"] * 3
    )
    assert drive(wf, message(), lambda role, msg: {"agree": False}) == ["s", "m"] * 4


def test_failed_step_ends_the_task_with_its_error() -> None:
    wf = Sequence(["a", "b"])
    msg = message()
    wf.start(msg)
    msg.history.append(
        Step(role="a", ok=False, error="boom", transient=True, http_status=503, attempts=4)
    )
    assert wf.advance(msg) is None
    assert msg.status == "error"
    assert msg.error == {
        "stage": "agent",
        "message": "boom",
        "kind": "transient",
        "status": 503,
        "attempts": 4,
        "role": "a",
    }
    assert msg.reason == "agent"


def test_max_steps_caps_any_workflow() -> None:
    msg = message()
    roles = drive(Loop(["a"], max_turns=1000, max_steps=7), msg)
    assert len(roles) == 7
    assert msg.status == "error" and "max_steps" in msg.error["message"]


def test_stop_in_step_data_ends_the_task() -> None:
    assert drive(Sequence(["a", "b", "c"]), message(), lambda role, msg: {"stop": role == "b"}) == [
        "a",
        "b",
    ]


def test_graph_conditional_edges() -> None:
    wf = Graph(
        "judge",
        {
            "judge": [("yes", data_matches({"ok": True})), ("no", None)],
            "yes": [("end", None)],
            "no": [("end", None)],
        },
    )
    assert drive(wf, message(), lambda role, msg: {"ok": True}) == ["judge", "yes"]
    assert drive(wf, message(), lambda role, msg: {"ok": False}) == ["judge", "no"]
    assert wf.roles() == {"judge", "yes", "no"}


def test_tool_detour_returns_to_the_caller_without_moving_the_sequence() -> None:
    wf = Sequence(["assistant", "user"], tool_role="env")
    msg = message()
    role = wf.start(msg)
    seen = []
    calls_left = 2
    while role is not None:
        seen.append(role)
        if role == "assistant" and calls_left:
            calls_left -= 1
            step = Step(role=role, tool_calls=[{"id": "x"}])
        else:
            step = Step(role=role)
        msg.history.append(step)
        role = wf.advance(msg)
    assert seen == ["assistant", "env", "assistant", "env", "assistant", "user"]


def test_condition_exception_fails_the_task_not_the_run() -> None:
    def bad(msg: Message) -> bool:
        raise KeyError("verdict")

    wf = Loop(["a"], until=bad, max_turns=3)
    msg = message()
    drive(wf, msg)
    assert msg.status == "error" and msg.error["stage"] == "workflow"


def tool_step(*errors: bool) -> Step:
    results = [
        {"tool_call_id": f"c{i}", "name": "f", "content": "x", "is_error": e}
        for i, e in enumerate(errors)
    ]
    return Step(role="env", tool_results=results)


def test_tool_results_round_trip_and_failed_calls_are_counted_to_the_cap() -> None:
    wf = Sequence(["assistant", "user"], tool_role="env", max_tool_errors=3)
    msg = message()
    role = wf.start(msg)
    assert role == "assistant"
    calls = [{"id": "c0"}, {"id": "c1"}]
    msg.history += [Step(role="assistant", tool_calls=calls)]
    assert wf.advance(msg) == "env"
    msg.history.append(tool_step(True, False))
    assert from_json(to_json(msg)) == msg and from_bytes(to_bytes(msg)) == msg
    assert wf.advance(msg) == "assistant"  # one error: back to the caller
    assert msg.route["tool_errors"] == 1
    msg.history += [Step(role="assistant", tool_calls=calls)]
    assert wf.advance(msg) == "env"
    msg.history.append(tool_step(True, True))
    assert wf.advance(msg) is None
    assert msg.status == "error" and msg.reason == "max_tool_errors"
    assert msg.error["tool_errors"] == 3 and msg.error["role"] == "env"
    assert "max_tool_errors (3) reached" in msg.error["message"]
