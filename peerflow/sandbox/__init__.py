"""A sandbox for untrusted code: isolated executions served over HTTP.

`peerflow.sandbox.isolation` builds one execution's bubblewrap command line and limits;
`peerflow.sandbox.runner` runs it and classifies what happened; `peerflow.sandbox.server`
serves executions and sessions (`python -m peerflow.sandbox.server`);
`peerflow.services.sandbox.SandboxService` is a run's client and pool of such servers
(`kind: sandbox`). See docs/sandbox.md for what is isolated and what is not.
"""

from peerflow.sandbox.isolation import LANGUAGES, Isolation, Limits

__all__ = ["LANGUAGES", "Isolation", "Limits"]
