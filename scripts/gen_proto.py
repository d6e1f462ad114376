"""Generate broker/pb from proto/.

The `-Ibroker/pb=proto` mapping makes protoc see the sources as `broker/pb/*.proto`, so
the generated modules import each other as `broker.pb.x_pb2` and need no patching.
Run: python scripts/gen_proto.py [--out DIR]   (DIR defaults to the project root)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def generate(out: Path) -> None:
    (out / "broker" / "pb").mkdir(parents=True, exist_ok=True)
    sources = sorted(p.name for p in (ROOT / "proto").glob("*.proto"))
    args = [
        "protoc",
        f"-Ibroker/pb={ROOT / 'proto'}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(ROOT / "proto" / s) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out / "broker" / "pb" / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated from proto/ by scripts/gen_proto.py; do not edit."""\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
