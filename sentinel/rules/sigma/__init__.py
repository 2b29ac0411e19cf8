"""Sigma rules, evaluated natively: pySigma parses a rule, its condition tree (``1 of``/``all of``/``them``
expanded) becomes sentinel's typed tree, and the rule joins the same RuleSet as the Falco-style ones.

One module per concept: :mod:`.detect` (is a YAML document Sigma?), :mod:`.locate` (positions in the file,
which pySigma does not keep), :mod:`.mapping` (logsources and fields), :mod:`.translate` (detection → typed
tree), :mod:`.correlation` (correlation documents → rules the Correlator counts, resolved once every file is
read) and :mod:`.frontend` (documents → rules and diagnostics).
"""

from sentinel.rules.sigma.detect import sigma_kind

__all__ = ["sigma_kind"]
