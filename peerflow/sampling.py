"""Which keys a role's `sampling:` may hold, so a typo fails `peerflow check`, not every row.

A misspelt sampling key is worse than a crash: most servers ignore unknown
keys, so `temprature: 0` silently samples at the default temperature for a
whole run. `sampling` therefore accepts only the OpenAI chat-completions
parameters and the extensions the common open servers (vLLM, SGLang,
llama.cpp server) document; a near-miss gets "did you mean". Anything else a
server understands goes under the role's `extra_body`, which is merged into
the request body unchecked.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

__all__ = ["OPENAI_KEYS", "SAMPLING_KEYS", "SERVER_KEYS", "sampling_errors"]

# https://platform.openai.com/docs/api-reference/chat/create (request body), minus what
# peerflow sets itself (messages, model, tools, stream; see _RESERVED).
OPENAI_KEYS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "tool_choice",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)

# Sampling and decoding extensions of vLLM, SGLang and the llama.cpp server.
SERVER_KEYS = frozenset(
    {
        # shared by several servers
        "top_k",
        "min_p",
        "repetition_penalty",
        "min_tokens",
        "ignore_eos",
        "stop_token_ids",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "chat_template_kwargs",
        "json_schema",
        "regex",
        "ebnf",
        "grammar",
        "typical_p",
        "length_penalty",
        # vLLM
        "best_of",
        "use_beam_search",
        "include_stop_str_in_output",
        "truncate_prompt_tokens",
        "prompt_logprobs",
        "allowed_token_ids",
        "bad_words",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "guided_decoding_backend",
        "guided_whitespace_pattern",
        "structured_outputs",
        "chat_template",
        "add_generation_prompt",
        "continue_final_message",
        "add_special_tokens",
        "echo",
        "documents",
        "mm_processor_kwargs",
        "priority",
        "return_tokens_as_token_ids",
        "logits_processors",
        "cache_salt",
        "vllm_xargs",
        # SGLang
        "no_stop_trim",
        "separate_reasoning",
        "stream_reasoning",
        "lora_path",
        "return_hidden_states",
        "custom_logit_processor",
        "session_params",
        # llama.cpp server
        "repeat_penalty",
        "repeat_last_n",
        "penalize_nl",
        "tfs_z",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "dynatemp_range",
        "dynatemp_exponent",
        "xtc_probability",
        "xtc_threshold",
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "dry_penalty_last_n",
        "dry_sequence_breakers",
        "top_n_sigma",
        "samplers",
        "n_probs",
        "min_keep",
        "n_predict",
        "n_keep",
        "cache_prompt",
        "id_slot",
        "t_max_predict_ms",
        "return_tokens",
        "post_sampling_probs",
        "reasoning_format",
        "lora",
    }
)

SAMPLING_KEYS = OPENAI_KEYS | SERVER_KEYS

# Keys peerflow fills in itself: naming them under sampling is a mistake with a known fix.
_RESERVED = {
    "messages": "the chat is built by peerflow from the role's system, prompt and history",
    "model": "the model is the service's `model`",
    "tools": "tools are the role's own `tools` option",
    "stream": "peerflow reads whole (non-streamed) replies",
    "stream_options": "peerflow reads whole (non-streamed) replies",
}

_NUMBER = (int, float)
# Value types of the keys most often set by hand; other keys are passed through as given.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "min_p": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "presence_penalty": (_NUMBER, "a number"),
    "repetition_penalty": (_NUMBER, "a number"),
    "repeat_penalty": (_NUMBER, "a number"),
    "top_k": ((int,), "an integer"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "min_tokens": ((int,), "an integer"),
    "n": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "logprobs": ((bool,), "true or false"),
    "stop": ((str, list), "a string or a list of strings"),
}


def sampling_errors(sampling: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for every key `sampling` may not hold or whose value has the wrong type."""
    errors = []
    for key, value in sampling.items():
        if key in _RESERVED:
            errors.append((key, f"{key!r} cannot be set under sampling: {_RESERVED[key]}"))
        elif key not in SAMPLING_KEYS:
            errors.append((key, _unknown(key)))
        elif key in _TYPES:
            kinds, words = _TYPES[key]
            ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
            if ok and isinstance(value, list):
                ok = all(isinstance(v, str) for v in value)
            if not ok:
                errors.append((key, f"{key!r} must be {words}, got {value!r}"))
    return errors


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(SAMPLING_KEYS), n=1, cutoff=0.7)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"unknown sampling key {key!r}; {hint}sampling takes the OpenAI chat-completions "
        "parameters and the vLLM/SGLang/llama.cpp extensions (top_k, min_p, "
        "repetition_penalty, ...); put any other request field under the role's `extra_body`"
    )
