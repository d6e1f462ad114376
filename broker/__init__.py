"""netbroker: one broker (core, server), the Python client, cluster operations, the CLI."""

import os

# gRPC's own fork handlers restart its threads in a forked child before it execs, and
# the child then aborts when its descriptors are closed for the exec (epoll_wait: Bad
# file descriptor, SIGABRT): 5 in 60 forks here while a gRPC call was under way.
# `netbroker up` forks every broker with a preexec_fn (parent-death signal) while its
# probes use gRPC, and no process here uses gRPC in a forked child: turn them off
# before grpc is imported, unless the environment says otherwise.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
