"""Type stubs of the Rust extension ``escalation_queue._native`` (use the package's API)."""

import os

METADATA_SIZE_LIMIT_BYTES: int
ID_LEN_MAX_CHARS: int
DEFAULT_IMAGE_SIZE_MAX_BYTES: int

class NativeError(Exception):
    """args: (kind: str, message: str, retryable: bool)."""

class Queue:
    def __init__(
        self,
        queue_dir: str | os.PathLike[str],
        image_size_max_bytes: int | None = ...,
        queue_bytes_max: int | None = ...,
        free_disk_bytes_min: int | None = ...,
        lanes_max: int | None = ...,
        segment_bytes: int | None = ...,
        allocation_step_bytes: int | None = ...,
    ) -> None: ...
    def enqueue(
        self,
        detector_id: str,
        image: bytes,
        image_query_id: str | None = ...,
        request_id: str | None = ...,
        patience_time: float | None = ...,
        confidence_threshold: float | None = ...,
        human_review: str | None = ...,
        metadata_json: str | None = ...,
        possibly_submitted: bool = ...,
        enqueued_at_unix_ms: int | None = ...,
    ) -> tuple[int, int, str, str, int]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def lane(self) -> int: ...
    @property
    def queue_dir(self) -> str: ...
    @property
    def pid(self) -> int: ...
    def pending(self, limit: int = ...) -> str: ...
    def dead_letters(self, retention_ms: int) -> str: ...

def pending(
    queue_dir: str | os.PathLike[str],
    image_size_max_bytes: int | None = ...,
    segment_bytes: int | None = ...,
    limit: int = ...,
) -> str: ...
def dead_letters(
    queue_dir: str | os.PathLike[str], retention_ms: int, image_size_max_bytes: int | None = ...
) -> str: ...
