"""The reward server's rooms: ``requests`` (the two protocols' bodies, parsed and checked),
``batcher`` (concurrent requests gathered into one scoring call) and ``app`` (the aiohttp
application: handlers, ``/health``, the error middleware). The command that restores a run
and serves it is ``westofn.serve``."""
