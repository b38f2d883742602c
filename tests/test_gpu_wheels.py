"""The wheels the GPU check carries to an offline machine install there (issue 25): every requirement of every carried
wheel (Python 3.12, x86-64 Linux) is met by the image's package list or by another carried wheel. The H200 run of
2026-12-04 found DeepSpeed's pydantic missing from the set; this test would have said so."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_wheels  # noqa: E402


def recorded() -> dict[str, list[str]]:
    return json.loads(gpu_wheels.REQUIRES.read_text())


def test_every_carried_wheel_has_its_requirements_met_on_the_image():
    assert set(recorded()) == set(gpu_wheels.pins())  # one record per pinned wheel
    assert gpu_wheels.unmet(recorded()) == []


def test_a_requirement_nothing_meets_is_named_with_its_owner():
    requires = recorded()
    requires["deepspeed"] = [*requires["deepspeed"], "pydantic-extra-types>=2"]  # in neither
    requires["datasets"] = [*requires["datasets"], "pyarrow>=99"]  # the image has 25.0.1
    requires["trl"] = [*requires["trl"], 'tomli>=1; python_version < "3.11"']  # not for 3.12: ignored
    requires["pydantic"] = [line.replace("pydantic-core==2.50.5", "pydantic-core==2.50.4") for line in
                            requires["pydantic"]]  # fmt: skip
    assert sorted(gpu_wheels.unmet(requires)) == [
        "datasets needs pyarrow>=99: the image has 25.0.1",
        "deepspeed needs pydantic-extra-types>=2: neither in the image nor carried",
        "pydantic needs pydantic-core==2.50.4: carried has 2.50.5",
    ]
    without_pydantic = {name: lines for name, lines in recorded().items() if not name.startswith("pydantic")}
    assert "pydantic: pinned in gpu_wheels.txt but its requirements are not recorded" in gpu_wheels.unmet(
        without_pydantic
    )


def test_the_recorded_requirements_are_the_wheels_own_where_the_wheels_are_here():
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    if not wheels:
        pytest.skip("no ./.whl here (bash benchmarks/gpu_wheels.sh makes it)")
    by_name = {gpu_wheels.canonicalize_name(w.name.split("-")[0]): w for w in wheels}
    assert set(by_name) == set(gpu_wheels.pins())
    for name, wheel in by_name.items():
        assert gpu_wheels.wheel_requirements(wheel) == recorded()[name], name
