"""Build one Lambda layer into `<target>` (the layer's `python/` folder); `sam build` runs it through the
layers' Makefiles (BuildMethod: makefile).

Why not SAM's own python builder: it cannot leave things out, and the ML runtime layer only fits Lambda's
250 MB (function + layers, unzipped) with room to spare once the packages' `tests/` folders (~28 MB) are
gone. It also ships no bytecode, so every cold start would compile scipy and scikit-learn from source on a
read-only /opt. This script:

1. installs the pinned requirements as manylinux wheels for the Lambda runtime's Python and architecture
   (cross-installs work: wheels only, `--platform` tags up to glibc 2.34, Amazon Linux 2023's);
2. removes distributions the Lambda runtime or another layer of the same functions already provides
   (`--provided-by-runtime`, e.g. botocore, which aws-xray-sdk pulls in: 22 MB that /var/runtime has anyway;
   `--provided-by-layer`, e.g. numpy, which pandas pulls in and the ML runtime layer ships);
3. removes `tests/` folders and the sources compiled extensions were built from (C, C++ and Cython sources
   and headers: pysimdjson alone ships 7.4 MB of them), which nothing imports at run time;
4. strips the extension modules' debug symbols (`strip --strip-unneeded`; scipy's and scikit-learn's wheels
   ship them), with a GNU strip that reads the target architecture (the host's own, or binutils' cross
   strip for another architecture);
5. copies the project's own packages (`--package`), leaving out dev-only subpackages (`--exclude`);
6. compiles bytecode with `unchecked-hash` invalidation: zip archives keep mtimes at 2 s resolution, so
   timestamp-checked .pyc files would look stale on Lambda and be recompiled in memory on every cold start.

Run it with the runtime's interpreter (python3.13): the .pyc files are specific to that version.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# Lambda's architecture name -> the wheel platform suffix.
WHEEL_ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
# Amazon Linux 2023 (the python3.12+ runtimes) ships glibc 2.34; manylinux2014 is glibc 2.17. pip does not
# widen a `manylinux_2_34` tag to older ones by itself, so every accepted glibc minor is listed.
GLIBC_MINORS = range(17, 35)
JUNK_DIRS = {"tests", "__pycache__"}
BUILD_SOURCE_SUFFIXES = {".c", ".cc", ".cpp", ".h", ".hpp", ".pyx", ".pxd", ".pxi"}


def pip_install(requirements: Path, target: Path, python_version: str, arch: str) -> None:
    platforms = [f"--platform=manylinux_2_{minor}_{WHEEL_ARCH[arch]}" for minor in GLIBC_MINORS]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--only-binary=:all:",
            "--implementation=cp", f"--python-version={python_version}", *platforms, "--root-user-action=ignore",
            "--target", str(target), "--requirement", str(requirements),
        ],
        check=True,
    )  # fmt: skip


def remove_distributions(target: Path, names: list[str]) -> None:
    wanted = {name.lower().replace("_", "-") for name in names}
    for dist in metadata.distributions(path=[str(target)]):
        if dist.metadata["Name"].lower().replace("_", "-") not in wanted:
            continue
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            if path.is_file():
                path.unlink()
    remove_empty_dirs(target)


def remove_empty_dirs(root: Path) -> None:
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if Path(folder) != root and not any(Path(folder).iterdir()):
            Path(folder).rmdir()


def remove_junk(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_dir() and path.name in JUNK_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in BUILD_SOURCE_SUFFIXES:
            path.unlink()
    remove_empty_dirs(root)


def strip_shared_libraries(root: Path, arch: str) -> bool:
    """Drop debug symbols from every shared library; False (and nothing changed) when the host cannot."""
    # GNU strip only: llvm-strip leaves auditwheel-patched modules (numpy's) unloadable. binutils' cross
    # strip reads its target; a plain strip only the host's own architecture.
    candidates = [f"{WHEEL_ARCH[arch]}-linux-gnu-strip"]
    if platform.machine() == WHEEL_ARCH[arch]:
        candidates.append("strip")
    strip = next((found for found in map(shutil.which, candidates) if found), None)
    if strip is None:
        return False
    # Not the libraries auditwheel vendors into `<dist>.libs/`: patchelf rewrote their headers, and strip
    # would leave them unloadable ("ELF load command address/offset not page-aligned").
    libraries = [
        str(path)
        for path in root.rglob("*.so*")
        if path.is_file() and not path.is_symlink() and not path.parent.name.endswith(".libs")
    ]
    for start in range(0, len(libraries), 200):
        subprocess.run([strip, "--strip-unneeded", *libraries[start : start + 200]], check=True)
    return True


def copy_package(source: Path, target: Path, exclude: list[str]) -> None:
    ignored = shutil.ignore_patterns(*JUNK_DIRS, "*.pyc", *exclude)
    shutil.copytree(source, target / source.name, ignore=ignored, dirs_exist_ok=True)


def tree_bytes(root: Path) -> int:
    return sum(path.lstat().st_size for path in root.rglob("*") if path.is_file() or path.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, required=True, help="the layer's python/ folder")
    parser.add_argument("--requirements", type=Path, required=True)
    parser.add_argument("--package", type=Path, action="append", default=[], help="a package folder to copy")
    parser.add_argument("--exclude", action="append", default=[], help="a name to leave out of --package")
    parser.add_argument("--provided-by-runtime", action="append", default=[], help="a distribution to drop")
    parser.add_argument(
        "--provided-by-layer", action="append", default=[], help="a distribution another layer of the functions ships"
    )
    parser.add_argument("--arch", choices=sorted(WHEEL_ARCH), default=os.environ.get("LAYER_ARCH", "x86_64"))
    args = parser.parse_args(argv)

    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    args.target.mkdir(parents=True, exist_ok=True)
    pip_install(args.requirements, args.target, python_version, args.arch)
    remove_distributions(args.target, args.provided_by_runtime + args.provided_by_layer)
    remove_junk(args.target)
    stripped = strip_shared_libraries(args.target, args.arch)
    for package in args.package:
        copy_package(package, args.target, args.exclude)
    if not compileall.compile_dir(
        args.target, quiet=1, workers=0, invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH
    ):
        return 1
    size_mb = tree_bytes(args.target) / 1e6
    note = "" if stripped else f" (not stripped: no {WHEEL_ARCH[args.arch]}-linux-gnu-strip or host strip)"
    print(f"layer {args.target.parent.name}: python{python_version}/{args.arch}, {size_mb:.1f} MB unzipped{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
