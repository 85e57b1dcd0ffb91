"""The HTTP endpoints, one router per resource. Each takes the server's state through the
`pixquery.server.state.ServerDep` dependency; the ones whose parameters show configured limits
in the OpenAPI schema are built from the ServerConfig (`router(config)`)."""
