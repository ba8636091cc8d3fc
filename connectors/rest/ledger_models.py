"""Config keys of every REST component that sends with side effects and keeps an outcome ledger
(:mod:`connectors.rest.ledger`): the ``rest`` sink and the side-effecting ``rest`` transform."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SideEffectConfig(BaseModel):
    """The outcome ledger's keys.

    Attributes:
        response_dataset: the outcome ledger, also the response dataset (DIL): one entity per
            entity sent, ``_id`` = the entity's ``_id``, a new version per change with ``state``
            (``sending``, ``sent``, ``failed``, ``unknown``, ``invalid``,
            ``modified-in-system``), ``operation``, ``payload_hash``, ``attempt``, ``status``,
            ``error`` (an excerpt), ``generated_id``, ``at_us`` (microseconds since the epoch),
            ``run_id`` and ``response`` (status, body, validation errors of a 4xx); unset:
            ``<pipe>-responses``.
        idempotency_key_header: header carrying the deterministic idempotency key (a hash of the
            pipe, the ``_id`` and the payload hash) on non-idempotent sends (POST, PATCH);
            ``null``: none.
        idempotency_key_honoured: the target replays the first response for a repeated key
            (Stripe, the IETF draft): a send whose response was lost is then retried like an
            idempotent one, in the run (the system's ``retry_strategy``) and in later runs. False
            (the default): a lost response leaves the entity ``unknown``; before it is sent
            again ``lookup_operation`` (if set) asks the target whether the write was applied.
        lookup_operation: the system operation looking an entity up by its external reference
            (templates see ``entity``); a 2xx with at least one record at its
            ``payload_property`` means the write was applied (the record's
            ``generated_id_property`` is the generated id), a 404 or no record that it was not.
            Unset: an unknown outcome is sent again (at least once).
        generated_id_property: dotted path of the generated id in an insert's response body
            (and in a lookup's record).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    response_dataset: str | None = Field(default=None, min_length=1)
    idempotency_key_header: str | None = "Idempotency-Key"
    idempotency_key_honoured: bool = False
    lookup_operation: str | None = None
    generated_id_property: str = "id"
