"""The web console `netbroker up` serves: the cluster as a live graph, each broker's
queues, topics, group and bridges, a queue's messages, purge.

Pure deciders (`layout`, `snapshot`, `rates`, `view`, `http`) and the adapters that feed
them (`poller`: Admin calls to every broker; `server`: HTTP and Server-Sent Events over
asyncio streams), assembled by `console` on a thread of their own beside `up`'s watch.
"""
