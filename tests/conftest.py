"""Every test: the host's /etc/sentinel/sentinel.yaml (and drop-ins) stay out of the agent under test.

`sentinel run` reads the default configuration when no --config is given; a developer's or CI host's own
file must not change what the tests see. Subprocesses inherit the variable.
"""

import os

os.environ["SENTINEL_CONFIG"] = "/nonexistent/sentinel-tests/sentinel.yaml"
