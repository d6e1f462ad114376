"""Users, their authentication and their permissions (docs/security.md).

The deciders (`users`, `authorization`, `limiter`) are pure and unit-tested; `settings`
reads a broker's security file, `authenticator` verifies credentials off the event loop
and caches what it verified, `secrets` reads secrets from files that only their owner
can read. The gRPC and STOMP adapters feed these and carry out their answers.
"""
