"""The distribution installs one import namespace, ``ltrr``: the folders at the repository root
(agents/, streams/, ...) ship as ``ltrr.agents``, ``ltrr.streams``, ... and nothing else lands
at the top level of site-packages. Built for real with the project's build backend."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("agents", "evaluation", "retrieval", "schemas", "sim", "state", "streams")


def test_wheel_holds_one_namespace_with_data_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("ltrr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"ltrr"}
    for sub in SUBPACKAGES:
        assert f"ltrr/{sub}/__init__.py" in names, sub
        # every module of the folder ships (symlinks in ltrr/ were followed, not copied as links)
        expected = {p.name for p in (ROOT / sub).glob("*.py")}
        shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith(f"ltrr/{sub}/")}
        assert expected <= shipped, (sub, expected - shipped)
    assert "ltrr/schemas/search_impression.v1.json" in names
    assert "ltrr/retrieval/openapi.json" in names


def test_subpackages_import_under_ltrr_and_not_at_top_level(tmp_path: Path) -> None:
    code = (
        "import importlib, importlib.util, sys\n"
        f"subs = {SUBPACKAGES!r}\n"
        f"root = {str(ROOT)!r}\n"
        "for s in subs:\n"
        "    importlib.import_module('ltrr.' + s)\n"
        "    spec = importlib.util.find_spec(s)  # another distribution may own the name\n"
        "    assert spec is None or not (spec.origin or '').startswith(root), (s, spec)\n"
    )
    # run outside the repository so that the working directory does not shadow the install
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=120)
