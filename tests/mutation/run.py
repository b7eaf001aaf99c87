"""Mutation check: apply each plausible bug of `mutants.py` to a copy of the project and run the tests.

A mutant is *caught* when some test fails with it applied. Each mutant first runs the tests it names
(fast); if those pass, the whole default suite runs, so "survived" always means the whole suite stayed
green. A mutant that survives must carry the reason it is harmless (`Mutant.harmless`); the check
fails on an unexplained survivor, on a "harmless" mutant that is now caught (its reason is stale), and
on a mutant whose code no longer appears exactly once in its file (the list must follow the code).

Usage (from the project root, not part of `make test`; `make mutants` runs it whole):

    python tests/mutation/run.py                 # every mutant
    python tests/mutation/run.py --only info_nce_one_direction lr_warmup_off_by_one
    python tests/mutation/run.py --targeted-only # named tests only: quicker, survivors not final
    python tests/mutation/run.py --json report.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1800


def project_files() -> list[str]:
    """Tracked and new (not ignored) files: the tree a fresh clone plus this checkout's changes would have."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode()
    return [f for f in listed.split("\0") if f and (ROOT / f).is_file()]


def copy_project(files: list[str], into: Path) -> None:
    for name in files:
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def apply(mutant: Mutant, tree: Path) -> None:
    path = tree / "src" / "polymodal" / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name}: its code occurs {count} times in src/polymodal/{mutant.file} "
                         f"(expected once); update tests/mutation/mutants.py")
    path.write_text(text.replace(mutant.old, mutant.new))


def pytest(tree: Path, targets: list[str]) -> tuple[bool, str]:
    """(passed, the last lines of output) of the suite in `tree`, stopping at the first failure."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    # tests/mutation checks that every mutant still applies to the unmutated code: not a test of a mutant
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           "--ignore", str(tree / "tests" / "mutation"), *targets]
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    failed = next((line for line in lines if line.startswith(("FAILED", "ERROR"))), lines[-1] if lines else "")
    return done.returncode == 0, failed


def check_imports_the_copy(tree: Path) -> None:
    """The copy, not the installed package, must be what the tests import."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    where = subprocess.run([sys.executable, "-c", "import polymodal; print(polymodal.__file__)"], cwd=tree, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(tree)):
        raise SystemExit(f"the tests would import {where}, not the mutated copy in {tree}")


def run(mutant: Mutant, files: list[str], targeted_only: bool) -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        tree = Path(tmp)
        copy_project(files, tree)
        apply(mutant, tree)
        targets = [t for t in mutant.tests if (tree / t).exists()]
        passed, detail, stage = True, "", "none"
        if targets:
            passed, detail = pytest(tree, targets)
            stage = "targeted"
        if passed and not targeted_only:
            passed, detail = pytest(tree, [])
            stage = "suite"
    return {"name": mutant.name, "file": mutant.file, "what": mutant.what, "caught": not passed,
            "by": detail if not passed else "", "stage": stage, "harmless": mutant.harmless,
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="run these mutants only")
    parser.add_argument("--targeted-only", action="store_true", help="run only the tests each mutant names")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutants: {', '.join(sorted(unknown))}")
    files = project_files()
    with tempfile.TemporaryDirectory() as tmp:
        copy_project(files, Path(tmp))
        check_imports_the_copy(Path(tmp))
        for m in chosen:  # every mutant still applies, before spending minutes on the first ones
            apply(m, Path(tmp))
            copy_project([f"src/polymodal/{m.file}"], Path(tmp))

    results = []
    for i, mutant in enumerate(chosen, 1):
        result = run(mutant, files, args.targeted_only)
        results.append(result)
        verdict = "caught" if result["caught"] else ("survived (harmless)" if mutant.harmless else "SURVIVED")
        print(f"[{i}/{len(chosen)}] {mutant.name}: {verdict} ({result['stage']}, {result['seconds']} s)"
              + (f"  {result['by']}" if result["caught"] else ""), flush=True)

    caught = sum(r["caught"] for r in results)
    unexplained = [r for r in results if not r["caught"] and not r["harmless"]]
    stale = [r for r in results if r["caught"] and r["harmless"]]
    print(f"\n{caught} of {len(results)} mutants caught; {len(results) - caught} survived "
          f"({len(results) - caught - len(unexplained)} explained as harmless)")
    for r in results:
        if not r["caught"]:
            print(f"  survived: {r['name']} ({r['file']}): {r['what']}\n    why harmless: {r['harmless'] or 'UNEXPLAINED'}")
    for r in stale:
        print(f"  caught but listed as harmless (update its reason): {r['name']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    complete = not args.targeted_only
    return 1 if unexplained and complete or stale else 0


if __name__ == "__main__":
    sys.exit(main())
