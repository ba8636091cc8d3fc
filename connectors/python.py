"""The ``python`` transform: calls ``module:function`` on each batch.

The function takes a list of entities and returns a list of entities (it may filter, change or
add). It may be a plain function (run in a worker thread, so it does not block the event loop) or
a coroutine function. Modules are imported from ``sys.path``, which includes the config directory.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import anyio
from pydantic import field_validator

from runtime.components import ComponentConfig, Transform
from runtime.entities import Entity
from runtime.errors import BadDataError


def resolve(ref: str) -> Callable[..., Any]:
    """Import ``module:function``.

    Raises:
        ValueError: malformed reference, module not importable, or not callable.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"must be 'module:function', got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise ValueError(f"module {module_name!r} has no function {attr!r}")
    return func


class PythonTransformConfig(ComponentConfig):
    """``{"type": "python", "function": "module:function"}``.

    Attributes:
        function: ``module:function`` taking a batch (``list[dict]``) and returning the entities
            to pass on (``list[dict]``); imported from the config directory or the Python path.
    """

    type: Literal["python"]
    function: str

    @field_validator("function")
    @classmethod
    def _importable(cls, value: str) -> str:
        resolve(value)
        return value


class PythonTransform(Transform):
    """Applies a Python function to each batch."""

    Config: ClassVar[type[ComponentConfig]] = PythonTransformConfig
    config: PythonTransformConfig

    async def open(self) -> None:
        self.func = resolve(self.config.function)

    async def transform(self, entities: list[Entity]) -> list[Entity]:
        """Raises BadDataError when the function does not return a list of objects."""
        if inspect.iscoroutinefunction(self.func):
            out = await self.func(entities)
        else:
            out = await anyio.to_thread.run_sync(self.func, entities)
        if not isinstance(out, list) or not all(isinstance(e, dict) for e in out):
            raise BadDataError(
                f"transform function returned {type(out).__name__}, expected a list of objects",
                location=self.config.function,
            )
        return out
