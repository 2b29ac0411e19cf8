#!/usr/bin/env python3
"""Sigma corpus in sentinel: what loads, what fires on our own fixtures, and what it costs per event.

1. Counts per logsource of the SigmaHQ Linux corpus (``../shared/sigma/``, test data beside the repository):
   rules, loaded, refused (with the commonest reasons), skipped (unsupported logsource).
2. Firing on sentinel's own fixtures (``rules/*.fixtures.yaml``, events as ``sentinel events`` prints them):
   how many distinct Sigma rules fire, and on how many attack fixtures (``expect`` not empty) and quiet
   fixtures (``expect: []``) at least one does.
3. Matching cost per event (``RuleSet.match``), on the same realistic event mix as ``bench_rules.py``, side by
   side in one run: the shipped rules alone, the Sigma corpus alone, and both together (what ``sentinel run
   --rules rules/ <sigma dir>`` evaluates).

    .venv/bin/python benchmarks/bench_sigma.py [--sigma DIR] [--events N] [--repeat N]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_rules import event_mix, per_event_ns  # noqa: E402

from sentinel.rules import RuleSet, load_rules  # noqa: E402
from sentinel.rules.fixtures import FixtureError, from_ecs, read_fixtures  # noqa: E402

SIGMA = REPO.parent / "shared" / "sigma"


def logsource_of(rule: object) -> str:
    ls = getattr(rule, "meta", {}).get("logsource") or {}
    return "/".join(str(ls.get(k)) for k in ("product", "category", "service") if ls.get(k)) or "?"


def corpus_counts(sigma: Path) -> RuleSet | None:
    res = load_rules([sigma])
    rs = res.ruleset
    if rs is None:
        print(f"the corpus did not load: {len(res.errors)} error(s), first: {res.errors[:1]}")
        return None
    per: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    reasons: collections.Counter[str] = collections.Counter()
    for r in rs.rules:
        if r.meta.get("format") != "sigma":
            continue
        c = per[logsource_of(r)]
        c["rules"] += 1
        if (r.skipped or "").startswith("refused"):
            c["refused"] += 1
            reasons[(r.skipped or "").split(":", 2)[-1].strip()[:90]] += 1
        elif r.skipped is not None:
            c["skipped"] += 1
        elif r.enabled:
            c["loaded"] += 1
    unsupported = collections.Counter(d.code for d in res.diagnostics if "logsource" in d.code)
    print(f"Sigma corpus {sigma}: {sum(c['rules'] for c in per.values())} rules as sentinel rules")
    print(f"  {'logsource':40} {'rules':>6} {'loaded':>7} {'refused':>8} {'skipped':>8}")
    for name, c in sorted(per.items(), key=lambda kv: -kv[1]["rules"]):
        print(f"  {name:40} {c['rules']:6d} {c['loaded']:7d} {c['refused']:8d} {c['skipped']:8d}")
    for code, n in unsupported.items():
        print(f"  {code}: {n} document(s)")
    if reasons:
        print("  commonest refusals:")
        for why, n in reasons.most_common(6):
            print(f"    {n:3d}  {why}")
    return rs


def fixture_firing(rs: RuleSet) -> None:
    fired_rules: set[str] = set()
    attack = quiet = attack_hit = quiet_hit = 0
    for fx_file in sorted((REPO / "rules").glob("*.fixtures.yaml")):
        fixtures, _ = read_fixtures(str(fx_file))
        for fx in fixtures:
            try:
                ctx = from_ecs(fx.doc)
            except FixtureError:
                continue
            hits = [r.name for r in rs.match(ctx) if r.meta.get("format") == "sigma"]
            fired_rules.update(hits)
            if fx.expect:
                attack += 1
                attack_hit += bool(hits)
            else:
                quiet += 1
                quiet_hit += bool(hits)
    print(
        f"On sentinel's fixtures: {len(fired_rules)} distinct Sigma rules fire; {attack_hit} of {attack} "
        f"attack fixtures and {quiet_hit} of {quiet} quiet ones trip at least one"
    )


def matching_cost(sigma: Path, n_events: int, repeat: int) -> None:
    ctxs = event_mix(n_events)
    sets = {
        "shipped rules (rules/)": load_rules([REPO / "rules"]).ruleset,
        "Sigma corpus": load_rules([sigma]).ruleset,
        "shipped + Sigma": load_rules([REPO / "rules", sigma]).ruleset,
    }
    print(f"Matching cost, RuleSet.match on {n_events} mixed events (median of {repeat} rounds):")
    for name, rs in sets.items():
        if rs is None:
            print(f"  {name:24} did not load")
            continue
        ns, hits = per_event_ns(rs, ctxs, repeat)
        print(f"  {name:24} {len(rs.enabled_rules):5d} rules  {ns / 1000:7.2f} µs/event  {hits} matches")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sigma", type=Path, default=SIGMA, help="Sigma rules directory (default: %(default)s)")
    ap.add_argument("--events", type=int, default=20_000, help="events in the matching mix")
    ap.add_argument("--repeat", type=int, default=5, help="timing rounds (the median is kept)")
    args = ap.parse_args()
    if not args.sigma.is_dir():
        print(f"{args.sigma} is missing (the corpus sits in shared/ beside the repository)", file=sys.stderr)
        return 2
    rs = corpus_counts(args.sigma)
    if rs is None:
        return 1
    fixture_firing(rs)
    matching_cost(args.sigma, args.events, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
