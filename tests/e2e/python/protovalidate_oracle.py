"""The reference verdict: protovalidate (PyPI) on requests the Rust test generates.

Imports every module that grpcio-tools generated into PYTHONPATH (the shop contracts and the
vendored buf/validate protos), then reads one request per line on stdin,
`<message full name> <base64 of its encoding>`, and answers one JSON line per request on
stdout: the list of violations as `[field path, rule id]`, field paths spelled as the Rust
validator spells them (`lines[2].quantity`). One process serves the whole batch.

With `send` as its argument it is a plain grpcio client instead: each stdin line is
`<address> <method path> <base64 request>`, sent as is; each answer line is the status code's
name (`OK`, `INVALID_ARGUMENT`...). grpcio refuses response metadata over 8 KiB with
`RESOURCE_EXHAUSTED`, so this is where an oversized error status would show.
"""

import base64
import importlib
import json
import os
import pathlib
import sys

import protovalidate
from google.protobuf import descriptor_pool, message_factory


def import_generated(root: pathlib.Path) -> None:
    for path in sorted(root.rglob("*_pb2.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        importlib.import_module(module)


def field_path(violation) -> str:
    parts = []
    for element in violation.proto.field.elements:
        part = element.field_name
        subscript = element.subscript
        if subscript is not None:
            kind, value = subscript.field, subscript.value
            if kind == "index":
                part += f"[{value}]"
            elif kind == "string_key":
                part += "[" + json.dumps(value) + "]"
            else:
                part += f"[{value}]"
        parts.append(part)
    return ".".join(parts)


def send() -> int:
    import time

    import grpc

    channels = {}
    for line in sys.stdin:
        address, path, payload = line.rstrip("\n").split(" ")
        if address not in channels:
            channels[address] = grpc.insecure_channel(address)
        call = channels[address].unary_unary(path)
        # The servers' rate limit (1,000/s, burst 200) must not be what answers.
        time.sleep(0.002)
        try:
            call(base64.b64decode(payload), timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        sys.stdout.write(code.name + "\n")
        sys.stdout.flush()
    return 0


def main() -> int:
    if sys.argv[1:] == ["send"]:
        return send()
    import_generated(pathlib.Path(os.environ["SHOP_GENERATED"]))
    pool = descriptor_pool.Default()
    classes = {}
    validator = protovalidate.Validator()
    for line in sys.stdin:
        name, _, payload = line.strip().partition(" ")
        if name not in classes:
            classes[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        message = classes[name]()
        message.ParseFromString(base64.b64decode(payload))
        violations = validator.collect_violations(message)
        answer = [[field_path(v), v.proto.rule_id] for v in violations]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
