"""The tutorial's tools, and its stop condition.

A tool is a plain function with type hints and a docstring: peerflow builds the JSON
schema the model sees from them, and validates the model's arguments against it.
"""

from __future__ import annotations

import ast
import operator

from peerflow.message import Message

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
}

FACTS = {
    "capital of france": "Paris",
    "boiling point of water": "100 °C at sea level",
    "speed of light": "299,792,458 m/s",
}


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression: numbers, + - * /, and parentheses.

    Args:
        expression: the expression, for example "17 * (3 + 4)".
    """

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.operand))
        raise ValueError(f"unsupported expression: {ast.unparse(node)}")

    return value(ast.parse(expression, mode="eval").body)


def lookup(key: str) -> str:
    """Look up a fact in a small reference table.

    Args:
        key: what to look up, for example "capital of France".
    """
    try:
        return FACTS[key.strip().lower()]
    except KeyError:
        raise KeyError(f"no fact about {key!r}; known: {', '.join(FACTS)}") from None


def answered(message: Message) -> bool:
    """The loop's stop condition: the assistant's last reply is a final answer."""
    reply = message.last("assistant")
    return reply is not None and (reply.content or "").startswith("ANSWER:")
