"""Config and request-log helpers of the tests of the ``rest`` source over work units against the
survey API (:mod:`tests.servers.survey_api`): pipe ``surveys`` collects the survey ids, pipe
``responses`` reads each survey's responses per time window, one work unit per survey x window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.rest.conftest import system
from tests.servers.survey_api import SurveyApi

#: the weeks the default survey API spreads its responses over: 6 closed weekly windows
WEEKS = {"start": "2024-01-01", "end": "2024-02-12", "unit": "week"}
PAGE_SIZE = 3


def survey_config(url: str, work_units: dict[str, Any], **pipe: Any) -> list[dict[str, Any]]:
    """The system and the two pipes; ``work_units`` extends ``{"dataset": "surveys"}``."""
    api = system(url, operations={
        "list-surveys": {"url": "/surveys", "payload_property": "data", "id_expression": "{{ id }}",
                         "paging": {"type": "page", "page_size": 2, "size_param": "per_page",
                                    "total_path": "total"}},
        "list-responses": {
            "url": "/surveys/{{ unit.id }}/responses",
            "params": {"from": "{{ unit.window_start }}", "to": "{{ unit.window_end }}"},
            "payload_property": "data", "id_expression": "{{ id }}", "updated_expression": "{{ submitted }}",
            "paging": {"type": "page", "page_size": PAGE_SIZE, "size_param": "per_page", "total_path": "total"}},
    })
    source = {"type": "rest", "system": "api", "operation": "list-responses", "supports_since": True,
              "since_property_name": "from", "work_units": {"dataset": "surveys", **work_units}}
    return [api, {"_id": "surveys", "type": "pipe", "source": {"type": "rest", "system": "api",
                                                                "operation": "list-surveys"}},
            {"_id": "responses", "type": "pipe", "source": source, **pipe}]


@dataclass(frozen=True)
class Asked:
    """One request for responses in the server's log."""

    survey: str
    start: str | None
    end: str | None
    page: int

    @property
    def window(self) -> tuple[str, str | None]:
        """Which unit asked: (survey, window end); ``from`` is the window's start only when the
        unit has no watermark yet."""
        return self.survey, self.end


def asked(api: SurveyApi, since: int = 0, until: int | None = None) -> list[Asked]:
    """The requests for responses in entries ``since`` to ``until`` (exclusive; None: the end)
    of the request log, in order."""
    found = []
    for line in api.requests[since:until]:
        parts = urlsplit(line.split(" ", 1)[1])
        path = parts.path.split("/")
        if len(path) != 4 or path[3] != "responses":
            continue
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        found.append(Asked(path[2], query.get("from"), query.get("to"), int(query.get("page", "1"))))
    return found


def server_responses(api: SurveyApi) -> dict[str, dict[str, Any]]:
    """Every response the server holds, by id."""
    return {r["id"]: r for answers in api.responses.values() for r in answers.values()}


def unwrapped(entity: dict[str, Any]) -> dict[str, Any]:
    """An entity without its ``_``-keys: the record as the server sent it."""
    return {k: v for k, v in entity.items() if not k.startswith("_")}
