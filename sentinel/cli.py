"""Command line: argument parsing and subcommands only; the work lives in the modules they call.

Exit codes: 0 success, 1 the agent could not do its work (probes failed, unreadable capture...), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sentinel import __version__
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from sentinel import log

    log.configure(args.log_level)
    handler = {
        "run": cmd_run,
        "events": cmd_events,
        "record": cmd_record,
        "replay": cmd_replay,
        "doctor": cmd_doctor,
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
    from sentinel.sensor.loader import SensorConfig

    cfg = SensorConfig(
        wakeup_events=max(1, args.wakeup_events),
        open_dedup_s=max(0.0, args.open_dedup),
        loader_opens=args.loader_opens,
        scheduling=getattr(args, "scheduling", "batch"),
        perf_reader=getattr(args, "perf_reader", "auto"),
    )
    if getattr(args, "poll_ms", None):
        cfg.poll_timeout_ms = args.poll_ms
    if args.pages:
        if args.pages & (args.pages - 1):
            raise SystemExit(f"sentinel: --pages must be a power of two, not {args.pages}")
        scale = args.pages / cfg.pages["open"]
        cfg.pages = {k: max(1, int(v * scale)) for k, v in cfg.pages.items()}
    return cfg


def _live_setup(
    args: argparse.Namespace, metadata: tuple[bool, list[str] | None] | None = None, **callbacks: Any
) -> tuple[Any, Any, Any]:
    """Host facts, a process table reading /proc and the host's cgroups (reporting each read to
    ``callbacks``; ``on_container`` gets each container answer, ``on_container_meta`` each change of their
    runtime metadata) and the sensor. ``metadata``: whether to ask the runtimes and which sockets (None: the
    flags ``--no-container-metadata`` and ``--container-endpoint``; ``sentinel run``: its configuration)."""
    from sentinel.containers.identity import ContainerIdentity
    from sentinel.host import local_host
    from sentinel.process.facts import LiveFacts
    from sentinel.process.table import ProcessTable
    from sentinel.sensor.loader import Sensor

    host = local_host()
    if metadata is None:
        off = getattr(args, "no_container_metadata", False)
        metadata = (not off, getattr(args, "container_endpoint", None))
    view, on_meta = None, callbacks.pop("on_container_meta", None)
    if metadata[0]:
        view = _metadata_view(metadata[1], on_meta)
    containers = ContainerIdentity.for_host(on_answer=callbacks.pop("on_container", None), metadata=view)
    table = ProcessTable(
        boot_id=host.boot_id,
        facts=LiveFacts(**callbacks),
        containers=containers,
        agent_mnt_ns=host.agent_mnt_ns,
        host_pid_ns=host.host_pid_ns,
    )
    return host, table, Sensor(_sensor_config(args))


def _metadata_view(endpoints: list[str] | None, on_change: Any) -> Any:
    """One MetadataService for this agent (its worker thread starts now), seen through the pipeline's view."""
    from sentinel.containers.meta_view import MetadataView
    from sentinel.containers.metadata_service import MetadataService

    return MetadataView(MetadataService(endpoints), on_change=on_change)


def _poll_metadata(table: Any) -> Any:
    """The once-per-poll step that takes the runtimes' answers (None: no metadata asked for)."""
    view = getattr(table.containers, "metadata", None)
    return view.poll if view is not None else None


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
        "struct_layouts": "from the running kernel's BTF only, never from headers (see kernel_offsets)",
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
    on_tick: Any = None,
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
        run_live(
            sensor,
            table,
            handle,
            log,
            args.duration,
            flush,
            on_loss=on_loss,
            on_ready=on_ready,
            on_tick=on_tick,
        )
    except (SensorError, EnvironmentProblem) as exc:
        log.error("sentinel.sensor_failed", problem=str(exc), fix="run `sentinel doctor` for details")
        return EXIT_FAIL
    finally:
        from sentinel import tasks

        close = getattr(table.containers, "close", None)  # the metadata worker, the resolver's handles
        if close is not None:
            tasks.guard("shutdown", close, log=log)
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
    out = claim_stdout()  # before bcc loads: its native warnings go to stderr, never into a JSON line
    host, table, sensor = _live_setup(args)
    stream = EventStream(table, EcsRenderer(host), out, types, keep)
    return _run_sensor(args, stream.handle, out.flush, host, table, sensor, on_tick=_poll_metadata(table))


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
        return _run_sensor(
            args,
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


def _detection_settings(args: argparse.Namespace, command: str) -> Any:
    """The configuration with the command-line flags over it; None after printing a located error."""
    from sentinel.agent import SettingsError, effective_settings

    try:
        return effective_settings(args, live=command == "run")
    except SettingsError as exc:
        print(f"sentinel {command}: {exc}", file=sys.stderr)
        return None


def _load_rules_or_report(cfg: Any, command: str) -> Any:
    """Load and validate the rules with their rules_enable/rules_disable tuning; None after printing every
    located error (nothing else is touched)."""
    from sentinel.agent import load_tuned_rules
    from sentinel.detect import refusals

    outcome = load_tuned_rules(cfg)
    if outcome.ruleset is None:
        print(f"sentinel {command}: invalid rules, nothing started:", file=sys.stderr)
        for text in outcome.errors:
            print(text, file=sys.stderr)
        return None
    refused = refusals(outcome)
    if refused and not outcome.ruleset.enabled_rules:  # the others load; but here none would run
        print(f"sentinel {command}: no rule can run (every enabled rule is refused), nothing started:",
              file=sys.stderr)  # fmt: skip
        for text in refused:
            print(text, file=sys.stderr)
        return None
    for text in refused:
        print(f"sentinel {command}: {text}", file=sys.stderr)
    return outcome


def _rules_loaded_fields(outcome: Any, cfg: Any) -> dict[str, Any]:
    rules = outcome.ruleset.rules
    return {
        "rules": len(rules),
        "enabled": sum(1 for r in rules if r.enabled),
        "refused": [r.name for r in getattr(outcome.ruleset, "refused", ())],
        "never_fire": [r.name for r in getattr(outcome.ruleset, "never_fire", ())],
        "sha256": outcome.ruleset.sha256,
        "files": outcome.files,
        "warnings": outcome.warnings[:20],
        "warning_count": len(outcome.warnings),
        "format": cfg.format,
        "outputs": [sc.label() for sc in cfg.sink_configs()],
        "aggregation_window_s": cfg.aggregation_window_s,
    }


def _open_outputs(cfg: Any, command: str, stdout: Any = None) -> Any:
    """Every configured output (``output`` specs and ``sinks``, formats resolved); None after printing why
    one cannot open. Network sinks spool under the state directory; ``stdout`` replaces the process's."""
    from sentinel.sinks import OutputSpecError, open_sinks

    try:
        return open_sinks(cfg.sink_configs(), state_dir=cfg.state_dir, stdout=stdout)
    except OutputSpecError as exc:
        print(f"sentinel {command}: {exc}", file=sys.stderr)
    except OSError as exc:
        print(
            f"sentinel {command}: cannot open output {exc.filename or ''}: {exc.strerror or exc}",
            file=sys.stderr,
        )
    return None


def _log_config(log: Any, cfg: Any) -> None:
    """Which files configured this run, and what in them does nothing (warnings do not stop the agent)."""
    log.info("sentinel.config_loaded", config=cfg.source, files=cfg.files, reload_watch=cfg.reload_watch)
    for w in cfg.warnings:
        log.warning("sentinel.config_warning", warning=str(w))


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import time

    from sentinel import log as logmod
    from sentinel import tasks
    from sentinel.agent import Reloader, anomaly_settings
    from sentinel.detect import DetectionStream
    from sentinel.sensor.loader import boottime_ns

    failures = tasks.reset()  # this agent's task failures: counted, logged, raised as internal alerts
    cfg = _detection_settings(args, "run")
    if cfg is None:
        return EXIT_FAIL
    outcome = _load_rules_or_report(cfg, "run")
    if outcome is None:
        return EXIT_FAIL
    log = logmod.get_logger()
    _log_config(log, cfg)
    # JSON on stdout: claimed before bcc loads, so its native warnings go to stderr, never into a JSON line
    to_stdout = any(sc.kind == "stdout" for sc in cfg.sink_configs())
    sink = _open_outputs(cfg, "run", claim_stdout() if to_stdout else None)
    if sink is None:
        return EXIT_FAIL
    fmt = cfg.format if sink.format == "mixed" else sink.format
    args.wakeup_events, args.pages, args.open_dedup = cfg.wakeup_events, cfg.pages, cfg.open_dedup_s
    args.loader_opens = cfg.loader_opens
    args.poll_ms = max(1, min(50, int(cfg.ml_batch_ms)))  # the engine scores queued rows at every poll
    host, table, sensor = _live_setup(args, metadata=(cfg.container_metadata, cfg.container_endpoints))
    poll_metadata = _poll_metadata(table)
    from sentinel.anomaly.live import open_engine

    engine, notices = open_engine(anomaly_settings(cfg, live=True), log, boottime_ns())
    stream = DetectionStream(
        table, outcome.ruleset, host, sink, fmt, cfg.aggregation_window_s, anomaly=engine,
        redactor=cfg.redactor(), rate_per_min=cfg.rule_rate_limit,
    )  # fmt: skip
    stream.task_failures = failures
    log.info("sentinel.rules_loaded", **_rules_loaded_fields(outcome, cfg))
    # after logrotate; a signal handler's exception would surface wherever the loop happens to be
    previous_usr1 = signal.signal(signal.SIGUSR1, lambda _s, _f: tasks.guard("reopen", sink.reopen))
    ops = _start_operations(cfg, stream, sensor, table, host)
    if ops is None:
        stream.close()
        table.containers.close()
        return EXIT_FAIL
    for alert in notices:
        stream.raise_internal(alert)
    reloader = Reloader(args, cfg, stream, engine, log, time.monotonic, on_swapped=ops.settings_changed)

    hup: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, _frame: hup.append(signum))
    guard = tasks.guard

    def on_tick() -> None:
        """Each step is a task of its own: one failing (any exception) is counted and reported as an
        ``Agent task failed`` internal alert, and the others, and the agent, go on."""
        now = boottime_ns()
        if poll_metadata is not None:  # runtimes' answers: the next events' rules and documents see them
            guard("containers", poll_metadata, log=log)
        if hup:
            hup.clear()
            guard("reload", reloader.reload, "SIGHUP", now, log=log)
        elif guard("reload", reloader.files_changed, log=log):
            guard("reload", reloader.reload, "files changed", now, log=log)
        # Close aggregation windows on an idle host too; a second of margin for events still in the buffers.
        guard("aggregation", stream.advance, now - 1_000_000_000, log=log)
        if engine is not None:
            guard("anomaly", engine.tick, log, log=log)
        guard("metrics", ops.tick, log=log)
        guard("alerts", stream.report_task_failures, now, log=log)

    try:
        code = _run_sensor(
            args,
            stream.handle,
            stream.flush,
            host,
            table,
            sensor,
            on_loss=ops.on_loss,
            on_ready=ops.on_ready,
            on_tick=on_tick,
        )
    finally:
        signal.signal(signal.SIGHUP, previous)
        signal.signal(signal.SIGUSR1, previous_usr1)
        stream.close()  # never raises for a failed step (recorded), so SIGTERM still exits 0
        guard("shutdown", ops.close, log=log)
        guard("shutdown", lambda: log.info("sentinel.detection_stopped", **stream.stats()), log=log)
    return code


class _Operations:
    """Metrics and health for `sentinel run`: fed from the loop, served on --metrics-address (if given)."""

    def __init__(
        self, stream: Any, sensor: Any, table: Any, host: Any, address: str | None, backlog_threshold: int
    ) -> None:
        import time

        from sentinel.health import Health
        from sentinel.metrics import AgentMetrics, default_build_info

        self.stream, self.sensor, self.table, self.host = stream, sensor, table, host
        self.time = time
        self.metrics = AgentMetrics(build=default_build_info(_mode_fields()["headers_mode"]))
        self.health = Health()
        self.server: Any = None
        self.address = address
        self.next_feed = 0.0
        self.backlog_threshold = backlog_threshold
        self.backlogged: set[str] = set()
        self.dropped_seen: dict[str, int] = {}
        self.ruleset_changed()
        boot_s = host.boot_time_ns / 1e9
        observe = self.metrics.observe_latency
        wall = time.time

        def on_alert(alert: Any) -> None:
            if not alert.aggregated and alert.ctx is not None:
                observe(wall() - boot_s - alert.ts_ns / 1e9)

        stream.on_alert = on_alert

    def start(self) -> None:
        from sentinel.metrics import serve

        if self.address:
            self.server = serve(self.metrics, self.address, self.health)
            from sentinel import log as logmod

            logmod.get_logger().info(
                "sentinel.metrics_listening", url=self.server.url, metrics=f"{self.server.url}/metrics",
                healthz=f"{self.server.url}/healthz",
            )  # fmt: skip

    def settings_changed(self, cfg: Any) -> None:
        """After a reload: the new ruleset's figures and internal-alert threshold."""
        self.backlog_threshold = cfg.sink_backlog_threshold
        self.ruleset_changed()

    def ruleset_changed(self) -> None:
        rs = self.stream.ruleset
        self.metrics.set_ruleset(rs.sha256, len(rs.rules), sum(1 for r in rs.rules if r.enabled))

    def on_ready(self) -> None:
        self.health.set_probes(True)
        from sentinel.alerts import internal

        for ev in getattr(self.sensor, "previous_tamper", ()):
            self.stream.raise_internal(internal.tamper(ev, previous=True))

    def on_loss(self, ts_ns: int, buffer: str, lost: int) -> None:
        self.health.record_loss(lost)
        self.stream.report_loss(ts_ns, buffer, lost)

    def tick(self) -> None:
        """Every poll: the loop is alive; once a second: fold the counters into the metrics."""
        self.health.loop_tick()
        now = self.time.monotonic()
        if now < self.next_feed:
            return
        from sentinel.metrics import sink_stats
        from sentinel.pipeline import live_stats

        self.next_feed = now + 1.0
        stats = self.stream.stats()
        sinks = sink_stats(self.stream.writer.sink)
        self.metrics.update_from_stats(live_stats(self.sensor, self.table, self.stream.events), stats, sinks)
        self.health.set_sinks_from_stats(sinks)
        self._sink_alerts(sinks)
        anomaly = stats.get("anomaly", {})
        self.health.set_model(anomaly.get("phase", "off"))
        self.metrics.set_model(
            version=anomaly.get("model_version") or None, source=anomaly.get("model") or None,
            phase=anomaly.get("phase"),
        )  # fmt: skip
        if anomaly.get("learn_period_s"):
            self.metrics.set_learning_progress(min(1.0, anomaly["learned_s"] / anomaly["learn_period_s"]))

    def _sink_alerts(self, sinks: dict[str, dict[str, Any]]) -> None:
        """Internal alerts: a sink whose backlog passed the threshold (once per episode), a spool dropping."""
        from sentinel.alerts import internal
        from sentinel.sensor.loader import boottime_ns

        now = boottime_ns()
        for name, st in sinks.items():
            backlog = int(st.get("backlog", st.get("backlog_alerts", 0)) or 0)
            over = backlog > self.backlog_threshold
            if over and name not in self.backlogged:
                status = str(st.get("status", "failing"))
                alert = internal.sink_backlog(now, name, backlog, self.backlog_threshold, status)
                self.stream.raise_internal(alert)
            if over:
                self.backlogged.add(name)
            elif backlog < self.backlog_threshold // 2:
                self.backlogged.discard(name)  # recovered: the next episode alerts again
            dropped = int(st.get("spool_dropped", 0) or 0)
            delta = dropped - self.dropped_seen.get(name, 0)
            if delta > 0:
                self.stream.raise_internal(internal.spool_dropping(now, name, delta))
            self.dropped_seen[name] = dropped

    def close(self) -> None:
        self.health.set_probes(False, "stopping")
        if self.server is not None:
            self.server.close()


def _start_operations(cfg: Any, stream: Any, sensor: Any, table: Any, host: Any) -> Any:
    """Metrics and health; None after printing why the endpoint cannot listen."""
    from sentinel.metrics import MetricsEndpointError

    ops = _Operations(stream, sensor, table, host, cfg.metrics_address, cfg.sink_backlog_threshold)
    try:
        ops.start()
    except (ValueError, MetricsEndpointError) as exc:
        print(f"sentinel run: metrics address {cfg.metrics_address!r}: {exc}", file=sys.stderr)
        return None
    return ops


def _replay_detect(args: argparse.Namespace) -> int:
    """`sentinel replay FILE` without --events: the live agent's detection, on the recorded events."""
    from sentinel import log as logmod
    from sentinel.capture import CaptureError
    from sentinel.detect import DetectionStream
    from sentinel.recording import replay_events

    cfg = _detection_settings(args, "replay")
    if cfg is None:
        return EXIT_FAIL
    outcome = _load_rules_or_report(cfg, "replay")
    if outcome is None:
        return EXIT_FAIL
    sink = _open_outputs(cfg, "replay")
    if sink is None:
        return EXIT_FAIL
    fmt = cfg.format if sink.format == "mixed" else sink.format
    log = logmod.get_logger()
    log.info("sentinel.rules_loaded", **_rules_loaded_fields(outcome, cfg))
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
            redactor=cfg.redactor(), rate_per_min=cfg.rule_rate_limit,
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
    val.add_argument("paths", nargs="+", metavar="PATH", help="rules file or directory, in load order")
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


def cmd_rules_validate(args: argparse.Namespace) -> int:
    import orjson

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

    if not args.paths:
        from sentinel.detect import find_rules_dir

        shipped = find_rules_dir()
        if shipped is None:
            print("sentinel rules list: no PATH given and the shipped rules were not found", file=sys.stderr)
            return EXIT_USAGE
        args.paths = [str(shipped)]
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
    info.add_argument("--model", required=True, metavar="DIR", help="model directory")
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
