"""Submits one escalation with the real `groundlight` SDK, the way the edge-endpoint's
escalation reader calls it, then reads it back; prints one JSON line.

Usage: python submit.py ENDPOINT DETECTOR_ID IMAGE_FILE IMAGE_QUERY_ID METADATA_JSON
                        PATIENCE_TIME CONFIDENCE_THRESHOLD HUMAN_REVIEW
The token comes from GROUNDLIGHT_API_TOKEN (as the reader's does). An empty PATIENCE_TIME
or CONFIDENCE_THRESHOLD is left out (None), as the reader does when the escalation has none.
Any exception propagates: a non-zero exit with the SDK's traceback is the failure report.
"""

import json
import sys

import groundlight
from groundlight import Groundlight


def optional_float(text):
    return float(text) if text else None


def main():
    endpoint, detector_id, image_file, iq_id, metadata_json, patience, threshold, review = sys.argv[1:9]
    with open(image_file, "rb") as f:
        image = f.read()
    # The constructor probes the endpoint (GET /v1/me; the newest SDK also asks for the
    # token's metadata and checks its format).
    gl = Groundlight(endpoint=endpoint)
    iq = gl.submit_image_query(
        detector=detector_id,
        image=image,
        wait=0,
        patience_time=optional_float(patience),
        confidence_threshold=optional_float(threshold),
        human_review=review or None,
        want_async=True,
        metadata=json.loads(metadata_json) if metadata_json else None,
        image_query_id=iq_id,
        request_timeout=(5, 15),
    )
    again = gl.get_image_query(iq.id)
    print(
        json.dumps(
            {
                "sdk_version": getattr(groundlight, "__version__", None) or _version(),
                "id": iq.id,
                "detector_id": iq.detector_id,
                "patience_time": iq.patience_time,
                "confidence_threshold": iq.confidence_threshold,
                "metadata": iq.metadata,
                "fetched_id": again.id,
            }
        )
    )
    close = getattr(gl, "close", None)
    if close is not None:
        close()


def _version():
    from importlib.metadata import version

    return version("groundlight")


if __name__ == "__main__":
    main()
