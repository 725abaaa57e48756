"""Generate remote_pb2.py, types_pb2.py and frames_pb2.py from the .proto files beside this script.

remote.proto and types.proto are Prometheus' (prompb/), kept as Prometheus writes them: their gogoproto options
(Go code generation hints) are stripped here, since protoc for Python has no use for them and would need
gogo.proto. frames.proto is Rigwatch's own view of a WriteRequest (its series left encoded).
Run after changing a .proto file (needs requirements-dev.txt: grpcio-tools ships protoc)::

    python -m bot.intake.prompb.generate
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PACKAGE = "bot.intake.prompb"
PROTOS = ("types.proto", "remote.proto", "frames.proto")
GOGO_IMPORT = re.compile(r'^import "gogoproto/gogo\.proto";\n', re.MULTILINE)
GOGO_OPTIONS = re.compile(r"\s*\[\(gogoproto\.[^]]*\]")


def strip_gogo(text: str) -> str:
    """The .proto text without the gogoproto import and field options."""
    return GOGO_OPTIONS.sub("", GOGO_IMPORT.sub("", text))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for name in PROTOS:
            (Path(tmp) / name).write_text(strip_gogo((HERE / name).read_text()))
        if protoc.main(["protoc", f"--proto_path={tmp}", f"--python_out={HERE}", *PROTOS]) != 0:
            return 1
    # protoc imports a sibling as a top-level module; here it lives in a package.
    remote = HERE / "remote_pb2.py"
    remote.write_text(remote.read_text().replace("import types_pb2 as types__pb2",
                                                 f"from {PACKAGE} import types_pb2 as types__pb2"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
