"""Run Ray's own Core test files, unchanged, against miniray; summarise.

    # Ray's tests from a git checkout or mirror of Ray (copied out, never into
    # this repo), then run them one file at a time:
    python scripts/ray_conformance.py --git-dir /path/to/ray/.git \\
        --tests-dir /tmp/raytests/ray test_basic.py test_actor.py ...

    # or from a directory that already holds the files:
    python scripts/ray_conformance.py --tests-dir /tmp/raytests/ray test_basic.py

Each file runs in its own ``pytest -p ray_compat.plugin`` process (see
scripts/ray_compat/plugin.py), sequentially, with ``--timeout`` per test and
a wall-clock limit per file. Only the named test files are copied into a run
directory: Ray's conftest.py is never loaded (the plugin provides its
fixtures). After each file, every process that run started is ended and its
temp and shared-memory directories removed; other miniray processes on the
machine are left alone.

Results: ``<out>/junit/<file>.xml``, ``<out>/logs/<file>.log``,
``<out>/summary.json`` (per test: outcome and message) and a per-file
table on stdout (also ``<out>/summary.md``).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS_DIR)

from ray_compat import procs  # noqa: E402

RAY_TESTS_PATH = "python/ray/tests"
OUTCOMES = ("passed", "failed", "error", "skipped")


def export_from_git(git_dir: str, rev: str, files: list[str], tests_dir: str) -> None:
    """Write ``python/ray/tests/<file>`` at ``rev`` into ``tests_dir``."""
    os.makedirs(tests_dir, exist_ok=True)
    for name in files:
        blob = subprocess.run(["git", "--git-dir", git_dir, "show",
                               f"{rev}:{RAY_TESTS_PATH}/{name}"],
                              check=True, stdout=subprocess.PIPE).stdout
        with open(os.path.join(tests_dir, name), "wb") as f:
            f.write(blob)


def _parse_junit(path: str) -> list[dict]:
    """One record per test case: name, outcome, message."""
    if not os.path.exists(path):
        return []
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                text = child.get("message") or (child.text or "").strip()
                if outcome == "passed" or kind == "failed":
                    outcome, message = kind, text
        if case.get("classname", "").endswith("test_") or not name:
            name = case.get("classname")
        results.append({"test": name, "class": case.get("classname"),
                        "outcome": outcome, "message": message.strip()[:2000]})
    return results


def _cleanup(run_id: str, tmp_dir: str, shm_dir: str) -> list[int]:
    leftovers = procs.terminate(procs.run_processes(run_id))
    shutil.rmtree(tmp_dir, ignore_errors=True)
    shutil.rmtree(shm_dir, ignore_errors=True)
    return leftovers


def run_file(name: str, run_dir: str, out_dir: str, timeout: int, file_timeout: int,
             extra_args: list[str]) -> dict:
    run_id = uuid.uuid4().hex
    tmp_dir = os.path.join(out_dir, "tmp", name)
    shm_dir = os.path.join("/dev/shm", f"ray_compat_{run_id[:12]}")
    junit = os.path.join(out_dir, "junit", name.replace(".py", ".xml"))
    log = os.path.join(out_dir, "logs", name.replace(".py", ".log"))
    for path in (os.path.dirname(junit), os.path.dirname(log), tmp_dir):
        os.makedirs(path, exist_ok=True)
    os.makedirs(shm_dir, mode=0o700, exist_ok=True)   # miniray makes only its own dirs in it
    env = dict(os.environ)
    env.update({
        procs.RUN_ID_VAR: run_id,
        "MINIRAY_TEMP_DIR": os.path.join(tmp_dir, "miniray"),
        "MINIRAY_SHM_DIR": shm_dir,
        "PYTHONPATH": os.pathsep.join(p for p in (SCRIPTS_DIR, env.get("PYTHONPATH")) if p),
    })
    ini = os.path.join(out_dir, "pytest.ini")
    with open(ini, "w") as f:
        f.write("[pytest]\n")
    command = [sys.executable, "-m", "pytest", "-p", "ray_compat.plugin",
               "-p", "no:cacheprovider", "-c", ini, "--rootdir", run_dir,
               # sys-level capture: output of miniray's processes (a worker's
               # traceback) goes straight to the log instead of being lost
               # in the capture of whichever test started the cluster.
               "--capture=sys",
               "--timeout", str(timeout), "-rA", "-q", f"--junitxml={junit}",
               os.path.join(run_dir, name), *extra_args]
    started = time.monotonic()
    timed_out = False
    with open(log, "w") as out:
        out.write(" ".join(command) + "\n\n")
        out.flush()
        proc = subprocess.Popen(command, cwd=run_dir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(file_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    leftovers = _cleanup(run_id, tmp_dir, shm_dir)
    tests = _parse_junit(junit)
    counts = Counter(t["outcome"] for t in tests)
    return {"file": name, "exit_code": proc.returncode, "timed_out": timed_out,
            "seconds": round(time.monotonic() - started, 1),
            "leftover_pids": leftovers,
            "counts": {k: counts.get(k, 0) for k in OUTCOMES}, "tests": tests}


def _load(summary_path: str) -> list[dict]:
    """Results of earlier invocations with the same --out (files not rerun)."""
    try:
        with open(summary_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def format_table(results: list[dict]) -> str:
    lines = ["| file | passed | failed | error | skipped | time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    total = Counter()
    for r in results:
        c = r["counts"]
        total.update(c)
        note = " (file timed out)" if r["timed_out"] else ""
        lines.append(f"| {r['file']}{note} | {c['passed']} | {c['failed']} | "
                     f"{c['error']} | {c['skipped']} | {r['seconds']} |")
    lines.append(f"| **total** | {total['passed']} | {total['failed']} | "
                 f"{total['error']} | {total['skipped']} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="test file names, e.g. test_basic.py")
    parser.add_argument("--tests-dir", required=True,
                        help="directory holding Ray's test files (outside this repo)")
    parser.add_argument("--git-dir", help="export the files from this Ray git dir first")
    parser.add_argument("--rev", default="HEAD", help="revision for --git-dir")
    parser.add_argument("--out", default="/tmp/ray_conformance",
                        help="where results, logs and the run directory go")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per test")
    parser.add_argument("--file-timeout", type=int, default=1800,
                        help="wall-clock seconds per file")
    parser.add_argument("--pytest-args", default="",
                        help="extra pytest arguments, e.g. \"-k 'not slow'\"")
    args = parser.parse_args(argv)

    tests_dir = os.path.abspath(args.tests_dir)
    if args.git_dir:
        export_from_git(args.git_dir, args.rev, args.files, tests_dir)
    out_dir = os.path.abspath(args.out)
    run_dir = os.path.join(out_dir, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    for name in args.files:           # the files alone: never Ray's conftest.py
        shutil.copy(os.path.join(tests_dir, name), run_dir)

    summary_path = os.path.join(out_dir, "summary.json")
    results = _load(summary_path)
    for name in args.files:           # one at a time, never in parallel
        print(f"== {name}", flush=True)
        result = run_file(name, run_dir, out_dir, args.timeout, args.file_timeout,
                          shlex.split(args.pytest_args))
        c = result["counts"]
        print(f"   {c['passed']} passed, {c['failed']} failed, {c['error']} error, "
              f"{c['skipped']} skipped in {result['seconds']}s"
              + (" (FILE TIMED OUT)" if result["timed_out"] else "")
              + (f"; ended leftover pids {result['leftover_pids']}"
                 if result["leftover_pids"] else ""), flush=True)
        results = [r for r in results if r["file"] != name] + [result]
        with open(summary_path, "w") as f:
            json.dump(results, f, indent=1)
    table = format_table(results)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
