"""Low-level HTTP pieces shared by the Hub and the LLM providers: a lean keep-alive client
(:mod:`toolmesh.net.fasthttp`) and an incremental SSE parser (:mod:`toolmesh.net.sse`)."""
