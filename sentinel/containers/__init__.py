"""Container identity: which container (runtime, id) a process is in, from its cgroup.

- :mod:`.cgroup_path`: one cgroup path -> :class:`ContainerRef` (pure; every runtime's layout).

None means the host everywhere: Falco writes ``host`` for its container fields (:func:`falco_fields`).
"""

from sentinel.containers.cgroup_path import (
    HOST,
    ContainerRef,
    container_from_cgroup,
    containers_in_cgroup,
    falco_fields,
    k8s_pod_uid,
)

__all__ = [
    "HOST",
    "ContainerRef",
    "container_from_cgroup",
    "containers_in_cgroup",
    "falco_fields",
    "k8s_pod_uid",
]
