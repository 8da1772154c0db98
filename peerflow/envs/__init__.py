"""Tool environments: a domain's database and tools, held per task behind an HTTP service.

A domain (a folder: `db.json`, `policy.md`, `tools.py`, optionally `user_db.json`) is what
both sides of a dual-control conversation act on: the assistant through its tools, the
user through theirs. `peerflow.envs.server` serves isolated environments of one domain
over HTTP; `peerflow.services.tool_env` is the run's client and pool of such servers; the
`environment` and `env_reward` agents and the `DualControl` workflow drive a conversation
through them; `peerflow.envs.reward` scores a finished one by replaying its tool calls.
"""

from peerflow.envs.domain import Domain, Environment, Toolset, load_domain
from peerflow.envs.workflow import DualControl

__all__ = ["Domain", "DualControl", "Environment", "Toolset", "load_domain"]
