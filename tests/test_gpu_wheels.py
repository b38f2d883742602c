"""The wheels the GPU check carries to an offline machine install there (issue 25): every requirement of every carried
wheel (Python 3.12, x86-64 Linux) is met by the image's package list or by another carried wheel. The H200 run of
2026-12-04 found DeepSpeed's pydantic missing from the set; this test would have said so. Issue 34: a package the
image lists without a version meets no version bound, and benchmarks/gpu_imports.py imports everything the parts use
before any benchmark runs, so a set that cannot import stops the part in seconds with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def test_an_image_package_of_unrecorded_version_meets_no_bound():
    """Issue 34: the image lists huggingface-hub and typing-extensions without versions, and an unrecorded version
    counted as meeting any bound, so transformers 5.24 (huggingface-hub >= 1.31) was carried onto an image whose
    older copy made ``import transformers`` fail. Only a bare requirement is met by a name alone."""
    _, image, versions = gpu_wheels.image_packages()
    assert "rich" in image and "rich" not in versions and "rich" not in gpu_wheels.pins()
    requires = recorded()
    requires["trl"] = [*requires["trl"], "rich>=13", "rich"]
    assert gpu_wheels.unmet(requires) == [
        "trl needs rich>=13: the image's version is not recorded (carry it, or record it)"
    ]


def test_what_issue_34_found_is_carried_ahead_of_the_image():
    carried = gpu_wheels.pins()
    assert {"huggingface-hub", "typing-extensions", "hf-xet", "httpx"} <= set(carried)
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    assert 'export PYTHONPATH="$SITE:$PYTHONPATH"' in script  # first on sys.path, not after the image's


def stand_ins(folder: Path, modules: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, body in modules.items():
        (folder / f"{name}.py").write_text(body)
    return folder


def test_the_import_probe_fails_on_a_required_module_and_says_why(tmp_path, monkeypatch):
    import gpu_imports

    monkeypatch.syspath_prepend(str(stand_ins(tmp_path, {
        "standin_ok": "__version__ = '1.2'\n",
        "standin_broken": "raise ImportError('huggingface-hub>=1.31 is required, found 1.30')\n",
    })))  # fmt: skip
    modules = [("standin_ok", "required"), ("standin_broken", "gpu"), ("standin_absent", "optional")]
    lines, failures = gpu_imports.probe(modules, on_gpu=False)  # a CPU toy run: Liger-Kernel's kind may be missing
    assert failures == 0 and lines[0].startswith("standin_ok 1.2 (")
    assert lines[1:] == [
        "standin_broken: missing (optional without a GPU): ImportError: huggingface-hub>=1.31 is required, found 1.30",
        "standin_absent: missing (optional): ModuleNotFoundError: No module named 'standin_absent'",
    ]
    lines, failures = gpu_imports.probe(modules, on_gpu=True)
    assert failures == 1
    assert lines[1] == ("standin_broken: FAILED (required on a GPU): ImportError: huggingface-hub>=1.31 is required, "
                        "found 1.30")  # fmt: skip
    lines, failures = gpu_imports.probe([("standin_broken", "required")], on_gpu=False)
    assert failures == 1 and lines[0].startswith("standin_broken: FAILED (required): ImportError")


def test_the_import_probe_names_a_carried_module_the_image_shadows(tmp_path, monkeypatch):
    import gpu_imports

    site = tmp_path / "site"
    for name in ("carried_first", "carried_shadowed"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
        (site / f"{name}-1.0.dist-info").mkdir()
        (site / f"{name}-1.0.dist-info" / "RECORD").write_text(f"{name}/__init__.py,,\n{name}-1.0.dist-info/RECORD,,\n")
    image = tmp_path / "image"
    (image / "carried_shadowed").mkdir(parents=True)
    (image / "carried_shadowed" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(image))  # the image's copy first: the carried one is never imported
    lines, failures = gpu_imports.probe_site(site)
    assert failures == 1 and "carried carried_shadowed (carried_shadowed): FAILED: imported from" in lines[0]
    assert lines[-1].startswith("carried: 2 top-level modules from")


def test_gpu_check_stops_before_any_benchmark_when_a_required_import_fails(tmp_path):
    """A stand-in torch that cannot import: the part ends in seconds, the reason in OUT/gpu_check.log."""
    folder = stand_ins(tmp_path / "standins", {"torch": "raise ImportError('stand-in: this torch cannot load')\n"})
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_SIZE": "toy", "PYTHON": sys.executable, "PYTHONPATH": str(folder)}
    start = time.perf_counter()
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "1", str(out)], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    log = (out / "gpu_check.log").read_text()
    assert "torch: FAILED (required): ImportError: stand-in: this torch cannot load" in log
    assert "[gpu_check] part 1 not run: a required import failed" in log
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log"]  # no benchmark started
    assert time.perf_counter() - start < 120
