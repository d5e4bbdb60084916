"""`recfound cluster check` and `recfound mlflow-server start|stop`: the commands of the cloud path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_cloud_commands(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser("cluster", help="check a Ray cluster launcher config before `ray up`"
                             ).add_subparsers(dest="cluster_command", required=True)
    check = cluster.add_parser("check", help="Ray's own schema check, the local files it mounts, and whether a "
                                             "training config fits its nodes (docs/cloud.md)")
    check.add_argument("launcher_file", type=Path, help="e.g. cluster.yaml or deploy/gcp/cluster.yaml")
    check.add_argument("--config", type=Path, help="the training config the cluster is for, e.g. "
                                                   "jobs/configs/mistral7b-8xh100.yaml (without it: no fit check)")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one training config field, as for `recfound train`")
    check.set_defaults(func=cmd_cluster_check)

    server = sub.add_parser("mlflow-server", help="the cluster's MLflow tracking server: PostgreSQL store, "
                                                  "artifacts in a bucket (started on the head by cluster.yaml)"
                            ).add_subparsers(dest="server_command", required=True)
    start = server.add_parser("start", help="start it in the background and wait until it answers")
    start.add_argument("--env-file", type=Path, help="KEY=VALUE lines with MLFLOW_BACKEND_STORE_URI and "
                                                     "MLFLOW_ARTIFACTS_DESTINATION (else the environment's)")
    start.add_argument("--host", default="127.0.0.1", help="the address it listens on (default: loopback only)")
    start.add_argument("--port", type=int, default=5000, help="the port it listens on (default 5000)")
    start.add_argument("--log-file", type=Path, default=Path("mlflow-server.log"), help="the server's output")
    start.add_argument("--pid-file", type=Path, default=Path("mlflow-server.pid"),
                       help="where its process id is kept (what `stop` reads)")
    start.add_argument("--timeout", type=float, default=None, help="seconds to wait for it (default 120)")
    start.set_defaults(func=cmd_server_start)
    stop = server.add_parser("stop", help="stop the server a pid file names")
    stop.add_argument("--pid-file", type=Path, default=Path("mlflow-server.pid"), help="the file `start` wrote")
    stop.set_defaults(func=cmd_server_stop)


def cmd_cluster_check(args: argparse.Namespace) -> None:
    from recfound.cloud.fit import check_fit
    from recfound.cloud.launcher import LauncherError, load_launcher_config, mounted_file_problems
    from recfound.config import load_config

    launcher = load_launcher_config(args.launcher_file)
    problems = [f"{args.launcher_file}: {problem}" for problem in mounted_file_problems(launcher)]
    if args.config or args.overrides:
        config = load_config(args.config, args.overrides, check_paths=False)  # the paths are the cluster's
        problems += [f"{args.launcher_file}: {problem}" for problem in check_fit(launcher, config)]
    for problem in problems[:-1]:  # each its own error line; the last ends the command
        print(f"recfound: error: {problem}", file=sys.stderr)
    if problems:
        raise LauncherError(problems[-1])
    types = ", ".join(f"{name} (max {node['max_workers']})" for name, node in launcher["available_node_types"].items()
                      if name != launcher["head_node_type"])
    fits = ""
    if args.config or args.overrides:
        fits = f"; fits {args.config or 'the default config'}" + (" with the --set items" if args.overrides else "")
    print(f"{args.launcher_file}: ok: head {launcher['head_node_type']}, worker types {types}, "
          f"at most {launcher['max_workers']} worker node(s){fits}")


def cmd_server_start(args: argparse.Namespace) -> None:
    from recfound.tracking.server import DEFAULT_START_TIMEOUT_S, describe, server_environment, start_server

    environment = server_environment(args.env_file)
    url = start_server(args.host, args.port, args.log_file, args.pid_file, environment,
                       timeout_s=args.timeout or DEFAULT_START_TIMEOUT_S)
    print(f"MLflow tracking server: {url} ({describe(environment)}); log {args.log_file}, pid file {args.pid_file}")


def cmd_server_stop(args: argparse.Namespace) -> None:
    from recfound.tracking.server import stop_server

    print("stopped" if stop_server(args.pid_file) else f"no server running for {args.pid_file}")
