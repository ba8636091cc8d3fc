"""The plain-variable fast path of runtime.templates renders exactly what Jinja renders."""

from __future__ import annotations

import pytest

from runtime.errors import BadDataError
from runtime.templates import Template

VALUES = [5, None, True, 1.5, "x", "", [1, "a"], {"a": "b"}, 10**30, "é\x00"]


@pytest.mark.parametrize("source", ["{{ Id }}", "{{Id}}", "{{  Id  }}"])
@pytest.mark.parametrize("value", VALUES)
def test_a_plain_variable_renders_as_jinja_does(source: str, value: object) -> None:
    fast = Template(source, "id_expression")
    slow = Template(source, "id_expression")
    slow._plain = None  # the Jinja path
    assert fast._plain == "Id"
    assert fast.render("here", Id=value) == slow.render("here", Id=value)


def test_an_undefined_plain_variable_is_the_same_error() -> None:
    fast, slow = Template("{{ Id }}", "id_expression"), Template("{{ Id }}", "id_expression")
    slow._plain = None
    errors = []
    for t in (fast, slow):
        with pytest.raises(BadDataError) as caught:
            t.render("record 3", other=1)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "'Id' is undefined" in errors[0]


@pytest.mark.parametrize("source", ["{{ none }}", "{{ a.b }}", "{{ a }}{{ b }}", "x{{ a }}", "{{ a|upper }}"])
def test_anything_else_takes_the_jinja_path(source: str) -> None:
    assert Template(source, "t")._plain is None
