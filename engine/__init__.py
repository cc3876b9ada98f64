"""Every use of Faust's and aiokafka's internals, in one place.

The agents and the app factory reach below the libraries' public API in a few places, each
for a measured reason (``docs/platform-notes.md``); a Faust or aiokafka upgrade is checked
here and nowhere else. Supported: faust-streaming 0.15.x with aiokafka 0.13-0.14.

* ``transport``: the aiokafka driver's consumer thread, ``Consumer.perform_seek`` and
  ``_drain_messages``, aiokafka's ``Fetcher`` -- a settable and adaptive fetch wait, a
  short prefetch backoff, a drain loop without four tasks per record that hands a laned
  topic's records to its lane, ``getmany`` tracking end offsets once per call, a seek
  after recovery that cannot lose records.
* ``lane``: replaces the conductor and ``Event`` for a topic one agent reads (flow control
  and back-pressure kept) -- consumer messages straight to the agent.
* ``take``: replaces ``StreamIterator`` (reads the agent's lane, tracks acks with
  ``Consumer.track_message``) -- batches of ready messages without a loop pass per event;
  ``ack_all`` inlines ``Message.ack``/``Consumer.ack`` for a batch under one lock.
* ``publish``: replaces ``Topic.send`` (appends to aiokafka record batches of the app's
  producer) -- one delivery future per batch, not a task and sensors per record.
* ``raw_schema``: ``faust.Schema.loads_key/loads_value`` hand over the bytes as they are.
* ``events``: ``faust.streams._current_event`` -- a table write lands on the partition of
  the event (or message) it belongs to.
* ``gc``: CPython's collector tuned for Faust's start-up heap (no 60-95 ms collections).
"""
