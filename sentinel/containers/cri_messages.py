"""The few CRI (``runtime.v1``) protobuf messages sentinel reads, built at run time with the protobuf library.

The Kubernetes Container Runtime Interface is defined by ``pkg/apis/runtime/v1/api.proto`` in
k8s.io/cri-api (Copyright The Kubernetes Authors, Apache License 2.0). Only the messages of three calls are
described here, and of those only the fields sentinel reads, with the field numbers of that file: protobuf
skips fields a reader does not describe, so the runtime's full messages parse into these. Enums are read as
``int32`` (the same varint on the wire): ``NamespaceMode`` NODE is 2.

Built into a private descriptor pool (no clash with another ``runtime.v1`` a process may load) the first
time a CRI client needs them (protobuf is imported then: ``pip install 'sentinel[cri]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["NAMESPACE_NODE", "SERVICE", "CriMessages", "messages"]

SERVICE = "runtime.v1.RuntimeService"
NAMESPACE_NODE = 2  # NamespaceMode: POD 0, CONTAINER 1, NODE 2 (the host's), TARGET 3
_PACKAGE = "runtime.v1"
# FieldDescriptorProto.Type values (descriptor.proto): fixed by protobuf, written here so that this module
# imports without protobuf.
_INT64, _INT32, _BOOL, _STRING, _MESSAGE, _UINT32 = 3, 5, 8, 9, 11, 13
_OPTIONAL, _REPEATED_LABEL = 1, 3
_MAP = "map"  # a map<string, string> field
_REPEATED = "repeated:"  # prefix: a repeated field of that message

# message -> (field, number, type); a type is a scalar, _MAP, or a message name (optionally _REPEATED).
_SCHEMA: dict[str, list[tuple[str, int, int | str]]] = {
    "ContainerMetadata": [("name", 1, _STRING), ("attempt", 2, _UINT32)],
    "ImageSpec": [
        ("image", 1, _STRING),
        ("annotations", 2, _MAP),
        ("user_specified_image", 18, _STRING),
        ("image_ref", 20, _STRING),
    ],
    "ContainerStatus": [
        ("id", 1, _STRING),
        ("metadata", 2, "ContainerMetadata"),
        ("state", 3, _INT32),
        ("created_at", 4, _INT64),
        ("image", 8, "ImageSpec"),
        ("image_ref", 9, _STRING),
        ("labels", 12, _MAP),
        ("annotations", 13, _MAP),
        ("mounts", 14, _REPEATED + "Mount"),
        ("image_id", 17, _STRING),
    ],
    # MountPropagation is an enum: PRIVATE 0, HOST_TO_CONTAINER 1, BIDIRECTIONAL 2.
    "Mount": [
        ("container_path", 1, _STRING),
        ("host_path", 2, _STRING),
        ("readonly", 3, _BOOL),
        ("propagation", 5, _INT32),
    ],
    "ContainerStatusRequest": [("container_id", 1, _STRING), ("verbose", 2, _BOOL)],
    "ContainerStatusResponse": [("status", 1, "ContainerStatus"), ("info", 2, _MAP)],
    "PodSandboxMetadata": [
        ("name", 1, _STRING),
        ("uid", 2, _STRING),
        ("namespace", 3, _STRING),
        ("attempt", 4, _UINT32),
    ],
    "NamespaceOption": [("network", 1, _INT32), ("pid", 2, _INT32), ("ipc", 3, _INT32)],
    "Namespace": [("options", 2, "NamespaceOption")],
    "LinuxPodSandboxStatus": [("namespaces", 1, "Namespace")],
    "PodSandboxStatus": [
        ("id", 1, _STRING),
        ("metadata", 2, "PodSandboxMetadata"),
        ("state", 3, _INT32),
        ("created_at", 4, _INT64),
        ("linux", 6, "LinuxPodSandboxStatus"),
        ("labels", 7, _MAP),
        ("annotations", 8, _MAP),
        ("runtime_handler", 9, _STRING),
    ],
    "PodSandboxStatusRequest": [("pod_sandbox_id", 1, _STRING), ("verbose", 2, _BOOL)],
    "PodSandboxStatusResponse": [("status", 1, "PodSandboxStatus"), ("info", 2, _MAP)],
    "ContainerFilter": [("id", 1, _STRING), ("pod_sandbox_id", 3, _STRING)],
    "ListContainersRequest": [("filter", 1, "ContainerFilter")],
    "Container": [
        ("id", 1, _STRING),
        ("pod_sandbox_id", 2, _STRING),
        ("metadata", 3, "ContainerMetadata"),
        ("image", 4, "ImageSpec"),
        ("image_ref", 5, _STRING),
        ("state", 6, _INT32),
        ("labels", 8, _MAP),
        ("image_id", 10, _STRING),
    ],
    "ListContainersResponse": [("containers", 1, _REPEATED + "Container")],
}


@dataclass(frozen=True, slots=True)
class CriMessages:
    """The message classes, by their CRI names."""

    ContainerStatusRequest: Any
    ContainerStatusResponse: Any
    PodSandboxStatusRequest: Any
    PodSandboxStatusResponse: Any
    ListContainersRequest: Any
    ListContainersResponse: Any
    ContainerStatus: Any
    PodSandboxStatus: Any
    Container: Any


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _file() -> Any:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(
        name="sentinel/containers/cri_subset.proto", package=_PACKAGE, syntax="proto3"
    )
    optional, repeated = _OPTIONAL, _REPEATED_LABEL
    for name, fields in _SCHEMA.items():
        msg = proto.message_type.add(name=name)
        for field_name, number, kind in fields:
            field = msg.field.add(name=field_name, number=number, json_name=field_name, label=optional)
            if kind == _MAP:  # map<string, string>: a repeated nested entry type, as protoc writes it
                entry = msg.nested_type.add(name=_camel(field_name) + "Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_STRING, label=optional)
                entry.field.add(name="value", number=2, type=_STRING, label=optional)
                field.label = repeated
                field.type = _MESSAGE
                field.type_name = f".{_PACKAGE}.{name}.{entry.name}"
            elif isinstance(kind, str):
                if kind.startswith(_REPEATED):
                    field.label = repeated
                    kind = kind[len(_REPEATED) :]
                field.type = _MESSAGE
                field.type_name = f".{_PACKAGE}.{kind}"
            else:
                field.type = kind
    return proto


@cache
def messages() -> CriMessages:
    """The classes, built once."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))

    return CriMessages(**{name: cls(name) for name in CriMessages.__slots__})
