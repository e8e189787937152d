"""CycloneDX SBOM of a built image: every Python package of its environment and every Debian
package, read inside the image (pip and dpkg-query in a throw-away container), written as one JSON
file to audit in your own network (`make sbom IMAGE=...`).

    python docker/image_sbom.py IMAGE OUT.cdx.json [--engine podman|docker]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import warnings
from pathlib import Path

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

VENV_PYTHON = "/app/.venv/bin/python"
# A flat inventory (no dependency graph) is what an audit needs; the library warns about it otherwise.
warnings.filterwarnings("ignore", message=".*Dependency Graph is incomplete.*")


def _inside(engine: str, image: str, *command: str) -> str:
    done = subprocess.run([engine, "run", "--rm", "--entrypoint", command[0], image, *command[1:]],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[:3])} in {image}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return done.stdout


def image_bom(image: str, engine: str = "podman") -> Bom:
    bom = Bom()
    bom.metadata.component = Component(name=image, type=ComponentType.CONTAINER)
    for package in json.loads(_inside(engine, image, VENV_PYTHON, "-m", "pip", "list", "--format", "json")):
        bom.components.add(Component(name=package["name"], version=package["version"], type=ComponentType.LIBRARY,
                                     purl=PackageURL("pypi", name=package["name"].lower(), version=package["version"])))
    listing = _inside(engine, image, "dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n")
    for line in listing.splitlines():
        name, version, arch = line.split("\t")
        bom.components.add(Component(name=name, version=version, type=ComponentType.LIBRARY, group="debian",
                                     purl=PackageURL("deb", "debian", name, version, qualifiers={"arch": arch})))
    return bom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("out", type=Path)
    parser.add_argument("--engine", default="podman")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".partial")
    tmp.write_text(JsonV1Dot6(image_bom(args.image, args.engine)).output_as_string(indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
