"""MkDocs hook: render the config reference from the pydantic models at build time.

`docs/reference/config.md` holds a marker; this hook replaces it with the tables
`peerflow.schema.reference_markdown()` builds from `peerflow.config`, the agents'
`Options` models and the simulator's options. The page can therefore never drift
from the code, and a page without its marker fails the build.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- peerflow:config-reference -->"
_rendered: list[str] = []


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from peerflow.schema import reference_markdown

    _rendered.append(page.file.src_path)
    return markdown.replace(MARKER, reference_markdown())


def on_pre_build(config: Any) -> None:
    _rendered.clear()


def on_post_build(config: Any) -> None:
    if not _rendered:
        raise RuntimeError(f"no page holds {MARKER}: the config reference was not generated")
