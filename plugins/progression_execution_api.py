"""The in-process execution API answers in the Task SDK's own API version only.

`airflow dags test`, the dag processor and the triggerer run their tasks' calls through an in-process copy of the
execution API (`InProcessExecutionAPI`). On its first request Cadwyn builds the routes of every version of that
API Airflow has shipped, nine in 3.3: about 4 s of every `dags test` here, more than a one-row import's own work.
The only client of an in-process copy is this installation's Task SDK, which speaks the newest version, so the
copy is given that version alone. The API server's execution API, which workers of other versions may call, is
not touched. Should a later Airflow not fit these assumptions, the copy keeps every version, as before.

The execution API is imported by the processes that use it, when they use it; this module patches it as it is
imported rather than importing it (about 1 s) into every process that loads the plugins folder.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

EXECUTION_API = "airflow.api_fastapi.execution_api.app"
# Cadwyn's tag on routes that exist only in older versions (`only_exists_in_older_versions`).
OLDER_VERSIONS_ONLY = "_CADWYN_DELETED_ROUTE"


def newest_version_only(app: Any) -> bool:
    """Make a freshly built in-process execution API serve only the Task SDK's version, routes built now; False
    (and the app as it was) when it does not fit."""
    from airflow.sdk.api.datamodels._generated import API_VERSION
    from cadwyn import HeadVersion, Version, VersionBundle
    from fastapi.routing import APIRoute

    every = app.versions
    if app._cadwyn_initialized or every.head_version.changes or every.versions[0].value != API_VERSION:
        return False
    router = app._latest_version_router
    routes = router.routes
    # The same context variable: the version middleware, made with the app, sets the bundle's variable.
    app.versions = VersionBundle(HeadVersion(), Version(API_VERSION), api_version_var=every.api_version_var)
    router.routes = [r for r in routes if not (isinstance(r, APIRoute) and OLDER_VERSIONS_ONLY in r.tags)]
    try:
        app._cadwyn_initialize()
    except Exception:
        log.warning("the in-process execution API keeps every version", exc_info=True)
        app.versions, router.routes = every, routes
        return False
    return True


def _patch(module: ModuleType) -> None:
    in_process = module.InProcessExecutionAPI
    if getattr(in_process, "_progression_patched", False):  # the plugins folder may be loaded twice
        return
    builds = in_process.__getattr__  # attrs builds its cached properties (`app`) here, on first access

    def __getattr__(self: Any, name: str) -> Any:
        value = builds(self, name)
        if name == "app":
            newest_version_only(value)
        return value

    in_process.__getattr__ = __getattr__
    in_process._progression_patched = True


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the execution API's module through the other finders and patches it once it has run."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != EXECUTION_API:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            runs = spec.loader.exec_module

            def run_then_patch(module: ModuleType) -> None:
                runs(module)
                _patch(module)

            spec.loader.exec_module = run_then_patch  # type: ignore[method-assign]
        return spec


if EXECUTION_API in sys.modules:
    _patch(sys.modules[EXECUTION_API])
elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PatchOnImport())
