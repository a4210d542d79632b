"""Behaviour kept by the typing clean-up (issue 13): the bounded-list types spelled statically in
``api.limits`` are the same types as ``texts()`` built them, and the OCI image-config readers still
turn a hostile config's wrong types into ignored values or a ``PullError``, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from sandlot.api import limits
from sandlot.templates import oci
from sandlot.templates.steps import BuildConfig

NAMED = [
    (limits.texts(32, 128), limits.Tags),
    (limits.texts(8), limits.DnsServers),
    (limits.texts(limits.NETWORK_ENTRIES), limits.NetworkList),
    (limits.texts(limits.LABELS, limits.LABEL), limits.Labels),
    (limits.texts(50, limits.LABEL), limits.LabelFilter),
    (limits.texts(500, 64), limits.SandboxIds),
    (limits.texts(100, 64), limits.SandboxIdBatch),
]


@pytest.mark.parametrize(("built", "named"), NAMED)
def test_named_bounded_lists_are_the_types_texts_builds(built: Any, named: Any) -> None:
    assert TypeAdapter(named).json_schema() == TypeAdapter(built).json_schema()


def test_tags_take_real_tags_and_refuse_too_many_or_too_long() -> None:
    tags = TypeAdapter(limits.Tags)
    assert tags.validate_python(["v1", "x" * 128]) == ["v1", "x" * 128]
    with pytest.raises(ValidationError, match="at most 32 items"):
        tags.validate_python(["t"] * 33)
    with pytest.raises(ValidationError, match="at most 128 characters"):
        tags.validate_python(["x" * 129])


def test_metadata_keys_must_be_non_empty_and_bounded() -> None:
    metadata = TypeAdapter(limits.Metadata)
    assert metadata.validate_python({"k": ""}) == {"k": ""}
    with pytest.raises(ValidationError):
        metadata.validate_python({"": "v"})
    with pytest.raises(ValidationError):
        metadata.validate_python({"k" * (limits.METADATA_KEY + 1): "v"})


def test_image_config_with_wrong_types_is_read_as_far_as_it_makes_sense() -> None:
    config = oci._config({"Env": ["A=1", 5, "NOEQUALS", "B=x=y", None, "A=2"], "User": 3, "WorkingDir": ""})
    assert config == BuildConfig(env={"A": "2", "B": "x=y"}, user="root", workdir="/")
    assert oci._config({"Env": "A=1", "User": "app:app", "WorkingDir": "/srv"}) == BuildConfig(
        env={}, user="app", workdir="/srv")


def test_a_pulled_layout_naming_a_non_string_digest_is_a_pull_error(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text(json.dumps({"manifests": [{"digest": 12345}]}))
    with pytest.raises(oci.PullError, match="12345"):
        oci._verified_layout(tmp_path, "sha256:" + "0" * 64, [])
