"""Sluice's built-in connectors. Each module declares its components; :func:`register` adds them
to a registry. It is loaded through the ``sluice.components`` entry point, exactly like a plugin.
"""

from __future__ import annotations

from runtime.plugins import Registry


def register(registry: Registry) -> None:
    """Register every built-in component type."""
    from connectors.dataset import DatasetSink, DatasetSource, NullSink
    from connectors.dtl import DtlTransform
    from connectors.embedded import EmbeddedSource
    from connectors.files import FileSource
    from connectors.http_endpoint import HttpEndpointSink, HttpEndpointSource
    from connectors.merge import MergeSource
    from connectors.python import PythonTransform
    from connectors.rest.sink import RestSink
    from connectors.rest.source import RestSource
    from connectors.rest.system import RestSystem
    from connectors.rest.transform import RestTransform
    from connectors.storage.download import FilesSource
    from connectors.storage.listing import FileListingSource
    from connectors.storage.objects import AzureSystem, GcsSystem, LocalSystem, S3System
    from connectors.storage.sftp import SftpSystem
    from connectors.storage.sink import FilesSink

    registry.register("source", "dataset", DatasetSource)
    registry.register("source", "embedded", EmbeddedSource)
    registry.register("source", "file", FileSource)
    registry.register("source", "file_listing", FileListingSource)
    registry.register("source", "files", FilesSource)
    registry.register("source", "http_endpoint", HttpEndpointSource)
    registry.register("source", "merge", MergeSource)
    registry.register("source", "rest", RestSource)
    registry.register("transform", "dtl", DtlTransform)
    registry.register("transform", "python", PythonTransform)
    registry.register("transform", "rest", RestTransform)
    registry.register("sink", "dataset", DatasetSink)
    registry.register("sink", "http_endpoint", HttpEndpointSink)
    registry.register("sink", "null", NullSink)
    registry.register("sink", "files", FilesSink)
    registry.register("sink", "rest", RestSink)
    registry.register("system", "system:rest", RestSystem)
    registry.register("system", "system:local", LocalSystem)
    registry.register("system", "system:sftp", SftpSystem)
    registry.register("system", "system:s3", S3System)
    registry.register("system", "system:azure", AzureSystem)
    registry.register("system", "system:gcs", GcsSystem)
