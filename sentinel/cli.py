"""Command line: argument parsing and subcommands only; the work lives in the modules they call.

Exit codes: 0 success, 1 the agent could not do its work (probes failed, unreadable capture...), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sentinel import live
from sentinel.buildinfo import VersionAction
from sentinel.events import DEFAULT_TYPES_SPEC
from sentinel.outstream import claim_stdout

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
    g.add_argument(
        "--loader-opens",
        choices=["filter", "report"],
        default="filter",
        help="the dynamic loader's reads of ld.so.cache and system shared libraries right after exec: "
        "filter (default: counted in the kernel, not sent) or report each",
    )
    g.add_argument(
        "--scheduling",
        choices=["batch", "normal", "idle"],
        default="batch",
        help="the agent's CPU scheduling policy (default batch: a fair share of CPU without preempting the "
        "monitored processes at every wake-up; idle is cheaper still but starves the agent on a busy host)",
    )
    g.add_argument(
        "--perf-reader",
        choices=["auto", "mmap", "bcc"],
        default="auto",
        help="how samples are read from the perf buffers (default auto: straight from the mapped rings, a "
        "batch per poll, on x86-64; bcc: bcc's reader, one callback per sample)",
    )


def _endpoint(text: str) -> str:
    from sentinel.containers.endpoints import EndpointError, parse_endpoint

    try:
        endpoint = parse_endpoint(text)
    except EndpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return f"{endpoint.kind}:{endpoint.path}"


def _container_args(p: argparse.ArgumentParser) -> None:
    """Runtime metadata for the live commands (`run`: over the configuration's ``containers`` section)."""
    g = p.add_argument_group("containers")
    g.add_argument(
        "--container-endpoint",
        action="append",
        type=_endpoint,
        default=None,
        metavar="KIND:SOCKET",
        help="a container runtime's API socket to ask for names, images, labels and pods: docker, podman "
        "(Docker Engine API), containerd, cri-o, cri-dockerd (CRI); repeatable; replaces the usual sockets "
        "(/var/run/docker.sock, /run/podman/podman.sock, /run/containerd/containerd.sock, ...)",
    )
    g.add_argument(
        "--no-container-metadata",
        action="store_true",
        help="ask no runtime: containers are named by their cgroup's id only",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentinel",
        description="Linux host security agent: eBPF sensor, process lineage, event capture and replay.",
    )
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="diagnostics on stderr (JSON lines); default info",
    )
    parser.add_argument(
        "--log-format",
        default="json",
        choices=["json", "ecs"],
        help="diagnostics' form: json (the record's name in `event`, the default) or ecs (safe to ship into "
        "the alerts' index: the name in `message` and `event.action`, the level in `log.level`, the rest "
        "under `sentinel.diagnostic`)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ev = sub.add_parser(
        "events",
        help="stream normalised events as ECS JSON lines",
        description="Stream every exec, open and connect on the host as ECS JSON lines on "
        "stdout (diagnostics on stderr). Needs root.",
    )
    _sensor_args(ev)
    _container_args(ev)
    ev.add_argument(
        "--types",
        default=DEFAULT_TYPES_SPEC,
        metavar="LIST",
        help="event types: exec, open, connect, fork, exit, chdir, tamper, a family of security syscalls "
        "(privilege, injection, kernel, fileless, mount, namespace, signal; security: all of them), file "
        "(changes made without an open: unlink, rename, link, symlink, chmod, chown, mkdir, truncate, "
        "utimensat), listening (bind, listen, accept), datagram (sendto, sendmsg, sendmmsg to a new "
        "destination), fd (dup* moving a socket), a "
        f"syscall's name (setuid, ptrace, mount, ...) or all (default {DEFAULT_TYPES_SPEC})",
    )
    ev.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="EXPR",
        help="keep documents where EXPR holds: FIELD=V, FIELD!=V, FIELD~SUBSTR, FIELD^=PREFIX, "
        "FIELD$=SUFFIX on ECS dotted fields (repeatable, all must hold); container.id takes the whole id, "
        "the 12-character one or host",
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
    _container_args(rec)

    rep = sub.add_parser(
        "replay",
        help="process a capture as if it were live",
        description="Read a capture written by `sentinel record` and print what the live agent "
        "would have printed.",
    )
    rep.add_argument("file", metavar="FILE")
    rep.add_argument(
        "--events", action="store_true", help="print the events as ECS JSON lines instead of detecting"
    )
    rep.add_argument(
        "--types", default=DEFAULT_TYPES_SPEC, metavar="LIST", help="as for `sentinel events`"
    )
    rep.add_argument("--filter", action="append", default=[], metavar="EXPR", help="as for `sentinel events`")
    _detection_args(rep)
    _anomaly_args(rep, live=False)
    _add_run_parser(sub)

    _add_rules_parsers(sub)
    _add_model_parsers(sub)
    _add_config_parsers(sub)

    ta = sub.add_parser(
        "test-alert",
        help="do something harmless that a default rule alerts on, to see the pipeline work",
        description="Copy /bin/true to /dev/shm, run it once and delete it: a running `sentinel run` with "
        "the shipped rules writes a 'Program Run From Shared Memory' alert for it. Nothing is read, changed "
        "or left behind. Exit 0 when the action ran, 1 when it could not (no /dev/shm, mounted noexec).",
    )
    ta.add_argument("--json", action="store_true", help="machine-readable output")
    doc = sub.add_parser(
        "doctor",
        help="check that this host can run the agent",
        description="Check kernel, BTF and the kernel offsets it gives, tracefs and the tracepoints "
        "(optional ones listed), bcc, kernel headers and privileges; then load the real probes and check "
        "that doctor's own open and exec come back matching /proc. Say what to fix. Exit 1 if the agent "
        "cannot run.",
    )
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.add_argument("--no-compile", action="store_true", help="skip loading the real probes")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    """The agent (:mod:`sentinel.runner`): the flags are overrides over the configuration file."""
    from sentinel.runner import run_agent

    return run_agent(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from sentinel import log

    log.configure(args.log_level, args.log_format)
    handler = {
        "run": cmd_run,
        "events": cmd_events,
        "record": cmd_record,
        "replay": cmd_replay,
        "doctor": cmd_doctor,
        "test-alert": cmd_test_alert,
        "rules": _cmd_rules,
        "fields": cmd_fields,
        "train": cmd_train,
        "model": cmd_model,
        "config": cmd_config,
    }
    try:
        return handler[args.command](args)
    except BrokenPipeError:
        # The reader went away (`sentinel events | head`): not an error worth a traceback.
        from sentinel.outstream import silence_closed_reader

        silence_closed_reader()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK


def _sensor_config(args: argparse.Namespace) -> Any:
    """`events` and `record`: the sensor settings from their flags (`run`: from its configuration)."""
    if args.pages and args.pages & (args.pages - 1):
        raise SystemExit(f"sentinel: --pages must be a power of two, not {args.pages}")
    return live.sensor_config(
        args.wakeup_events, args.open_dedup, args.loader_opens, args.pages,
        getattr(args, "scheduling", "batch"), getattr(args, "perf_reader", "auto"),
    )  # fmt: skip


def _live_setup(
    args: argparse.Namespace, metadata: tuple[bool, list[str] | None] | None = None, **callbacks: Any
) -> tuple[Any, Any, Any]:
    """`events` and `record`: host, process table and sensor from the flags (see :func:`live.live_setup`);
    ``metadata`` overrides ``--no-container-metadata`` and ``--container-endpoint``."""
    if metadata is None:
        metadata = (not args.no_container_metadata, args.container_endpoint)
    return live.live_setup(_sensor_config(args), metadata, **callbacks)


_poll_metadata = live.poll_metadata
_mode_fields = live.mode_fields


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
    out = claim_stdout()  # before bcc loads: its native warnings go to stderr, never into a JSON line
    host, table, sensor = _live_setup(args)
    stream = EventStream(table, EcsRenderer(host), out, types, keep)
    on_tick = _poll_metadata(table)
    return live.run_sensor(args.duration, stream.handle, out.flush, host, table, sensor, on_tick=on_tick)


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
        on_identity=lambda path, identity: box[0].write_identity(path, identity),
        on_container=lambda pid, ref: box[0].write_container(pid, ref),
        on_container_meta=lambda change: box[0].write_container_meta(change),
    )
    try:
        header = capture_header(_mode_fields()["headers_mode"], host=host.to_dict())
        writer = CaptureWriter(args.output, header, append=args.append)
    except (CaptureError, OSError, ValueError) as exc:
        print(f"sentinel record: cannot write {args.output}: {exc}", file=sys.stderr)
        table.containers.close()
        return EXIT_FAIL
    box.append(writer)

    def handle(ev: Any) -> None:
        table.apply(ev)  # facts it reads are written first, so replay has them before the event
        writer.write_event(ev)

    try:
        return live.run_sensor(
            args.duration,
            handle,
            writer.flush_if_due,
            host,
            table,
            sensor,
            on_loss=writer.write_loss,
            on_ready=lambda: writer.write_snapshot_end(boottime_ns()),
            on_tick=_poll_metadata(table),  # answers recorded where the pipeline took them
        )
    finally:
        writer.close()


def cmd_replay(args: argparse.Namespace) -> int:
    from sentinel.alerts.ecs import EcsRenderer
    from sentinel.capture import CaptureError
    from sentinel.pipeline import EventStream
    from sentinel.recording import replay_events

    if not args.events:
        return _replay_detect(args)
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


# ---------------------------------------------------------------------------------- detection: run, replay


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _detection_args(p: argparse.ArgumentParser) -> None:
    """Rules, alert format and outputs, for `run` and `replay` (defaults: --config, then ours)."""
    g = p.add_argument_group("detection")
    g.add_argument(
        "--rules",
        action="append",
        default=None,
        metavar="PATH",
        help="rules file or directory, in load order (repeatable; default: the shipped rules)",
    )
    g.add_argument("--format", choices=["ecs", "falco"], default=None, help="alert format (default ecs)")
    g.add_argument(
        "--output",
        action="append",
        default=None,
        metavar="SINK",
        help="stdout, file:PATH (NDJSON, mode 0600), http:URL (JSON POST, spooled), syslog:tcp://HOST:PORT, "
        "syslog:tls://HOST:PORT or syslog:local; repeatable (default stdout)",
    )
    g.add_argument(
        "--config", metavar="FILE",
        help="YAML configuration (run: default $SENTINEL_CONFIG or /etc/sentinel/sentinel.yaml when it "
        "exists, with its drop-ins; replay: none); command-line flags override it",
    )  # fmt: skip
    g.add_argument(
        "--aggregation-window",
        type=_non_negative_float,
        default=None,
        metavar="S",
        help="count repeats of a rule for one behaviour (program, parent, user, image) within S seconds into "
        "one summary alert "
        "(default 60; 0 = every alert on its own)",
    )


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` or plain seconds → seconds."""
    t = text.strip().lower()
    units = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 7d, 12h, 30m, 45s)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _anomaly_args(p: argparse.ArgumentParser, live: bool) -> None:
    g = p.add_argument_group("anomaly model")
    if live:
        g.add_argument(
            "--model",
            default=None,
            metavar="MODEL",
            help="auto (default: learn this host for --learn-period, then detect while it keeps learning and "
            "retraining), off (rules only), or a model directory trained for this host; the shipped model "
            "is not a detection mode (see models/README.md)",
        )
        g.add_argument(
            "--state-dir",
            default=None,
            metavar="DIR",
            help="where the host's baseline, learning progress and host model are kept across restarts "
            "(default /var/lib/sentinel)",
        )
        g.add_argument(
            "--learn-period",
            type=parse_duration,
            default=None,
            metavar="DURATION",
            help="warm-up: how long auto mode learns the host before its first model (agent running time; "
            "default 1h); it retrains at 2x, 4x… that time, at least daily",
        )
    else:
        g.add_argument(
            "--model",
            default=None,
            metavar="MODEL",
            help="score the recorded events with a model directory, e.g. models/default (default: off)",
        )
    g.add_argument(
        "--no-ml-alerts",
        action="store_true",
        help="score events (for ml.* rule fields) but write no sentinel-ml alerts",
    )


def _add_run_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="the agent: match every event against the rules and write alerts",
        description="Read the configuration (/etc/sentinel/sentinel.yaml and its drop-ins, or --config; "
        "flags override it), load and validate the rules, attach the probes and write one alert per line "
        "(ECS JSON by default) for every rule an event matches. SIGHUP (or a changed file with reload.watch) "
        "reloads configuration and rules, validated first; SIGUSR1 reopens output files; SIGINT/SIGTERM "
        "stop cleanly. Needs root.",
    )
    _detection_args(run)
    _anomaly_args(run, live=True)
    ops = run.add_argument_group("operations")
    ops.add_argument(
        "--metrics-address",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on /metrics and health on /healthz there (e.g. 127.0.0.1:9464; "
        "default: off)",
    )
    _sensor_args(run)
    _container_args(run)
    # None = not given: the config file decides
    run.set_defaults(wakeup_events=None, open_dedup=None, loader_opens=None)


def _replay_detect(args: argparse.Namespace) -> int:
    """`sentinel replay FILE` without --events: the live agent's detection, on the recorded events."""
    from sentinel import log as logmod
    from sentinel import runner
    from sentinel.capture import CaptureError
    from sentinel.detect import DetectionStream
    from sentinel.recording import replay_events

    cfg = runner.detection_settings(args, "replay")
    if cfg is None:
        return EXIT_FAIL
    outcome = runner.load_rules_or_report(cfg, "replay")
    if outcome is None:
        return EXIT_FAIL
    sink = runner.open_outputs(cfg, "replay")
    if sink is None:
        return EXIT_FAIL
    fmt = cfg.format if sink.format == "mixed" else sink.format
    log = logmod.get_logger()
    log.info("sentinel.rules_loaded", **runner.rules_loaded_fields(outcome, cfg))
    from sentinel.agent import anomaly_settings
    from sentinel.anomaly.live import open_engine

    settings = anomaly_settings(cfg, live=False)
    if settings.model == "auto":
        print("sentinel replay: --model auto needs a live host; give a model directory", file=sys.stderr)
        sink.close()
        return EXIT_USAGE
    engine, notices = open_engine(settings, log)
    streams: list[Any] = []

    def make_stream(host: Any, table: Any) -> Any:
        if streams:
            streams[-1].finish()  # a new segment (another boot): the previous one's summaries first
        stream = DetectionStream(
            table, outcome.ruleset, host, sink, fmt, cfg.aggregation_window_s, anomaly=engine,
            redactor=cfg.redactor(), falco_iso8601=cfg.falco_time_iso8601, rate_per_min=cfg.rule_rate_limit,
        )  # fmt: skip
        if not streams:
            for alert in notices:
                stream.raise_internal(alert)
        streams.append(stream)
        return stream

    try:
        problem = replay_events(args.file, make_stream)
    except CaptureError as exc:
        print(f"sentinel replay: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if streams:
            streams[-1].finish()
        sink.close()
    if problem is not None:
        print(f"sentinel replay: {problem}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_test_alert(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from sentinel.trigger import describe, fire

    result = fire()
    print(json.dumps(dataclasses.asdict(result)) if args.json else describe(result))
    return EXIT_FAIL if result.problem else EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from sentinel.doctor import run_doctor

    return run_doctor(as_json=args.json, compile_test=False if args.no_compile else None)


# ---------------------------------------------------------------------------------- rules, fields


def _add_rules_parsers(sub: Any) -> None:
    rules = sub.add_parser(
        "rules",
        help="check rule files: validate them, run their fixtures, list them",
        description="Work with Falco-style rule files without running the agent.",
    )
    rsub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    val = rsub.add_parser(
        "validate",
        help="load rule files and report errors and warnings per file",
        description="Load the rule files and directories in order (as the agent would) and say for each "
        "file: Ok, Ok with warnings, or Invalid, with file:line:column, a code and the offending line. "
        "Exit 1 if any file is invalid.",
    )
    val.add_argument("paths", nargs="*", metavar="PATH", help="rules file or directory, in load order "
                     "(default: the shipped rules)")  # fmt: skip
    val.add_argument("--json", action="store_true", help="machine-readable report")
    test = rsub.add_parser(
        "test",
        help="run the rules' fixtures (x.fixtures.yaml next to x.yaml)",
        description="Load the rules, rebuild each fixture's event and check that exactly the expected "
        "rules fire. Reports per fixture and per rule; exit 1 on any failure.",
    )
    test.add_argument("paths", nargs="+", metavar="PATH", help="rules file or directory, in load order")
    test.add_argument("--json", action="store_true", help="machine-readable report")
    lst = rsub.add_parser(
        "list",
        help="list the rules: format (falco/sigma), status, priority, where defined; Sigma id and level",
        description="Load the rules as the agent would and print one line per rule: its format (falco or "
        "sigma), status (enabled, disabled, refused, never-fires, skipped), priority, file:line and name; "
        "for a Sigma rule also its id and level. --json adds tags and the rule's metadata (Rule.meta). "
        "Exit 1 if the rules cannot be loaded (the errors go to stderr; `rules validate` says more).",
    )
    lst.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="rules file or directory, in load order (default: the shipped rules)",
    )
    lst.add_argument("--json", action="store_true", help="machine-readable list")
    fields = sub.add_parser(
        "fields",
        help="list the fields rule conditions and outputs can use",
        description="The field reference: name, type, the events that fill it, meaning.",
    )
    fields.add_argument("--markdown", action="store_true", help="as Markdown (docs/fields.md is this output)")


def _cmd_rules(args: argparse.Namespace) -> int:
    if args.rules_command == "validate":
        return cmd_rules_validate(args)
    if args.rules_command == "list":
        return cmd_rules_list(args)
    return cmd_rules_test(args)


def _rules_internal_error(command: str, args: argparse.Namespace, exc: BaseException) -> int:
    """A bug must not show a rule author a traceback: say where we were, as a located error."""
    where = args.paths[0] if getattr(args, "paths", None) else "<rules>"
    print(f"{where}:1:1: error [internal-error] sentinel rules {command}: {exc!r}", file=sys.stderr)
    return EXIT_FAIL


def _shipped_rules_paths(args: argparse.Namespace, command: str) -> bool:
    """No PATH given: the shipped rules (checkout, /usr/share/sentinel or the package). False if none."""
    if args.paths:
        return True
    from sentinel.detect import find_rules_dir

    shipped = find_rules_dir()
    if shipped is None:
        print(f"sentinel rules {command}: no PATH given and the shipped rules were not found",
              file=sys.stderr)  # fmt: skip
        return False
    args.paths = [str(shipped)]
    return True


def cmd_rules_validate(args: argparse.Namespace) -> int:
    import orjson

    if not _shipped_rules_paths(args, "validate"):
        return EXIT_USAGE
    try:
        from sentinel.rules.validate import format_text, validate

        result = validate(args.paths)
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        else:
            print(format_text(result))
    except Exception as exc:
        return _rules_internal_error("validate", args, exc)
    return EXIT_OK if result.ok else EXIT_FAIL


def cmd_rules_list(args: argparse.Namespace) -> int:
    import orjson

    if not _shipped_rules_paths(args, "list"):
        return EXIT_USAGE
    try:
        from sentinel.rules.listing import format_list, list_doc
        from sentinel.rules.loader import load_rules
        from sentinel.rules.validate import format_diagnostic

        result = load_rules(args.paths)
        rs = result.ruleset
        if rs is None:
            for d in result.errors:
                print(format_diagnostic(d), file=sys.stderr)
            print(f"sentinel rules list: invalid rules ({len(result.errors)} error(s))", file=sys.stderr)
            return EXIT_FAIL
        doc = list_doc(rs)
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str) + b"\n")
        else:
            print(format_list(doc))
    except Exception as exc:
        return _rules_internal_error("list", args, exc)
    return EXIT_OK


def cmd_rules_test(args: argparse.Namespace) -> int:
    import orjson

    try:
        from sentinel.rules.fixtures import format_report, run_fixtures

        report = run_fixtures(args.paths)
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        else:
            print(format_report(report))
    except Exception as exc:
        return _rules_internal_error("test", args, exc)
    return EXIT_OK if report.ok else EXIT_FAIL


def cmd_fields(args: argparse.Namespace) -> int:
    from sentinel.rules.fields import reference

    sys.stdout.write(reference(markdown=args.markdown) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------- anomaly model


def _add_model_parsers(sub: Any) -> None:
    tr = sub.add_parser(
        "train",
        help="train a host anomaly model from baseline captures",
        description="Replay baseline captures (oldest first), compute novelty features, fit an isolation "
        "forest on the earlier part and set the alert threshold from an alert budget on the later part.",
    )
    tr.add_argument("captures", nargs="+", metavar="CAPTURE", help="baseline capture files, oldest first")
    tr.add_argument(
        "--output", "-o", required=True, metavar="MODEL_DIR", help="directory to write the model to"
    )
    tr.add_argument("--alerts-per-day", type=float, default=5.0, metavar="N",
                    help="alert budget on the held-out baseline (default 5)")  # fmt: skip
    tr.add_argument("--trees", type=int, default=100, metavar="N", help="trees in the forest (default 100)")
    tr.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    model = sub.add_parser("model", help="inspect an anomaly model", description="Work with anomaly models.")
    msub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    info = msub.add_parser(
        "info",
        help="print a model's manifest and verify its files",
        description="Print the manifest and verify checksums, arrays and structure. Exit 1 with the reason "
        "when the model does not verify.",
    )
    info.add_argument("--model", required=True, metavar="DIR", help="model directory, or 'default' for the "
                      "shipped model")  # fmt: skip
    status = msub.add_parser(
        "status",
        help="where this host's model stands: phase, time learned, next training",
        description="Read the state directory the agent saves to (it may be running) and print the phase "
        "(learning or detection), the time learned and the warm-up, events seen, the next training, the "
        "host model's thresholds and the baseline's size. Exit 1 when a state file cannot be read.",
    )
    status.add_argument("--config", default=None, metavar="FILE", help="configuration file (state_dir, "
                        "learning.period)")  # fmt: skip
    status.add_argument("--state-dir", default=None, metavar="DIR", help="state directory (default: the "
                        "configuration's, /var/lib/sentinel)")  # fmt: skip
    status.add_argument("--json", action="store_true", help="machine-readable output")
    ev = msub.add_parser(
        "eval",
        help="evaluate a model on normal and attack captures",
        description="Score normal captures (not used in training) and attack captures (one attack instance "
        "each) from the trained baseline; print AUC, detection rate at 0.1% and 1% false-positive rate and "
        "expected alerts per day.",
    )
    ev.add_argument("--model", required=True, metavar="DIR", help="model directory")
    ev.add_argument("--normal", nargs="+", required=True, metavar="CAPTURE", help="benign captures")
    ev.add_argument("--attack", nargs="+", required=True, metavar="CAPTURE", help="one capture per attack")
    ev.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_train(args: argparse.Namespace) -> int:
    from sentinel.anomaly.model import ModelError
    from sentinel.anomaly.train import train
    from sentinel.capture import CaptureError

    try:
        train(
            args.captures,
            args.output,
            alerts_per_day=args.alerts_per_day,
            trees=args.trees,
            seed=args.seed,
            progress=sys.stderr,
        )
    except (ValueError, CaptureError, ModelError, OSError) as exc:
        print(f"sentinel train: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_model(args: argparse.Namespace) -> int:
    import json

    from sentinel.anomaly.model import ModelError, load_model

    if args.model_command == "status":
        return _model_status(args)
    if args.model == "default":
        from sentinel.anomaly.live import find_default_model

        shipped = find_default_model()
        if shipped is None:
            print(f"sentinel model {args.model_command}: the shipped default model was not found",
                  file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        args.model = str(shipped)
    try:
        model = load_model(args.model)
    except ModelError as exc:
        print(f"sentinel model {args.model_command}: model refused: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.model_command == "eval":
        from sentinel.anomaly.evaluate import evaluate, format_report
        from sentinel.capture import CaptureError

        try:
            report = evaluate(model, args.normal, args.attack)
        except (ValueError, CaptureError, OSError) as exc:
            print(f"sentinel model eval: {exc}", file=sys.stderr)
            return EXIT_FAIL
        print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
        return EXIT_OK
    print(json.dumps(model.manifest, indent=2, sort_keys=True))
    groups = ", ".join(f"{g.name} (threshold {g.threshold:.4f})" for g in model.groups)
    print(
        f"{args.model}: verified ({model.manifest['n_trees']} trees, "
        f"{len(model.feature_names)} features; forests: {groups})"
    )
    return EXIT_OK


def _model_status(args: argparse.Namespace) -> int:
    import json

    from sentinel.anomaly.status import format_status, read_status
    from sentinel.config import ConfigError, load_effective_config

    try:
        cfg = load_effective_config(args.config)
    except ConfigError as exc:
        print(f"sentinel model status: {exc}", file=sys.stderr)
        return EXIT_FAIL
    st = read_status(args.state_dir or cfg.state_dir, cfg.learn_period_s)
    print(json.dumps(st.to_dict(), indent=2) if args.json else format_status(st))
    return EXIT_FAIL if st.problems else EXIT_OK


def _add_config_parsers(sub: Any) -> None:
    config = sub.add_parser(
        "config", help="check the agent's configuration", description="Work with the configuration file."
    )
    csub = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    check = csub.add_parser(
        "check",
        help="validate the configuration as the agent would load it, with located errors",
        description="Load the configuration file and its drop-ins exactly as `sentinel run` would, then "
        "check what it names: the rules (and rules_enable/rules_disable), the model, the outputs, the state "
        "directory, the redaction patterns. Every problem is reported in one run, each FILE:LINE:COL "
        "located, then the counts. Exit 0 when valid (warnings allowed), 1 on errors, 2 when the named file "
        "does not exist.",
    )
    check.add_argument(
        "--config", metavar="FILE",
        help="the file to check (default $SENTINEL_CONFIG or /etc/sentinel/sentinel.yaml, with its drop-ins)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="machine-readable report")


def cmd_config(args: argparse.Namespace) -> int:
    from sentinel.config_check import run_check

    return run_check(args.config, args.json, sys.stdout, sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
