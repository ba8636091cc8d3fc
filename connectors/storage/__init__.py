"""Files: file systems (local, SFTP, S3, Azure Blob, GCS), the ``file_listing`` and ``files``
sources (DIL's two-step file download with a per-file ledger) and the ``file`` sinks."""
