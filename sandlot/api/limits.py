"""Bounds on every list, string and map the API stores (issue 12).

Without them one request could store megabytes (20,000 metadata keys were accepted, and
every ``GET /v2/sandboxes`` then carried them), and env vars travel to envd in one
environment string, which the kernel caps at 128 KiB. E2B does not document numbers for
these, so they are generous for real use and small for storage: a violation is a 400 (E2B
routes) or Prime's 422 naming the field and the bound, and nothing is stored.
"""
from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

METADATA_ENTRIES = 100
METADATA_KEY = 256
METADATA_VALUE = 2048
METADATA_BYTES = 32 * 1024
ENV_ENTRIES = 500
ENV_NAME = 256
ENV_VALUE = 32 * 1024
ENV_BYTES = 64 * 1024
NETWORK_ENTRIES = 256   # allow/deny lists (IPs, CIDRs, domains)
NAME = 255              # names, hosts, image refs, template ids
LABELS = 64
LABEL = 128
COMMAND = 16 * 1024     # start/ready commands
JSON_BYTES = 64 * 1024  # free-form objects (mcp, a build step)


def _byte_total(limit: int, what: str) -> AfterValidator:
    def check(value: dict[str, str] | None) -> dict[str, str] | None:
        if value:
            size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
            if size > limit:
                raise ValueError(f"{what} takes {size} bytes; at most {limit} are allowed")
        return value
    return AfterValidator(check)


def _json_size(limit: int) -> AfterValidator:
    def check(value: Any) -> Any:
        size = len(json.dumps(value, default=str))
        if size > limit:
            raise ValueError(f"takes {size} bytes as JSON; at most {limit} are allowed")
        return value
    return AfterValidator(check)


def text(max_length: int, min_length: int = 0) -> Any:
    """A bounded string type built at run time (pydantic reads it; a type checker can't):
    prefer the named aliases below in annotations."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length)]


def texts(max_items: int, max_length: int = NAME) -> Any:
    """A bounded list of bounded strings built at run time; see :func:`text`."""
    item: Any = text(max_length)
    return Annotated[list[item], Field(max_length=max_items)]


# Named, statically spelled forms of text()/texts(), so annotations using them type-check.
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=METADATA_KEY)]
MetadataValue = Annotated[str, StringConstraints(min_length=0, max_length=METADATA_VALUE)]
EnvName = Annotated[str, StringConstraints(min_length=1, max_length=ENV_NAME)]
EnvValue = Annotated[str, StringConstraints(min_length=0, max_length=ENV_VALUE)]
Name = Annotated[str, StringConstraints(min_length=0, max_length=NAME)]
Label = Annotated[str, StringConstraints(min_length=0, max_length=LABEL)]
Tag = Annotated[str, StringConstraints(min_length=0, max_length=128)]
ShortId = Annotated[str, StringConstraints(min_length=0, max_length=64)]

Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=METADATA_ENTRIES),
                     _byte_total(METADATA_BYTES, "metadata")]
EnvVars = Annotated[dict[EnvName, EnvValue], Field(max_length=ENV_ENTRIES),
                    _byte_total(ENV_BYTES, "environment variables")]
NetworkList = Annotated[list[Name], Field(max_length=NETWORK_ENTRIES)]
Labels = Annotated[list[Label], Field(max_length=LABELS)]
Tags = Annotated[list[Tag], Field(max_length=32)]  # template tags (build and tag/untag)
DnsServers = Annotated[list[Name], Field(max_length=8)]
LabelFilter = Annotated[list[Label], Field(max_length=50)]  # Prime's list filter
SandboxIds = Annotated[list[ShortId], Field(max_length=500)]  # Prime's list filter
SandboxIdBatch = Annotated[list[ShortId], Field(max_length=100)]  # Prime's bulk delete
JsonObject = Annotated[dict[str, Any], _json_size(JSON_BYTES)]
JsonObjects = Annotated[list[JsonObject], Field(max_length=64)]
