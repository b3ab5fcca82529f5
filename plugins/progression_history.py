"""The plugin that puts the "Progression" page (progression_history_page.py) into Airflow's API server and its
navigation. The page imports FastAPI and the API server's security: about 1 s that every process loading the
plugins folder would pay (each `airflow` command, `dags test`, each task), where only the API server serves it. So
the server mounts a stand-in here that imports the page on its first request; .airflowignore keeps the page itself
from the plugin manager."""

from __future__ import annotations

import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

BASE = "/progression"


class HistoryPage:
    """An ASGI app that is the page, imported when the first request comes."""

    def __init__(self) -> None:
        self._page: Any = None
        self._importing = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.page()(scope, receive, send)

    def page(self) -> Any:
        if self._page is None:
            with self._importing:
                if self._page is None:
                    from progression_history_page import app

                    self._page = app
        return self._page


class ProgressionHistoryPlugin(AirflowPlugin):
    name = "progression_history"
    fastapi_apps = [{"app": HistoryPage(), "url_prefix": BASE, "name": "Progression run history"}]
    external_views = [{"name": "Progression", "href": f"{BASE}/", "destination": "nav", "url_route": "progression"}]
