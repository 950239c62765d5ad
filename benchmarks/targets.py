"""The suites a benchmark can run: the generated ones and scikit-learn's own tests."""

from __future__ import annotations

from pathlib import Path

from benchmarks.runners import Target
from benchmarks.suites import SUITES

# scikit-learn installs its tests with the package. These need no network and no dataset
# download; together about 600 tests and 37 s serially on the reference machine (14 s and
# 23 s; sklearn.preprocessing would add 45 s, sklearn.feature_selection 75 s).
SKLEARN_SUBPACKAGES = ("sklearn.feature_extraction", "sklearn.impute")
# --quick keeps the first ones only.
SKLEARN_QUICK = 1

NAMES = (*SUITES, "sklearn")


def make_target(name: str, work_dir: Path, scale: float) -> Target:
    """Write the suite ``name`` under ``work_dir`` (if it is generated) and say how to run it.

    Every pytest run happens in a directory of ``work_dir`` without an ini file, so no
    project's pytest configuration (``testpaths``, strict markers) applies.
    """
    if name == "sklearn":
        cwd = work_dir / "sklearn"
        cwd.mkdir(parents=True, exist_ok=True)
        packages = SKLEARN_SUBPACKAGES if scale >= 1 else SKLEARN_SUBPACKAGES[:SKLEARN_QUICK]
        # pytest-randomly would reorder (and reseed) the tests differently in each process.
        return Target(name, cwd, ("--pyargs", *packages, "-p", "no:randomly"))
    root = SUITES[name](work_dir / name, scale)
    return Target(name, root, (str(root),))
