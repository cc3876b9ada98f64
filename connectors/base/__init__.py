"""What every venue package shares.

* :mod:`connectors.base.collector` — the collector contract: lifecycle, reconnect loop,
  record routing, :class:`~connectors.base.collector.CollectorConfigError`;
* :mod:`connectors.base.resilience` — backoff, circuit breaker, rate limit, Retry-After;
* :mod:`connectors.base.config` — the one typed reader of collector configuration files
  (errors read ``"{file}: {dotted.key}: {what is wrong}"``), secrets from the environment
  or a secret file, the policy factories;
* :mod:`connectors.base.secrets` — :class:`~connectors.base.secrets.Secret`, URL redaction;
* :mod:`connectors.base.http` — conditional GETs with a size cap, HTTP status handling;
* :mod:`connectors.base.state` — the JSON state file of a polling collector, the once-only
  memory of dead letters;
* :mod:`connectors.base.times` — ISO 8601 / RFC 3339 and epoch times to epoch ms, and
  :class:`~connectors.base.times.FieldError` (the OANDA and WebSocket parsers' bad value);
* :mod:`connectors.base.documents` — :class:`~connectors.base.documents.DocumentError` and
  :class:`~connectors.base.documents.ItemError` of the calendar and news parsers.

Nothing is re-exported here: import from the module (``connectors.base.http`` pulls in
aiohttp, which a venue without HTTP need not load).
"""
