"""A BrokerError's code as the gRPC status code it is sent with."""

from __future__ import annotations

import grpc


def status_code(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
