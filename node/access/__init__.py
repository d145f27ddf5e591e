"""Who may do what: accounts, roles, grants, public repositories, tokens and the audit log.

The tables live in the replicated state (consensus/); this package reads them,
decides each request (`rules`), proves who is asking (`passwords`, `tokens`,
`gate`) and records what they did (`audit`). It knows nothing of HTTP: the
handlers in node/api/ hand it headers and get back a caller or an error.
"""
