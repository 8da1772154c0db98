"""User code: resolve "module:attribute" names from YAML, find it, ship it, and blame it.

A config names its own Python code (`module:function`, `module:Class`) and that code lives
beside the config file, so the config's folder goes on the import path (`add_import_path`,
done by `Pipeline`, hence by `peerflow check`, `peerflow run` and every Ray actor). On Ray
the same folder (or `runtime.working_dir`) and `runtime.py_modules` ship to the workers
through a Ray runtime environment (`ray_runtime_env`). When user code raises, `user_frame`
finds the innermost line of user code, so errors can name the file and line to look at.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

# Never shipped to Ray workers: environments, VCS data and caches are large and useless there.
WORKING_DIR_EXCLUDES = (
    ".git",
    ".hg",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "node_modules",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    # Datasets and outputs: only the driver reads and writes them, and a large one would
    # exceed what Ray will upload. (A small `.json` or `.csv` table a tool reads still goes.)
    "*.jsonl",
    "*.jsonl.*",
    "*.ndjson",
    "*.parquet",
    "*.arrow",
    "*.gz",
    "*.zst",
    "*.runs",
    "*.lock",
)


def add_import_path(folder: str | Path) -> None:
    """Put `folder` first on `sys.path` (once), as Python does for a script's own folder."""
    path = str(Path(folder).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
        importlib.invalidate_caches()


def load_object(path: str, *, what: str = "object") -> Any:
    """Import `module:attr` (or `module.attr`), with an error that says which name failed."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{what} {path!r}: expected 'module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            hint = " (modules are looked up in the config file's folder, then on sys.path)"
        raise ValueError(
            f"{what} {path!r}: cannot import module {module_name!r}: {exc}{hint}"
        ) from None
    except Exception as exc:  # the module itself is broken (SyntaxError, a raise at import)
        where = user_frame(exc)
        at = f" at {where[0]}:{where[1]}" if where else ""
        raise ValueError(
            f"{what} {path!r}: importing module {module_name!r} failed{at}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no {attr!r}") from None
    return obj


# --- Ray -----------------------------------------------------------------------------------


def ray_runtime_env(config: Any) -> dict[str, Any] | None:
    """The `runtime_env` that ships a run's user code to Ray workers, or None.

    `working_dir` is `runtime.working_dir` (default: the config file's folder; "" ships
    none, e.g. when `ray job submit --working-dir` already did). Ray puts it on the workers'
    import path and starts them in it. It leaves out VCS folders, virtualenvs and caches
    (`WORKING_DIR_EXCLUDES`), the dataset and the output, which only the driver reads and
    writes. `py_modules` are more folders or files of modules, relative to the config.
    """
    rt = config.runtime
    env: dict[str, Any] = {}
    working = rt.working_dir
    if working is None:
        # A config built in code (not read from a file) has no folder of its own to ship.
        working = "" if getattr(config, "_source", "<config>") == "<config>" else "."
    if working:
        root = config.resolve(working).resolve()
        excludes = list(WORKING_DIR_EXCLUDES)
        for own in (config.dataset.path, config.output.path):
            path = config.resolve(own).resolve()
            if path.is_relative_to(root):
                rel = "/" + path.relative_to(root).as_posix()
                # the file, its lock, summary and runs folder, and `<stem>.errors.jsonl`
                excludes += [rel, rel + ".*", rel.split(".", 1)[0] + ".errors.*"]
        env["working_dir"] = str(root)
        env["excludes"] = excludes
    if rt.py_modules:
        env["py_modules"] = [str(config.resolve(p).resolve()) for p in rt.py_modules]
    return env or None


# --- blaming user code -----------------------------------------------------------------------


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    """Folders whose code is not the user's: peerflow itself, the stdlib, installed packages."""
    dirs = {str(Path(__file__).resolve().parent)}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        with_path = sysconfig.get_paths().get(name)
        if with_path:
            dirs.add(str(Path(with_path).resolve()))
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


@functools.lru_cache(maxsize=1024)
def _is_user_file(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return False
    try:
        path = str(Path(filename).resolve())
    except OSError:
        return False
    return not path.startswith(_library_dirs()) and "site-packages" not in path


def _shown(filename: str) -> str:
    """A path relative to the working folder when inside it, else absolute."""
    try:
        return (
            os.path.relpath(filename)
            if Path(filename).resolve().is_relative_to(Path.cwd())
            else filename
        )
    except (OSError, ValueError):
        return filename


def user_frame(exc: BaseException) -> tuple[str, int, str, str] | None:
    """(file, line, module, function) of the innermost user-code frame where `exc` arose.

    The exception chain is searched from the original error outwards (a `ParseError`
    raised `from` the user's own exception is blamed on the user's line). User code is
    any file outside peerflow, the standard library and installed packages.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not c for c in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    for error in reversed(chain):
        found = None
        tb = error.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if _is_user_file(code.co_filename):
                module = tb.tb_frame.f_globals.get("__name__", "?")
                name = getattr(code, "co_qualname", code.co_name)  # 3.10 has no co_qualname
                found = (code.co_filename, tb.tb_lineno, module, name)
            tb = tb.tb_next
        if found is not None:
            return (_shown(found[0]), *found[1:])
    return None
