"""Command line: argument parsing and subcommands only; the work lives in the modules they call.

Exit codes: 0 success, 1 the agent could not do its work (probes failed, unreadable capture...), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from sentinel import __version__

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _sensor_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sensor")
    g.add_argument(
        "--duration",
        type=_positive_float,
        metavar="S",
        help="stop after S seconds (default: run until SIGINT/SIGTERM)",
    )
    g.add_argument(
        "--wakeup-events",
        type=int,
        default=64,
        metavar="N",
        help="perf-buffer samples per wakeup (default 64; 1 = lowest latency, highest overhead)",
    )
    g.add_argument(
        "--pages",
        type=int,
        default=None,
        metavar="N",
        help="perf-buffer pages per CPU for the open buffer (power of two; others scale; default 1024)",
    )
    g.add_argument(
        "--open-dedup",
        type=float,
        default=30.0,
        metavar="S",
        help="suppress identical opens by the same process image within S seconds, counted "
        "(default 30; 0 = report every open)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentinel",
        description="Linux host security agent: eBPF sensor, process lineage, event capture and replay.",
    )
    parser.add_argument("--version", action="version", version=f"sentinel {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="diagnostics on stderr (JSON lines); default info",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ev = sub.add_parser(
        "events",
        help="stream normalised events as ECS JSON lines",
        description="Stream every exec, open and connect on the host as ECS JSON lines on "
        "stdout (diagnostics on stderr). Needs root.",
    )
    _sensor_args(ev)
    ev.add_argument(
        "--types",
        default="exec,open,connect",
        metavar="LIST",
        help="event types: exec,open,connect,fork,exit,chdir or all (default exec,open,connect)",
    )
    ev.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="EXPR",
        help="keep documents where EXPR holds: FIELD=V, FIELD!=V, FIELD~SUBSTR, FIELD^=PREFIX, "
        "FIELD$=SUFFIX on ECS dotted fields (repeatable, all must hold)",
    )

    rec = sub.add_parser(
        "record",
        help="record events into a msgpack capture",
        description="Record kernel events, with the /proc facts used to enrich them, into a "
        "capture file that `sentinel replay` reads. Needs root.",
    )
    rec.add_argument("--output", "-o", required=True, metavar="FILE", help="capture file to write")
    rec.add_argument("--append", action="store_true", help="append a new segment to an existing capture")
    _sensor_args(rec)

    rep = sub.add_parser(
        "replay",
        help="process a capture as if it were live",
        description="Read a capture written by `sentinel record` and print what the live agent "
        "would have printed.",
    )
    rep.add_argument("file", metavar="FILE")
    rep.add_argument("--events", action="store_true", help="print the events as ECS JSON lines")
    rep.add_argument("--types", default="exec,open,connect", metavar="LIST", help="as for `sentinel events`")
    rep.add_argument("--filter", action="append", default=[], metavar="EXPR", help="as for `sentinel events`")

    doc = sub.add_parser(
        "doctor",
        help="check that this host can run the agent",
        description="Check kernel, BTF, tracefs, bcc, kernel headers and privileges, and say "
        "what to fix. Exit 1 if the agent cannot run.",
    )
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.add_argument("--no-compile", action="store_true", help="skip the test compile of a probe")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from sentinel import log

    log.configure(args.log_level)
    handler = {"events": cmd_events, "record": cmd_record, "replay": cmd_replay, "doctor": cmd_doctor}
    try:
        return handler[args.command](args)
    except BrokenPipeError:
        # The reader went away (`sentinel events | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK


def _sensor_config(args: argparse.Namespace) -> Any:
    from sentinel.sensor.loader import SensorConfig

    cfg = SensorConfig(wakeup_events=max(1, args.wakeup_events), open_dedup_s=max(0.0, args.open_dedup))
    if args.pages:
        if args.pages & (args.pages - 1):
            raise SystemExit(f"sentinel: --pages must be a power of two, not {args.pages}")
        scale = args.pages / cfg.pages["open"]
        cfg.pages = {k: max(1, int(v * scale)) for k, v in cfg.pages.items()}
    return cfg


def _live_setup(args: argparse.Namespace, **callbacks: Any) -> tuple[Any, Any, Any]:
    """Host facts, a process table reading /proc (reporting each read to ``callbacks``) and the sensor."""
    from sentinel.host import local_host
    from sentinel.process.facts import LiveFacts
    from sentinel.process.table import ProcessTable
    from sentinel.sensor.loader import Sensor

    host = local_host()
    table = ProcessTable(boot_id=host.boot_id, facts=LiveFacts(**callbacks))
    return host, table, Sensor(_sensor_config(args))


def _check_root(log: Any) -> bool:
    from sentinel.sensor.environment import has_bpf_privileges

    ok, why = has_bpf_privileges()
    if not ok:
        log.error("sentinel.privileges", problem=why, fix="run as root (or with CAP_BPF and CAP_PERFMON)")
    return ok


def _mode_fields() -> dict[str, Any]:
    from sentinel.sensor.environment import headers_mode

    info = headers_mode()
    return {
        "headers_mode": info.mode,
        "headers": info.headers_version,
        "kernel": info.running,
        "struct_layouts": "not used (tracepoint arguments and BPF helpers only)",
    }


def _run_sensor(
    args: argparse.Namespace,
    handle: Any,
    flush: Any,
    host: Any,
    table: Any,
    sensor: Any,
    on_loss: Any = None,
    on_ready: Any = None,
) -> int:
    from sentinel import log as logmod
    from sentinel.pipeline import run_live
    from sentinel.sensor.environment import EnvironmentProblem
    from sentinel.sensor.loader import SensorError

    log = logmod.get_logger()
    if not _check_root(log):
        return EXIT_FAIL
    log.info("sentinel.starting", version=__version__, host=host.hostname, **_mode_fields())
    try:
        run_live(sensor, table, handle, log, args.duration, flush, on_loss=on_loss, on_ready=on_ready)
    except (SensorError, EnvironmentProblem) as exc:
        log.error("sentinel.sensor_failed", problem=str(exc), fix="run `sentinel doctor` for details")
        return EXIT_FAIL
    return EXIT_OK


def _stream_options(args: argparse.Namespace, command: str) -> tuple[Any, Any] | None:
    """``--types`` and ``--filter`` checked before anything is set up; None (after saying why) if invalid."""
    from sentinel.filters import FilterError, compile_filters
    from sentinel.pipeline import parse_types

    try:
        return parse_types(args.types), compile_filters(args.filter)
    except (ValueError, FilterError) as exc:
        print(f"sentinel {command}: {exc}", file=sys.stderr)
        return None


def cmd_events(args: argparse.Namespace) -> int:
    from sentinel.alerts.ecs import EcsRenderer
    from sentinel.pipeline import EventStream

    options = _stream_options(args, "events")
    if options is None:
        return EXIT_USAGE
    types, keep = options
    host, table, sensor = _live_setup(args)
    out = sys.stdout.buffer
    stream = EventStream(table, EcsRenderer(host), out, types, keep)
    return _run_sensor(args, stream.handle, out.flush, host, table, sensor)


def cmd_record(args: argparse.Namespace) -> int:
    from sentinel.capture import CaptureError, CaptureWriter, capture_header
    from sentinel.sensor.loader import boottime_ns

    box: list[Any] = []  # the writer, once open: the callbacks are wired before it exists
    host, table, sensor = _live_setup(
        args,
        on_facts=lambda f: box[0].write_facts(f),
        on_fd=lambda pid, fd, path: box[0].write_fd(pid, fd, path),
        on_miss=lambda pid: box[0].write_facts_miss(pid),
        on_realpath=lambda path, resolved: box[0].write_realpath(path, resolved),
    )
    try:
        header = capture_header(_mode_fields()["headers_mode"], host=host.to_dict())
        writer = CaptureWriter(args.output, header, append=args.append)
    except (CaptureError, OSError, ValueError) as exc:
        print(f"sentinel record: cannot write {args.output}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    box.append(writer)

    def handle(ev: Any) -> None:
        table.apply(ev)  # facts it reads are written first, so replay has them before the event
        writer.write_event(ev)

    try:
        return _run_sensor(
            args,
            handle,
            writer.flush_if_due,
            host,
            table,
            sensor,
            on_loss=writer.write_loss,
            on_ready=lambda: writer.write_snapshot_end(boottime_ns()),
        )
    finally:
        writer.close()


def cmd_replay(args: argparse.Namespace) -> int:
    from sentinel.alerts.ecs import EcsRenderer
    from sentinel.capture import CaptureError
    from sentinel.pipeline import EventStream
    from sentinel.recording import replay_events

    if not args.events:
        print(
            "sentinel replay: give --events (rule detection on captures arrives with the rule engine)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    options = _stream_options(args, "replay")
    if options is None:
        return EXIT_USAGE
    types, keep = options
    out = sys.stdout.buffer

    def make_stream(host: Any, table: Any) -> Any:
        return EventStream(table, EcsRenderer(host), out, types, keep)

    try:
        problem = replay_events(args.file, make_stream)
    except CaptureError as exc:
        print(f"sentinel replay: {exc}", file=sys.stderr)
        return EXIT_FAIL
    out.flush()
    if problem is not None:
        print(f"sentinel replay: {problem}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from sentinel.doctor import run_doctor

    return run_doctor(as_json=args.json, compile_test=False if args.no_compile else None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
