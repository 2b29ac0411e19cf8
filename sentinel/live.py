"""The live side shared by `sentinel events`, `record` and `run`: host facts, the process table reading
/proc, the sensor, and the loop that runs them until a signal or the duration.

Everything here takes explicit settings (a :class:`~sentinel.sensor.loader.SensorConfig`, the runtimes to
ask), never the command line: the CLI and the agent build those settings, each from its own sources.
"""

from __future__ import annotations

from typing import Any

from sentinel import __version__

EXIT_OK = 0
EXIT_FAIL = 1


def sensor_config(
    wakeup_events: int,
    open_dedup_s: float,
    loader_opens: str,
    pages: int | None = None,
    scheduling: str = "batch",
    perf_reader: str = "auto",
    poll_ms: int | None = None,
) -> Any:
    """The sensor's settings; ``pages`` (a power of two, checked by the caller) scales every buffer."""
    from sentinel.sensor.loader import SensorConfig

    cfg = SensorConfig(
        wakeup_events=max(1, wakeup_events),
        open_dedup_s=max(0.0, open_dedup_s),
        loader_opens=loader_opens,
        scheduling=scheduling,
        perf_reader=perf_reader,
    )
    if poll_ms:
        cfg.poll_timeout_ms = poll_ms
    if pages:
        scale = pages / cfg.pages["open"]
        cfg.pages = {k: max(1, int(v * scale)) for k, v in cfg.pages.items()}
    return cfg


def live_setup(
    sensor_cfg: Any, metadata: tuple[bool, list[str] | None] = (True, None), **callbacks: Any
) -> tuple[Any, Any, Any]:
    """Host facts, a process table reading /proc and the host's cgroups (reporting each read to
    ``callbacks``; ``on_container`` gets each container answer, ``on_container_meta`` each change of their
    runtime metadata) and the sensor. ``metadata``: whether to ask the runtimes, and which sockets (None:
    the usual ones)."""
    from sentinel.containers.identity import ContainerIdentity
    from sentinel.host import local_host
    from sentinel.process.facts import LiveFacts
    from sentinel.process.table import ProcessTable
    from sentinel.sensor.loader import Sensor

    host = local_host()
    view, on_meta = None, callbacks.pop("on_container_meta", None)
    if metadata[0]:
        view = metadata_view(metadata[1], on_meta)
    containers = ContainerIdentity.for_host(on_answer=callbacks.pop("on_container", None), metadata=view)
    table = ProcessTable(
        boot_id=host.boot_id,
        facts=LiveFacts(**callbacks),
        containers=containers,
        agent_mnt_ns=host.agent_mnt_ns,
        host_pid_ns=host.host_pid_ns,
    )
    return host, table, Sensor(sensor_cfg)
def metadata_view(endpoints: list[str] | None, on_change: Any) -> Any:
    """One MetadataService for this agent (its worker thread starts now), seen through the pipeline's view."""
    from sentinel.containers.meta_view import MetadataView
    from sentinel.containers.metadata_service import MetadataService

    return MetadataView(MetadataService(endpoints), on_change=on_change)


def poll_metadata(table: Any) -> Any:
    """The once-per-poll step that takes the runtimes' answers (None: no metadata asked for)."""
    view = getattr(table.containers, "metadata", None)
    return view.poll if view is not None else None


def check_root(log: Any) -> bool:
    from sentinel.sensor.environment import has_bpf_privileges

    ok, why = has_bpf_privileges()
    if not ok:
        log.error("sentinel.privileges", problem=why, fix="run as root (or with CAP_BPF and CAP_PERFMON)")
    return ok


def mode_fields() -> dict[str, Any]:
    from sentinel.sensor.environment import headers_mode

    info = headers_mode()
    return {
        "headers_mode": info.mode,
        "headers": info.headers_version,
        "kernel": info.running,
        "struct_layouts": "from the running kernel's BTF only, never from headers (see kernel_offsets)",
    }


def run_sensor(
    duration: float | None,
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
    """Attach, run until a signal or ``duration``, drain; exit code 1 (logged with a fix) when the probes
    cannot run."""
    from sentinel.pipeline import run_live
    from sentinel.sensor.environment import EnvironmentProblem
    from sentinel.sensor.loader import SensorError

    log = logmod.get_logger()
    if not check_root(log):
        return EXIT_FAIL
    log.info("sentinel.starting", version=__version__, host=host.hostname, **mode_fields())
    try:
        run_live(
            sensor,
            table,
            handle,
            log,
            duration,
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

