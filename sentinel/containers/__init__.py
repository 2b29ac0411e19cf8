"""Container identity: which container (runtime, id) a process is in, from its cgroup.

- :mod:`.cgroup_path`: one cgroup path -> :class:`ContainerRef` (pure; every runtime's layout).
- :mod:`.procfs`: ``/proc/PID/cgroup`` text -> the container across v1, v2 and hybrid hierarchies.
- :mod:`.cgroup_ids`: a BPF cgroup id -> its v2 path and container (file handle, else a bounded walk).
- :mod:`.metadata_service`: name, image, labels, pod of a container from its runtime's API, looked up off the
  pipeline thread (:mod:`.docker_api` for docker and podman, :mod:`.cri` for containerd and CRI-O).

None means the host everywhere: Falco writes ``host`` for its container fields (:func:`falco_fields`).
"""

from sentinel.containers.cgroup_ids import (
    Cgroup2Mount,
    CgroupInfo,
    CgroupResolver,
    ResolverStats,
    find_cgroup2_mount,
)
from sentinel.containers.cgroup_path import (
    HOST,
    ContainerRef,
    container_from_cgroup,
    containers_in_cgroup,
    falco_fields,
    k8s_pod_uid,
)
from sentinel.containers.image_ref import ImageRef, parse_image_ref
from sentinel.containers.metadata import ContainerMeta, K8sPod
from sentinel.containers.metadata_service import Answer, MetadataService
from sentinel.containers.procfs import container_from_proc_cgroup, parse_proc_cgroup, read_proc_cgroup

__all__ = [
    "HOST",
    "Answer",
    "Cgroup2Mount",
    "CgroupInfo",
    "CgroupResolver",
    "ContainerMeta",
    "ContainerRef",
    "ImageRef",
    "K8sPod",
    "MetadataService",
    "ResolverStats",
    "container_from_cgroup",
    "container_from_proc_cgroup",
    "containers_in_cgroup",
    "falco_fields",
    "find_cgroup2_mount",
    "k8s_pod_uid",
    "parse_image_ref",
    "parse_proc_cgroup",
    "read_proc_cgroup",
]
