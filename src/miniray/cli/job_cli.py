"""``miniray job submit|status|logs|stop|delete|list``: Ray's job CLI, a thin
layer over ``miniray.job_submission.JobSubmissionClient`` (runs in the
user's shell, talks HTTP to the head's dashboard port).

    miniray job submit [--working-dir DIR] [--runtime-env-json JSON]
                       [--runtime-env FILE] [--submission-id ID] [--no-wait]
                       [--entrypoint-num-cpus N] [--address http://host:8265] -- CMD...
    miniray job status|stop|delete ID
    miniray job logs ID [--follow]
    miniray job list
"""
from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys

_NON_TERMINAL_HINT = "(it is still running: `miniray job stop {id}` first)"


def _json_object(what: str):
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{what} is not valid JSON ({exc.msg})") \
                from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{what} must be a JSON object")
        return value
    return parse


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}")
    return int(value) if value.is_integer() else value


def _connection(parser) -> None:
    parser.add_argument("--address", metavar="URL",
                        help="the job server, http://<head>:8265 (default: $MINIRAY_ADDRESS "
                             "or $RAY_ADDRESS, else the dashboard of the cluster started "
                             "on this machine; a GCS host:port works too)")
    parser.add_argument("--headers", type=_json_object("--headers"), metavar="JSON",
                        help="extra HTTP headers as a JSON object, e.g. "
                             "'{\"Authorization\": \"Bearer <token>\"}'")


def add_commands(commands) -> None:
    """Add ``miniray job ...`` to the ``miniray`` parser's subcommands."""
    job = commands.add_parser(
        "job", help="submit and manage jobs (Ray's job submission)",
        description="Run a command on the cluster's head node as a job (a driver of the "
                    "cluster), with its runtime env; follow, stop and list jobs.")
    sub = job.add_subparsers(dest="job_command", metavar="SUBCOMMAND")
    job.set_defaults(func=lambda args: (job.print_help(sys.stderr), 2)[1])

    submit = sub.add_parser(
        "submit", help="submit a job and (unless --no-wait) follow its logs",
        description="Submit CMD as a job. Without --no-wait, print its output until it "
                    "ends; the exit code is 0 only if it succeeded.")
    submit.add_argument("--submission-id", "--job-id", dest="submission_id", metavar="ID",
                        help="the job's id (default: a new raysubmit_... id)")
    submit.add_argument("--working-dir", metavar="DIR",
                        help="a local directory (or .zip) uploaded and made the job's "
                             "working directory (runtime_env working_dir)")
    submit.add_argument("--runtime-env-json", type=_json_object("--runtime-env-json"),
                        metavar="JSON", help="the job's runtime env as a JSON object")
    submit.add_argument("--runtime-env", metavar="FILE",
                        help="the job's runtime env from a JSON (or, with PyYAML "
                             "installed, YAML) file")
    submit.add_argument("--metadata-json", type=_json_object("--metadata-json"),
                        metavar="JSON", help="metadata (string to string) kept with the job")
    submit.add_argument("--entrypoint-num-cpus", type=_amount, metavar="N")
    submit.add_argument("--entrypoint-num-gpus", type=_amount, metavar="N")
    submit.add_argument("--entrypoint-memory", type=_amount, metavar="BYTES")
    submit.add_argument("--entrypoint-resources", type=_json_object("--entrypoint-resources"),
                        metavar="JSON", help="custom resources, e.g. '{\"accel\": 1}'")
    submit.add_argument("--no-wait", action="store_true",
                        help="return once the job is submitted")
    _connection(submit)
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, metavar="-- CMD",
                        help="the command to run (after --)")
    submit.set_defaults(func=cmd_submit, parser=submit)

    for name, helptext in (("status", "show a job's status"),
                           ("stop", "stop a job (SIGTERM, then SIGKILL)"),
                           ("delete", "forget an ended job and delete its log")):
        command = sub.add_parser(name, help=helptext, description=helptext + ".")
        command.add_argument("job_id", metavar="ID", help="submission id (or job id)")
        if name == "stop":
            command.add_argument("--no-wait", action="store_true",
                                 help="return without waiting for the job to stop")
        _connection(command)
        command.set_defaults(func={"status": cmd_status, "stop": cmd_stop,
                                   "delete": cmd_delete}[name], parser=command)

    logs = sub.add_parser("logs", help="print a job's output",
                          description="Print a job's output so far (--follow: and as it "
                                      "comes, until the job ends).")
    logs.add_argument("job_id", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true")
    _connection(logs)
    logs.set_defaults(func=cmd_logs, parser=logs)

    lst = sub.add_parser("list", help="list the cluster's jobs",
                         description="List every job (submitted ones, and drivers "
                                     "started by hand), with its status.")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    _connection(lst)
    lst.set_defaults(func=cmd_list, parser=lst)


# --- commands --------------------------------------------------------------------------
def _reports_errors(command):
    """Errors the user can act on end the command with a message, exit code 1."""
    @functools.wraps(command)
    def run(args) -> int:
        try:
            return command(args)
        except BrokenPipeError:
            sys.stderr.close()
            return 0
        except (ConnectionError, RuntimeError, ValueError, TypeError, OSError) as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    return run


def _client(args):
    from miniray.job_submission import JobSubmissionClient
    return JobSubmissionClient(args.address, headers=args.headers)


def _entrypoint(words: list[str]) -> str:
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise ValueError("no entrypoint: give the command after --, e.g. "
                         "`miniray job submit -- python script.py`")
    return words[0] if len(words) == 1 else shlex.join(words)


def _runtime_env(args) -> dict | None:
    env: dict = {}
    if args.runtime_env:
        with open(args.runtime_env, encoding="utf-8") as f:
            text = f.read()
        if args.runtime_env.endswith(".json"):
            env = json.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise ValueError(f"{args.runtime_env}: YAML needs PyYAML (pip install "
                                 f"pyyaml); or give a .json file or --runtime-env-json") \
                    from None
            env = yaml.safe_load(text) or {}
        if not isinstance(env, dict):
            raise ValueError(f"{args.runtime_env} must hold a mapping (a runtime env)")
    if args.runtime_env_json:
        if args.runtime_env:
            raise ValueError("give --runtime-env or --runtime-env-json, not both")
        env = dict(args.runtime_env_json)
    if args.working_dir:
        env["working_dir"] = args.working_dir
    return env or None


@_reports_errors
def cmd_submit(args) -> int:
    entrypoint = _entrypoint(args.entrypoint)
    client = _client(args)
    submission_id = client.submit_job(
        entrypoint=entrypoint, submission_id=args.submission_id,
        runtime_env=_runtime_env(args), metadata=args.metadata_json,
        entrypoint_num_cpus=args.entrypoint_num_cpus,
        entrypoint_num_gpus=args.entrypoint_num_gpus,
        entrypoint_memory=int(args.entrypoint_memory) if args.entrypoint_memory else None,
        entrypoint_resources=args.entrypoint_resources)
    print(f"Job '{submission_id}' submitted successfully.", flush=True)
    if args.no_wait:
        print(f"Query its status with `miniray job status {submission_id}`, its logs with "
              f"`miniray job logs {submission_id} --follow`, stop it with "
              f"`miniray job stop {submission_id}`.")
        return 0
    print("Tailing logs until the job exits (disable with --no-wait):", flush=True)
    return _follow_to_end(client, submission_id)


def _follow_to_end(client, submission_id: str) -> int:
    for text in client.iter_job_logs(submission_id):
        sys.stdout.write(text)
        sys.stdout.flush()
    info = client.get_job_info(submission_id)
    return _report_end(submission_id, info)


def _report_end(submission_id: str, info) -> int:
    from miniray.job_submission import JobStatus
    if info.status is JobStatus.SUCCEEDED:
        print(f"Job '{submission_id}' succeeded.")
        return 0
    if info.status is JobStatus.STOPPED:
        print(f"Job '{submission_id}' was stopped.")
        return 1
    print(f"Job '{submission_id}' {str(info.status).lower()}: {info.message}",
          file=sys.stderr)
    return 1


@_reports_errors
def cmd_status(args) -> int:
    info = _client(args).get_job_info(args.job_id)
    print(f"Status for job '{args.job_id}': {info.status}")
    if info.message:
        print(f"Status message: {info.message}")
    return 0


@_reports_errors
def cmd_stop(args) -> int:
    client = _client(args)
    stopped = client.stop_job(args.job_id)
    if not stopped:
        print(f"Job '{args.job_id}' had already ended: "
              f"{client.get_job_status(args.job_id)}.")
        return 0
    print(f"Stopping job '{args.job_id}'.", flush=True)
    if args.no_wait:
        return 0
    import time
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get_job_status(args.job_id)
        if status.is_terminal():
            print(f"Job '{args.job_id}' is {status}.")
            return 0
        time.sleep(0.25)
    print(f"Job '{args.job_id}' has not stopped yet.", file=sys.stderr)
    return 1


@_reports_errors
def cmd_delete(args) -> int:
    _client(args).delete_job(args.job_id)
    print(f"Job '{args.job_id}' deleted.")
    return 0


@_reports_errors
def cmd_logs(args) -> int:
    client = _client(args)
    if not args.follow:
        sys.stdout.write(client.get_job_logs(args.job_id))
        sys.stdout.flush()
        return 0
    for text in client.iter_job_logs(args.job_id):
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


@_reports_errors
def cmd_list(args) -> int:
    jobs = _client(args).list_jobs()
    if args.format == "json":
        print(json.dumps([j.to_dict() for j in jobs], indent=2))
        return 0
    import shutil
    from miniray.cli.format import render_table
    rows = [[j.submission_id or "-", j.job_id or "-", str(j.type), str(j.status),
             _when(j.start_time), j.entrypoint or "-"] for j in jobs]
    width = shutil.get_terminal_size((120, 24)).columns
    print(render_table(["SUBMISSION_ID", "JOB_ID", "TYPE", "STATUS", "START_TIME",
                        "ENTRYPOINT"], rows, max_width=width) if rows else "(no jobs)")
    return 0


def _when(ms) -> str:
    if not ms:
        return "-"
    import datetime
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")

