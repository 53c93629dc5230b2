"""Regenerate the Python code for the .proto files, or check that the committed code is current.

    python proto/generate.py           # write kvnode/api/v1/*_pb2*.py and .pyi
    python proto/generate.py --check   # exit 1 and list the files that differ

The generators are pinned in pyproject.toml, so the output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PACKAGE_DIR = Path("kvnode") / "api" / "v1"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins into out_dir."""
    protos = sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *[str(p) for p in protos],
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)
    return sorted(p.relative_to(out_dir) for p in (out_dir / PACKAGE_DIR).glob("*_pb2*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        files = generate(out)
        target = REPO_ROOT / PACKAGE_DIR
        committed = {p.relative_to(REPO_ROOT) for p in target.glob("*_pb2*")}
        stale = [
            str(f)
            for f in files
            if not (REPO_ROOT / f).exists() or not filecmp.cmp(out / f, REPO_ROOT / f, shallow=False)
        ]
        extra = sorted(str(f) for f in committed - set(files))
        if args.check:
            if stale or extra:
                print("generated code is stale; run: python proto/generate.py", file=sys.stderr)
                for name in stale + extra:
                    print(f"  {name}", file=sys.stderr)
                return 1
            return 0
        for name in extra:
            (REPO_ROOT / name).unlink()
        for f in files:
            shutil.copyfile(out / f, REPO_ROOT / f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
