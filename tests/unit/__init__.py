"""Tests of one part in-process: pure deciders, and the core over a real store.

No processes, no sockets."""
