"""The floor of a Python agent on this design: `sentinel run`'s probes, buffers and sensor settings, with a
consumer that does only the first steps of the hot path and nothing after them.

    python benchmarks/_floor.py read      # read the perf rings, split the records; no decoding
    python benchmarks/_floor.py decode    # + decode every record into an Event (what the agent receives)
    python benchmarks/_floor.py table     # + keep the process table (ancestry, /proc for strangers)

No rules, no model, no output. What each level costs under a workload is the part of the agent's cost that
no change to rules, model or rendering can remove: bench_cost.py prints it beside `sentinel run`. Writes
JSON diagnostics to stderr as the agent does (``sentinel.ready``, and ``sentinel.stopped`` with the same
``received``/``lost`` counters), so the benchmarks drive it like the agent.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.config import Config
from sentinel.live import live_setup, sensor_config
from sentinel.pipeline import live_stats

LEVELS = ("read", "decode", "table")


def say(event: str, **fields: Any) -> None:
    sys.stderr.buffer.write(orjson.dumps({"event": event, **fields}) + b"\n")
    sys.stderr.flush()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("level", choices=LEVELS)
    level = parser.parse_args().level
    cfg = Config()  # sentinel run's defaults, as with no configuration file
    sensor_cfg = sensor_config(
        cfg.wakeup_events, cfg.open_dedup_s, cfg.loader_opens, cfg.pages, "batch", "auto",
        poll_ms=max(1, min(50, int(cfg.ml_batch_ms))),
    )  # fmt: skip
    _host, table, sensor = live_setup(sensor_cfg, (False, None))
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stop.append(signum))
    sensor.start()
    if level == "table":
        table.bootstrap()
    say("sentinel.ready", level=level, tracepoints=sensor.attached)
    handled = 0
    reader = sensor.reader
    if level == "read" and reader is None:
        say("floor.failed", problem="the read level needs the direct perf reader")
        return 1
    while not stop:
        if level == "read":  # the rings read and split into records, the records thrown away
            reader.poll(sensor_cfg.poll_timeout_ms)
            sensor._read_rings(reader)  # (the floor measures exactly this step)
            handled += len(sensor._raw)
            sensor._raw.clear()
            continue
        batch = sensor.poll()
        handled += len(batch)
        if level == "table":
            apply = table.apply
            for ev in batch:
                apply(ev)
        sensor.take_losses(False)
    sensor.take_losses(True)
    stats = live_stats(sensor, table, handled)
    if level == "read":
        stats["received"] = {"all": handled}
    say("sentinel.stopped", signal=stop[0] if stop else None, **stats)
    sensor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
