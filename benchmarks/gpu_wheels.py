#!/usr/bin/env python
"""The wheel set ``benchmarks/gpu_check.sh`` carries to an offline GPU machine, and the check that it installs.

    python benchmarks/gpu_wheels.py download [DEST]   # DEST (default ./.whl): the pinned wheels of gpu_wheels.txt
                                                      # (DeepSpeed built here from its source, no ops compiled),
                                                      # their requirements recorded in gpu_wheels_requires.json
    python benchmarks/gpu_wheels.py check             # every requirement met by the image or another carried wheel

A requirement counts as met by the image (``gpu_image_packages-*.txt``, the newest) when the package is listed there
and, for a requirement with a version bound, the file's header records the image's version and it satisfies the bound:
a listed name of unrecorded version meets only a bare requirement (issue 34: the image's huggingface-hub and
typing-extensions were too old for transformers 5.24 and pydantic-core; carry such a package, or record its version).
A carried wheel replaces the image's copy of the same package (transformers 5.24 over the image's 5.17; gpu_check.sh
puts the carried wheels first on sys.path). Markers are evaluated for CPython 3.12 on x86-64 Linux, without extras.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
PINS = HERE / "gpu_wheels.txt"
REQUIRES = HERE / "gpu_wheels_requires.json"
BUILT_HERE = {"deepspeed"}  # a source package; built into a pure-Python wheel here (DS_BUILD_OPS=0)
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"]
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "os_name": "posix", "extra": ""}  # fmt: skip


def pins() -> dict[str, Version]:
    """name -> version of every line of gpu_wheels.txt."""
    out = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[canonicalize_name(name)] = Version(version)
    return out


def image_packages() -> tuple[str, set[str], dict[str, Version]]:
    """(file name, packages listed, versions its header records) of the newest image list."""
    path = sorted(HERE.glob("gpu_image_packages-*.txt"))[-1]
    lines = path.read_text().splitlines()
    names = {canonicalize_name(line.strip()) for line in lines if line.strip() and not line.startswith("#")}
    header = " ".join(line for line in lines if line.startswith("#"))
    versions = {canonicalize_name(n): Version(v) for n, v in re.findall(r"([A-Za-z][\w.-]*) (\d+(?:\.\d+)+)", header)}
    return path.name, names, versions


def applies(line: str) -> bool:
    """Whether a requirement line applies to the target (CPython 3.12, x86-64 Linux, no extras)."""
    marker = Requirement(line).marker
    return marker is None or marker.evaluate(TARGET)


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA that apply to the target, as written and in order (the lines of
    extras are left out: DeepSpeed's built wheel lists them in a different order each build)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return [line for line in metadata.get_all("Requires-Dist") or [] if applies(line)]


def unmet(requires: dict[str, list[str]]) -> list[str]:
    """Every requirement of a carried wheel that neither the image nor another carried wheel meets, one line each."""
    carried = pins()
    _, image, image_versions = image_packages()
    problems = [f"{name}: pinned in {PINS.name} but its requirements are not recorded"
                for name in carried if name not in requires]  # fmt: skip
    for owner, lines in requires.items():
        for line in lines:
            if not applies(line):
                continue
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            if name in carried:
                version, where = carried[name], "carried"
            elif name in image:
                version, where = image_versions.get(name), "the image"
            else:
                problems.append(f"{owner} needs {line}: neither in the image nor carried")
                continue
            if version is None and requirement.specifier:  # listed, but which version is not recorded
                problems.append(f"{owner} needs {line}: the image's version is not recorded (carry it, or record it)")
            elif version is not None and not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{owner} needs {line}: {where} has {version}")
    return problems


def download(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    carried = pins()
    wheels = [f"{name}=={version}" for name, version in carried.items() if name not in BUILT_HERE]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *wheels],
                   check=True)  # fmt: skip
    for name in BUILT_HERE:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(dest), f"{name}=={carried[name]}"], check=True,
                       env={**os.environ, "DS_BUILD_OPS": "0"})  # fmt: skip
    requires = {}
    for wheel in sorted(dest.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        name = canonicalize_name(name)
        if carried.get(name) != Version(version):
            raise SystemExit(f"{wheel.name}: not a pin of {PINS.name} (remove it: one version of each)")
        requires[name] = wheel_requirements(wheel)
    missing = set(carried) - set(requires)
    if missing:
        raise SystemExit(f"no wheel for {sorted(missing)}")
    REQUIRES.write_text(json.dumps(requires, indent=1, sort_keys=True) + "\n")
    print(f"{len(requires)} wheels in {dest}, {sum(w.stat().st_size for w in dest.glob('*.whl')) / 2**20:.1f} MiB")


def main(argv: list[str]) -> int:
    if argv[:1] == ["download"]:
        download(Path(argv[1]) if len(argv) > 1 else HERE.parent / ".whl")
    elif argv[:1] != ["check"]:
        raise SystemExit(__doc__)
    problems = unmet(json.loads(REQUIRES.read_text()))
    print(
        "\n".join(problems) or f"every requirement of the {len(pins())} carried wheels is met ({image_packages()[0]})"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
