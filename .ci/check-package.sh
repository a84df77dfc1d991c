#!/usr/bin/env bash
# The package as users get it: `python -m build` makes an sdist and a wheel (the wheel built from the sdist);
# both carry every file of ecotone_django/ in the source tree (migrations, py.typed, templates and any other
# data) and nothing else of the repository; the metadata passes `twine check --strict` and names only real
# classifiers; each artifact installs into a clean venv, where a minimal project passes `django-admin check`
# and `migrate` with the installed copy (not the source tree).
#
#   bash .ci/check-package.sh PYTHON      (PYTHON: an interpreter with build, twine and trove-classifiers)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:?usage: check-package.sh PYTHON}"
repo="$PWD"

work="$(mktemp -d "${TMPDIR:-/tmp}/ecotone-package.XXXXXX")"
trap 'rm -rf "$work"' EXIT
say() { echo "package: $*"; }

# 1. Build from a copy of the tracked files, so that local build output or venvs cannot leak into the sdist.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' path; do
    [[ -e "$path" ]] && printf '%s\0' "$path"
done | tar --null -T - -cf - | tar -xf - -C "$work/src"
"$python" -m build --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
say "built $(cd "$work/dist" && echo *)"

# 2. Contents and metadata.
(cd "$work/src" && git -C "$repo" ls-files --cached --others --exclude-standard ecotone_django) >"$work/sources.txt"
"$python" - "$work/dist" "$work/sources.txt" <<'EOF'
import email.parser
import sys
import tarfile
import zipfile
from pathlib import Path

from trove_classifiers import classifiers as known_classifiers

dist, sources = Path(sys.argv[1]), Path(sys.argv[2])
[wheel] = dist.glob("*.whl")
[sdist] = dist.glob("*.tar.gz")
package_files = {p for p in sources.read_text().split("\n") if p and not p.endswith(".pyc") and "__pycache__" not in p}
for must in ("ecotone_django/py.typed", "ecotone_django/migrations/0001_initial.py"):
    assert must in package_files, f"{must} is not in the source tree"

problems = []
wheel_files = set(zipfile.ZipFile(wheel).namelist())
if missing := sorted(package_files - wheel_files):
    problems.append(f"the wheel lacks {missing}")
if strays := sorted(f for f in wheel_files if not f.startswith(("ecotone_django/", "ecotone_django-"))):
    problems.append(f"the wheel carries files outside the package: {strays[:10]}")

with tarfile.open(sdist) as tar:
    root = tar.getnames()[0].split("/")[0]
    sdist_files = {name.removeprefix(f"{root}/") for name in tar.getnames()}
if missing := sorted((package_files | {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml"}) - sdist_files):
    problems.append(f"the sdist lacks {missing}")

[metadata_name] = [f for f in wheel_files if f.endswith(".dist-info/METADATA")]
metadata = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(metadata_name).decode())
if unknown := sorted(set(metadata.get_all("Classifier") or []) - set(known_classifiers)):
    problems.append(f"unknown classifiers: {unknown}")
for django in ("5.2", "6.0", "6.1"):
    if f"Framework :: Django :: {django}" not in (metadata.get_all("Classifier") or []):
        problems.append(f"no classifier for Django {django}")
if metadata["Requires-Python"] != ">=3.11":
    problems.append(f"Requires-Python is {metadata['Requires-Python']!r}")
if problems:
    sys.exit("package: " + "\npackage: ".join(problems))
print(f"package: the wheel ({len(wheel_files)} files) and the sdist ({len(sdist_files)} files) carry all "
      f"{len(package_files)} files of ecotone_django/; {len(metadata.get_all('Classifier'))} known classifiers")
EOF
"$python" -m twine check --strict "$work"/dist/*

# 3. Each artifact in a clean venv: a minimal project checks and migrates with the installed copy.
mkdir -p "$work/project"
cat >"$work/project/settings.py" <<'EOF'
SECRET_KEY = "package-check"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "ecotone_django"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ECOTONE = {"CHANNELS": {"jobs": {"BACKEND": "ecotone_django.channels.DatabaseChannel"}}}
EOF
for artifact in "$work"/dist/*.whl "$work"/dist/*.tar.gz; do
    kind="$([[ "$artifact" == *.whl ]] && echo wheel || echo sdist)"
    venv="$work/venv-$kind"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -qq "$artifact"
    (
        cd "$work/project"
        rm -f db.sqlite3
        export DJANGO_SETTINGS_MODULE=settings PYTHONPATH=.
        "$venv/bin/python" - "$venv" <<'EOF'
import sys
from importlib.resources import files
from pathlib import Path

import ecotone_django

where = Path(ecotone_django.__file__).resolve()
assert Path(sys.argv[1]).resolve() in where.parents, f"ecotone_django imported from {where}, not the venv"
assert files("ecotone_django").joinpath("py.typed").is_file(), "py.typed is not installed"
assert files("ecotone_django.migrations").joinpath("0001_initial.py").is_file(), "the migration is not installed"
EOF
        "$venv/bin/django-admin" check
        "$venv/bin/django-admin" migrate --verbosity 0
        "$venv/bin/django-admin" showmigrations ecotone_django | grep -q '\[X\] 0001_initial' ||
            { echo "package: ecotone_django's migration did not apply from the $kind" >&2; exit 1; }
    )
    say "$kind installs into a clean venv; django-admin check and migrate pass with it"
done
say "passed"
