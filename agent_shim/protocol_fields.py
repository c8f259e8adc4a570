"""Constrained field types and limits shared by every protocol message.

Every bound lives here, once, so that agent-facing and operator-facing models
cannot drift apart on what an id, a digest or a timestamp may look like: the
hub faces code it does not trust, and a looser copy of a type in one direction
would be a hole in the other.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import ConfigDict, Field

PROTOCOL_VERSION: Final = 1
#: Largest frame the hub accepts. Actions carry dry-run output, so this is
#: generous, but bounded: memory per connection stays predictable.
MAX_MESSAGE_BYTES: Final = 256 * 1024

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,80}$")]
Name = Annotated[str, Field(min_length=1, max_length=128)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Signature = Annotated[str, Field(pattern=r"^(|[0-9a-f]{128})$")]
KeyId = Annotated[str, Field(pattern=r"^(|[0-9a-f]{16})$")]
PublicKeyHex = Annotated[str, Field(pattern=r"^(|[0-9a-f]{64})$")]
#: Domain tag of a decision signature: never valid as a checkpoint signature
#: (``towerctl/checkpoint/v1``) or anything else the hub's key signs.
DECISION_SIG_TAG: Final = b"towerctl/decision/v1\x00"
Text = Annotated[str, Field(max_length=4096)]
LongText = Annotated[str, Field(max_length=65536)]
Millis = Annotated[int, Field(ge=0, le=2**53)]
Count = Annotated[int, Field(ge=0, le=2**31)]
Pid = Annotated[int, Field(ge=0, le=2**31)]
ExitCode = Annotated[int, Field(ge=-(2**31), le=2**31)]

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
