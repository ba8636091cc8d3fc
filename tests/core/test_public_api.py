"""The public door: runtime/__init__.py re-exports what embedders and plugins need."""

import inspect

import runtime
import runtime.errors


def test_all_names_exist_and_are_unique():
    assert len(set(runtime.__all__)) == len(runtime.__all__)
    for name in runtime.__all__:
        assert hasattr(runtime, name), name


def test_every_error_class_is_exported():
    errors = {
        n for n, obj in vars(runtime.errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == "runtime.errors"
    }
    assert errors <= set(runtime.__all__), errors - set(runtime.__all__)


def test_component_base_classes_exported():
    for name in ("Source", "Transform", "Sink", "System", "Runtime", "Registry"):
        assert name in runtime.__all__
