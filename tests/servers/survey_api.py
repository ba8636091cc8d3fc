"""A survey test API (aiohttp) for DIL's 2-step ingestion (``shared/reference/dil.md`` section 5.4):
step 1 lists the survey ids, step 2 reads each survey's responses by time window and page.

Ground truth is :attr:`SurveyApi.surveys` (id -> ``{"id", "name", "created"}``, in insertion order)
and :attr:`SurveyApi.responses` (survey id -> response id -> ``{"id", "survey_id", "submitted",
"score", "answers"}``, ``submitted`` ISO 8601 UTC ``2024-01-03T10:20:30Z``), made by
:meth:`SurveyApi.generate` from a seed: responses spread uniformly over several weeks from
:data:`START`. :meth:`add_survey`, :meth:`remove_survey`, :meth:`add_response` and
:meth:`remove_response` change it; :meth:`window` is the expected answer for a window. Written
independently of any client code. Endpoints (``page`` from 1, ``per_page`` 1..1000, default 50;
every body ``{"data", "page", "per_page", "total", "next"}``, ``next`` the relative URL of the next
page or null):

===============================================  ==================================================
``GET /surveys``                                 the surveys, in insertion order
``GET /surveys/{id}/responses``                  that survey's responses with ``from <= submitted
                                                 < to`` (``from``, ``to``: ISO 8601, naive = UTC,
                                                 either may be absent), ordered by ``submitted``
                                                 then ``id``; 404 for an unknown survey
===============================================  ==================================================

A bad parameter is a 400 ``{"error": "bad_parameter", "message"}`` naming it. Faults are those of
:mod:`tests.servers.faults` (queued by method, path prefix and query substring; ``"repeat": True``
for "every request for survey ``s3`` fails": ``{"status": 500, "path": "/surveys/s3/", "repeat":
True}``; seeded chaos); :attr:`requests` logs ``"METHOD /path?query"``. With :attr:`token` set,
every request needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from tests.servers.faults import FaultyServer, instant, run_forever, serve

__all__ = ["START", "SurveyApi", "serve"]

START = datetime(2024, 1, 1, tzinfo=UTC)
MAX_PER_PAGE = 1000
Response = dict[str, Any]


def iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC with a ``Z``, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SurveyApi(FaultyServer):
    """State and behaviour of the survey API; see the module docstring."""

    def __init__(self, surveys: int = 5, responses: int = 40, weeks: int = 6, seed: int = 0) -> None:
        super().__init__()
        self.surveys: dict[str, dict[str, Any]] = {}
        self.responses: dict[str, dict[str, Response]] = {}
        self.generate(surveys, responses, weeks, seed)

    # ---- ground truth -------------------------------------------------------------------------
    def generate(self, surveys: int, responses: int, weeks: int, seed: int) -> None:
        """Add surveys ``s1``..``sN``, each with ``responses`` responses submitted at seeded random
        seconds within ``weeks`` weeks from :data:`START` (the same seed gives the same data)."""
        rng = random.Random(seed)
        span = weeks * 7 * 86_400
        for k in range(1, surveys + 1):
            survey = self.add_survey(f"s{k}", f"Survey {k}")
            for n in range(1, responses + 1):
                submitted = START + timedelta(seconds=rng.randrange(span))
                self.add_response(survey["id"], submitted, f"{survey['id']}-r{n:04}",
                                  score=rng.randint(0, 10), answers={"q1": rng.choice(["yes", "no", "maybe"])})

    def add_survey(self, survey_id: str, name: str) -> dict[str, Any]:
        survey = {"id": survey_id, "name": name, "created": iso(START)}
        self.surveys[survey_id] = survey
        self.responses.setdefault(survey_id, {})
        return survey

    def remove_survey(self, survey_id: str) -> None:
        del self.surveys[survey_id]
        del self.responses[survey_id]

    def add_response(self, survey_id: str, submitted: datetime, response_id: str | None = None,
                     **fields: Any) -> Response:
        """Add (or replace) a response to a known survey; the id defaults to the next number.

        Raises:
            KeyError: unknown survey.
        """
        answers = self.responses[survey_id]
        response_id = response_id or f"{survey_id}-r{len(answers) + 1:04}"
        response = {"id": response_id, "survey_id": survey_id, "submitted": iso(submitted), **fields}
        answers[response_id] = response
        return response

    def remove_response(self, survey_id: str, response_id: str) -> None:
        del self.responses[survey_id][response_id]

    def window(self, survey_id: str, start: datetime | None = None, end: datetime | None = None) -> list[Response]:
        """The responses of a survey with ``start <= submitted < end``, in the order the API pages them."""
        timed = sorted((instant(r["submitted"]), r["id"], r) for r in self.responses[survey_id].values())
        return [r for moment, _, r in timed if (start is None or moment >= start) and (end is None or moment < end)]

    # ---- app ----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/surveys", self._surveys)
        router.add_get("/surveys/{id}/responses", self._responses)

    async def _surveys(self, request: web.Request) -> web.Response:
        return self._page(request, list(self.surveys.values()))

    async def _responses(self, request: web.Request) -> web.Response:
        survey_id = request.match_info["id"]
        if survey_id not in self.surveys:
            return self.error(404, "not_found", f"{request.path}: no survey {survey_id!r}")
        start, end = _moment(request, "from"), _moment(request, "to")
        return self._page(request, self.window(survey_id, start, end))

    @staticmethod
    def _page(request: web.Request, rows: list[dict[str, Any]]) -> web.Response:
        page, per = _number(request, "page", 1, None), _number(request, "per_page", 50, MAX_PER_PAGE)
        more = page * per < len(rows)
        following = request.rel_url.update_query(page=page + 1).path_qs if more else None
        body = {"data": rows[(page - 1) * per : page * per], "page": page, "per_page": per, "total": len(rows),
                "next": following}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _number(request: web.Request, name: str, default: int, most: int | None) -> int:
    """An integer query parameter from 1 (to ``most``).

    Raises:
        aiohttp.web.HTTPBadRequest: not such an integer.
    """
    text = request.query.get(name, str(default))
    if not text.isdigit() or int(text) < 1 or (most is not None and int(text) > most):
        top = f"..{most}" if most else " or more"
        raise _bad(f"{request.path_qs}: {name}={text!r} is not an integer 1{top}")
    return int(text)


def _moment(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 query parameter, or None when absent.

    Raises:
        aiohttp.web.HTTPBadRequest: not ISO 8601.
    """
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return instant(text)
    except ValueError:
        raise _bad(f"{request.path_qs}: {name}={text!r} is not ISO 8601") from None


def _bad(message: str) -> web.HTTPBadRequest:
    """The 400 answering a bad query parameter: ``{"error": "bad_parameter", "message"}``."""
    return web.HTTPBadRequest(body=orjson.dumps({"error": "bad_parameter", "message": message}),
                              content_type="application/json")


def main() -> None:
    """``python -m tests.servers.survey_api --port N``: serve on 127.0.0.1:N (0: ephemeral) in its
    own process; prints the base URL, then serves until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--surveys", type=int, default=5)
    parser.add_argument("--responses", type=int, default=40, help="responses per survey")
    parser.add_argument("--weeks", type=int, default=6, help="weeks the responses are spread over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    args = parser.parse_args()
    api = SurveyApi(args.surveys, args.responses, args.weeks, args.seed)
    api.latency = args.latency
    run_forever(api, args.port)


if __name__ == "__main__":
    main()
