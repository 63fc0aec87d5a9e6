"""The images' build inputs: base images pinned to a full version, and pip installing only files
whose sha256 a lock lists, the lock pinning exactly its constraints' versions (``make locks``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_IMAGES = {"server": REPO / "Dockerfile.server", "operator": REPO / "Dockerfile.operator"}
ROUTER_IMAGE = REPO / "Dockerfile.router"
_PIN = re.compile(r"(?P<name>[A-Za-z0-9][-A-Za-z0-9_.]*)==(?P<version>\S+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _logical_lines(text: str) -> list[str]:
    """Lines without comments, with backslash continuations joined."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [line.strip() for line in "\n".join(kept).replace("\\\n", " ").splitlines() if line.strip()]


def _constraints(text: str) -> dict[str, str]:
    pins = {}
    for line in _logical_lines(text):
        found = _PIN.fullmatch(line)
        assert found, f"not an exact pin in the constraints: {line!r}"
        pins[_name(found["name"])] = found["version"]
    return pins


def disagreements(lock: str, constraints: str) -> list[str]:
    """What in ``lock`` is not exactly ``constraints``' pins, each with at least one sha256."""
    wanted = _constraints(constraints)
    problems, locked = [], set()
    for line in _logical_lines(lock):
        requirement, *options = line.split()
        found = _PIN.fullmatch(requirement)
        if found is None:
            problems.append(f"{requirement}: not pinned with ==")
            continue
        name, version = _name(found["name"]), found["version"]
        locked.add(name)
        if name not in wanted:
            problems.append(f"{name}=={version}: not in the constraints")
        elif wanted[name] != version:
            problems.append(f"{name}=={version}: the constraints pin {wanted[name]}")
        if not any(_HASH.fullmatch(option) for option in options):
            problems.append(f"{name}=={version}: no sha256")
    problems += [f"{name}=={wanted[name]}: missing from the lock" for name in sorted(wanted.keys() - locked)]
    return problems


@pytest.mark.parametrize("component", sorted(PYTHON_IMAGES))
def test_the_lock_pins_the_constraints_with_hashes(component: str) -> None:
    lock = (REPO / component / "requirements.lock").read_text()
    constraints = (REPO / component / "constraints.txt").read_text()
    assert disagreements(lock, constraints) == [], "run `make locks` and review the diff"


def test_a_lock_out_of_step_with_its_constraints_is_caught() -> None:
    constraints = "# pins\nsix==1.17.0\nPyYAML==6.0.3\n"
    digest = "--hash=sha256:" + "ab" * 32
    lock = f"pyyaml==6.0.3 \\\n    {digest}\n    # via -r x\nsix==1.17.0 \\\n    {digest}\n"
    assert disagreements(lock, constraints) == []
    assert disagreements(lock, constraints.replace("six==1.17.0", "six==1.18.0")) == [
        "six==1.17.0: the constraints pin 1.18.0"
    ]
    assert disagreements(lock, constraints + "idna==3.20\n") == ["idna==3.20: missing from the lock"]
    assert disagreements(lock + f"idna==3.20 {digest}\n", constraints) == ["idna==3.20: not in the constraints"]
    assert disagreements(lock.replace(f"six==1.17.0 \\\n    {digest}", "six==1.17.0"), constraints) == [
        "six==1.17.0: no sha256"
    ]
    assert disagreements(lock + "idna>=3\n", constraints) == ["idna>=3: not pinned with =="]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile instruction."""
    return [(line.split()[0].upper(), line.split(maxsplit=1)[1]) for line in _logical_lines(dockerfile.read_text())]


@pytest.mark.parametrize("component", sorted(PYTHON_IMAGES))
def test_the_image_installs_only_hash_checked_files(component: str) -> None:
    """pip installs the lock with --require-hashes, then the project from the context with nothing fetched."""
    runs = [args for op, args in _instructions(PYTHON_IMAGES[component]) if op == "RUN"]
    installs = [part for run in runs for part in run.split("&&") if re.search(r"\bpip install\b", part)]
    assert any("--require-hashes" in part and f"-r /src/{component}/requirements.lock" in part for part in installs), (
        installs
    )
    unverified = [part for part in installs if "--require-hashes" not in part and "--no-index" not in part]
    assert unverified == []


def _base_image(dockerfile: Path) -> str:
    """The default of ``ARG BASE_IMAGE``, which every stage starts from (or from an earlier stage)."""
    instructions = _instructions(dockerfile)
    defaults = [args.split("=", 1)[1] for op, args in instructions if op == "ARG" and args.startswith("BASE_IMAGE=")]
    stages = {args.split()[-1] for op, args in instructions if op == "FROM" and " AS " in args.upper()}
    bases = {args.split()[0] for op, args in instructions if op == "FROM"}
    assert len(defaults) == 1 and bases - stages == {"${BASE_IMAGE}"}, instructions
    return defaults[0]


@pytest.mark.parametrize("component", sorted(PYTHON_IMAGES))
def test_python_base_images_are_pinned_to_a_full_version(component: str) -> None:
    base = _base_image(PYTHON_IMAGES[component])
    pinned = re.fullmatch(r"python:(3\.\d+)\.\d+-slim-bookworm", base)
    assert pinned, base
    lock = (REPO / component / "requirements.lock").read_text()
    assert f"autogenerated by pip-compile with Python {pinned[1]}\n" in lock  # resolved for the image's Python


def test_the_router_base_image_is_a_debian_point_release() -> None:
    base = _base_image(ROUTER_IMAGE)
    assert re.fullmatch(r"debian:12\.\d+-slim", base), base
