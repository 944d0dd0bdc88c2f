"""Transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`), fetched at test time, never committed.

The tests live in the `tests/` folder of the transformers sdist, not in the wheel. `load_common_tests()` downloads the
sdist of the *installed* transformers version once with pip (PyPI is reachable offline-at-test-time here; the Hub is
not needed), extracts `tests/test_modeling_common.py` and `tests/test_configuration_common.py` into
`.cache/transformers-tests/<version>/` (git-ignored), and imports them as the package `hf_common_tests`.

The sdist ships only the top-level test files, not the sub-packages they import. Three small stand-ins written here
fill the gap, each for a reason that holds for MMFNet:
- `exporters/test_export.py::ExportTesterMixin`: empty (its torch.export tests are not in the sdist; MMFNet's own
  tests/test_export.py covers torch.export and ONNX);
- `generation/test_utils.py::GenerationTesterMixin`: empty (MMFNet does not generate; the mixin only checks it is
  *not* inherited by non-generative models);
- `utils/test_configuration_utils.py::config_common_kwargs`: `{}` (read only by `check_config_arguments_init` for
  configs without sub-configs; MMFNet's config is composite, so the check returns before using it).
"""

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import transformers

PACKAGE = "hf_common_tests"
EXTRACTED = ("tests/test_modeling_common.py", "tests/test_configuration_common.py")
STAND_INS = {
    "exporters/test_export.py": (
        '"""Stand-in: the transformers sdist does not ship tests/exporters."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "generation/test_utils.py": (
        '"""Stand-in: the transformers sdist does not ship tests/generation."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "utils/test_configuration_utils.py": (
        '"""Stand-in: the transformers sdist does not ship tests/utils; only non-composite configs read this."""\n\n'
        "config_common_kwargs = {}\n"
    ),
}
CACHE = Path(
    os.environ.get("MMFNET_TRANSFORMERS_TESTS_CACHE", Path(__file__).parents[1] / ".cache/transformers-tests")
)


class CommonTestsUnavailable(RuntimeError):
    """The transformers sdist could not be downloaded or did not contain the expected test files."""


def _fetch(version: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
        command += ["--disable-pip-version-check", "-d", scratch, f"transformers=={version}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as error:
            raise CommonTestsUnavailable(f"`pip download` of the transformers {version} sdist timed out") from error
        archives = list(Path(scratch).glob("transformers-*.tar.gz"))
        if done.returncode or not archives:
            raise CommonTestsUnavailable(
                f"`{' '.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
            )
        staging = Path(scratch) / PACKAGE
        staging.mkdir()
        with tarfile.open(archives[0]) as archive:
            for relative in EXTRACTED:
                member = f"transformers-{version}/{relative}"
                try:
                    source = archive.extractfile(member)
                except KeyError as error:
                    raise CommonTestsUnavailable(f"{archives[0].name} has no {member}") from error
                (staging / Path(relative).name).write_bytes(source.read())
        for relative, text in STAND_INS.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(text)
        (staging / "__init__.py").write_text(f'"""transformers {version} common tests (from its sdist)."""\n')
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(target)  # atomic: a concurrent run sees either nothing or the whole package
        except OSError:
            if not (target / "__init__.py").exists():
                raise


def load_common_tests() -> tuple[ModuleType, ModuleType]:
    """`(test_modeling_common, test_configuration_common)` of the installed transformers; raises
    `CommonTestsUnavailable` when they cannot be fetched."""
    version = transformers.__version__
    root = CACHE / version
    if not (root / PACKAGE / "__init__.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        if (root / PACKAGE).exists():  # a partial folder from an interrupted older layout
            shutil.rmtree(root / PACKAGE)
        _fetch(version, root / PACKAGE)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    # a missing test dependency (e.g. `parameterized`, in the `dev` extra) is an error, not a reason to skip
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration
