"""Multi-party chats: how each role sees the shared history (`view`), and Coral's speakers."""

from __future__ import annotations

from typing import Any

from peerflow.agents.llm import LLMAgent, LLMOptions, speaker_name
from peerflow.message import Message, Step, new_message
from peerflow.recipes.coral import extract_answer, match, metrics
from peerflow.testing import strict_chat_errors


def agent(role: str, **options: Any) -> LLMAgent:
    return LLMAgent(role, LLMOptions(service="llm", **options), {"llm": object()})  # type: ignore[dict-item]


def debate() -> Message:
    msg = new_message("t", {}, {})
    msg.history.append(Step(role="task", content="Is water wet?"))
    for role, text in [
        ("pro", "Yes."),
        ("con", "No."),
        ("neutral", "Maybe."),
        ("judge", "Go on."),
        ("pro", "Still yes."),
    ]:
        msg.history.append(Step(role=role, content=text))
    return msg


SPEAKERS = ["pro", "con", "neutral", "judge"]


def test_each_other_speaker_is_a_separate_labelled_message() -> None:
    chat = agent("con", system="You argue against.", conversation=SPEAKERS).chat(debate())
    assert chat == [
        {"role": "system", "content": "You argue against."},
        {"role": "user", "content": "Is water wet?"},
        {"role": "user", "content": "pro: Yes.", "name": "pro"},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": "neutral: Maybe.", "name": "neutral"},
        {"role": "user", "content": "judge: Go on.", "name": "judge"},
        {"role": "user", "content": "pro: Still yes.", "name": "pro"},
    ]
    assert strict_chat_errors({"messages": chat}) == []


def test_label_and_prefix_are_configurable() -> None:
    def others(**view: Any) -> list[dict[str, Any]]:
        chat = agent("judge", view={"include": SPEAKERS, **view}).chat(debate())
        return chat[1:4]

    assert others(label="name") == [
        {"role": "user", "content": "Yes.", "name": "pro"},
        {"role": "user", "content": "No.", "name": "con"},
        {"role": "user", "content": "Maybe.", "name": "neutral"},
    ]
    assert others(label="prefix", prefix="[{role}] ")[0] == {
        "role": "user",
        "content": "[pro] Yes.",
    }
    # Unlabelled turns are merged (servers that need alternation); prefixes keep speakers.
    merged = agent("judge", view={"include": SPEAKERS, "merge": True}).chat(debate())
    assert merged[0]["content"].startswith("Is water wet?\n\npro: Yes.\n\ncon: No.")
    assert "name" not in merged[0]
    separate = agent("judge", view={"include": SPEAKERS, "label": "none", "merge": False}).chat(
        debate()
    )
    assert [m["content"] for m in separate[:3]] == ["Is water wet?", "Yes.", "No."]


def test_two_party_dialogue_keeps_todays_unlabelled_merged_turns() -> None:
    msg = new_message("t", {}, {})
    msg.history += [Step(role="task", content="Q"), Step(role="teacher", content="A is right.")]
    chat = agent("student", conversation=["teacher", "student"], prompt="Your view?").chat(msg)
    assert chat == [{"role": "user", "content": "Q\n\nA is right.\n\nYour view?"}]


def test_names_are_sanitised_to_openais_rule() -> None:
    assert speaker_name("judge #2 (final)") == "judge__2__final_"
    assert speaker_name("x" * 80) == "x" * 64
    msg = debate()
    msg.history.append(Step(role="judge #2", content="Done."))
    chat = agent("pro", view={"include": [*SPEAKERS, "judge #2"]}).chat(msg)
    assert chat[-1] == {"role": "user", "content": "judge #2: Done.", "name": "judge__2"}
    assert strict_chat_errors({"messages": chat}) == []


def tool_exchange() -> Message:
    msg = new_message("t", {}, {})
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a":1,"b":2}'}},
        {"id": "c2", "type": "function", "function": {"name": "add", "arguments": '{"a":3,"b":4}'}},
    ]
    results = [
        {"tool_call_id": "c1", "name": "add", "content": "3", "is_error": False},
        {"tool_call_id": "c2", "name": "add", "content": "bad", "is_error": True},
    ]
    msg.history += [
        Step(role="task", content="Q"),
        Step(role="solver", tool_calls=calls),
        Step(role="tools", tool_results=results),
    ]
    return msg


def test_the_caller_sees_its_results_without_listing_the_tool_role() -> None:
    # No `conversation`: the solver still sees its own open exchange, after its prompt.
    chat = agent("solver", prompt="Solve: {{ last().content }}").chat(tool_exchange())
    assert [m["role"] for m in chat] == ["user", "assistant", "tool", "tool"]
    assert chat[0]["content"] == "Q\n\nSolve: Q"  # rendered as when the turn began
    assert chat[2] == {"role": "tool", "tool_call_id": "c1", "content": "3"}
    assert chat[3] == {"role": "tool", "tool_call_id": "c2", "content": "ERROR: bad"}
    assert strict_chat_errors({"messages": chat}) == []


def test_other_roles_never_get_tool_messages() -> None:
    msg = tool_exchange()
    msg.history.append(Step(role="solver", content="It is 3."))
    for view in ({"include": ["solver", "tools", "judge"]}, {"include": ["solver", "tools"]}):
        chat = agent("judge", view=view).chat(msg)
        assert all(m["role"] != "tool" for m in chat)
        assert strict_chat_errors({"messages": chat}) == []
    summary = agent("judge", view={"include": ["solver"], "tools": "summary"}).chat(msg)
    assert '[called add({"a":1,"b":2}) -> 3]' in summary[0]["content"]
    assert "-> error: bad]" in summary[0]["content"]
    # A later turn of the solver shows the finished exchange inline, fully answered.
    chat = agent("solver", conversation=["solver"]).chat(msg)
    assert [m["role"] for m in chat] == ["user", "assistant", "tool", "tool", "assistant"]


def test_an_unanswered_call_gets_an_error_result_not_an_invalid_request() -> None:
    msg = tool_exchange()
    del msg.history[2]
    msg.history.append(Step(role="other", content="moving on"))
    chat = agent("solver", conversation=["solver", "other"]).chat(msg)
    assert strict_chat_errors({"messages": chat}) == []
    assert chat[2]["content"].startswith("ERROR: no result")


def test_coral_helpers_take_speakers_from_the_steps() -> None:
    msg = new_message("t", {}, {"answer": "B"})
    msg.history.append(Step(role="task", content="Q"))
    for speaker, letter in [("alice", "B"), ("bob", "C"), ("carol", "B"), ("bob", "B")]:
        msg.history.append(
            Step(role=speaker, content=f"I say ({letter})", usage={"completion_tokens": 4})
        )
        msg.history.append(Step(role="reader", data=extract_answer(msg, f"({letter})")))
        msg.history.append(Step(role="verdict", data=match(msg, min_speakers=3)))
    verdicts = [s.data for s in msg.history if s.role == "verdict"]
    assert verdicts[0] == {"alice": "B", "agree": False, "correct": False}
    assert verdicts[2]["agree"] is False
    assert verdicts[3] == {"alice": "B", "bob": "B", "carol": "B", "agree": True, "correct": True}
    out = metrics(msg)
    assert out["turns"] == 4 and out["agreement_correctness"] is True
    assert out["bob_completion_tokens"] == 4


def test_a_fixed_system_prompt_is_rendered_once_and_a_templated_one_every_step() -> None:
    fixed = agent("pro", system="Argue for it.\n", view={"include": SPEAKERS})
    templated = agent("con", system="Against: {{ row.topic }}", view={"include": SPEAKERS})
    assert fixed.system is not None and fixed.system.constant == "Argue for it."
    assert templated.system is not None and templated.system.constant is None
    msg = debate()
    msg.row["topic"] = "water"
    assert fixed.chat(msg)[0] == {"role": "system", "content": "Argue for it."}
    assert templated.chat(msg)[0] == {"role": "system", "content": "Against: water"}
    msg.row["topic"] = "fire"
    assert templated.chat(msg)[0]["content"] == "Against: fire"
