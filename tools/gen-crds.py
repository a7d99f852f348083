#!/usr/bin/env python3
"""Generate the CRDs from the spec models (adaptinf.crd_schema) into crds/ and the Helm chart's
charts/adaptinf/crds/ (Helm installs that folder as it is), removing CRD files no resource has.

    tools/gen-crds.py           write
    tools/gen-crds.py --check   only report files that are not current (exit 1)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))   # this checkout's models, installed or not

from adaptinf import crd_schema  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        drift = crd_schema.drift(ROOT)
        for line in drift:
            print(f"drift: {line}")
        if drift:
            print(f"fix: {crd_schema.GENERATOR}")
        return 1 if drift else 0
    for line in crd_schema.write(ROOT):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
